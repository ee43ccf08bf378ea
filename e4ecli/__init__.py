"""e4ecli: batch StyleGAN2 inversion and editing with e4e (Tov et al., SIGGRAPH 2021).

Layout (data flows one way, CLI -> pipelines -> models):
  cli/        the Typer app: parse options, show progress, print summaries, exit codes
  runs/       batch runs below the CLI: inputs, shards, lock, skip by fingerprint, manifest; yields events
  pipelines/  plain functions over iterables of items (invert, render, ...)
  models/     pure nn.Modules, no I/O (StyleGAN2, e4e/pSp encoders)
  hub/        checkpoints in and out (safely), the weights zoo
  files/      image decoding, output naming, atomic writes, manifests
  ui/         the `e4e ui` web page: its state and callbacks over the pipelines, the Gradio layout
"""

__version__ = "0.1.0"
