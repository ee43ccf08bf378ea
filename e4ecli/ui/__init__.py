"""`e4e ui`: a local web page to choose edits by looking, which writes the batch command.

  command.py   what is on screen <-> the `e4e invert` / `e4e edit` / `e4e video` command lines (pure Python)
  session.py   the loaded model, uploads, inversion and rendering (torch, no gradio)
  callbacks.py what each control of the page does, as plain functions over a Session (no gradio)
  app.py       the Gradio page built over a Session (imports gradio when called)
"""
