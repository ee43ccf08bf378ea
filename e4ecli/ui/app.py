"""The Gradio page over a Session: layout and wiring only (what each control does is in ui.callbacks).

Gradio is imported when `build` / `serve` run, after `configure_gradio` has pointed its temporary folder into
the session's folder and turned its analytics off: the page needs no network (no fonts, no CDN, no hub).
"""
from __future__ import annotations

import os
from pathlib import Path

from e4ecli.ui import callbacks as cb
from e4ecli.ui.command import to_command
from e4ecli.ui.session import MAX_UPLOAD_BYTES, MAX_UPLOAD_PIXELS, Session

MODEL_QUEUE = "model"  # every event that runs the model waits in this one queue, one at a time

CSS = """
#status { min-height: 1.5em; color: #b42318; }
#command textarea { font-family: ui-monospace, monospace; font-size: 13px; }
"""


def configure_gradio(temp_dir: Path) -> None:
    """Before gradio is imported: uploads and cached outputs go to `temp_dir`; no analytics, no update checks."""
    os.environ["GRADIO_TEMP_DIR"] = str(temp_dir)
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    os.environ.setdefault("GRADIO_SSR_MODE", "False")
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"


def theme():
    """The default theme with the system's fonts (the stock theme fetches Google Fonts)."""
    import gradio as gr

    return gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"])


def build(session: Session):
    """The page (a gr.Blocks) for `session`."""
    import gradio as gr

    ckpt = session.ckpt
    first = cb.initial_view(session)
    skip = gr.skip()

    def out(values):
        return tuple(skip if v is cb.Keep else v for v in values)

    with gr.Blocks(title="e4e ui", analytics_enabled=False) as demo:
        opened = gr.State(None, time_to_live=3 * 3600)  # a closed tab's code and tuned generator are freed
        view = gr.State(first)
        gr.Markdown(f"### e4e ui — {Path(str(ckpt.path)).name} ({ckpt.domain.short}, {ckpt.generator.size} px)\n"
                    "Open a photo or a latent, move the sliders (the preview updates when a slider is released), "
                    "then copy the command below to run the same edit on a folder.")
        with gr.Row():
            with gr.Column(scale=1, min_width=260):
                kinds = "a photo (aligned automatically) or a latent (.npy)" if session.can_invert else "a latent (.npy)"
                upload = gr.File(label=f"Drop {kinds}", type="filepath", elem_id="upload",
                                 file_types=[".npy"] + ([".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"] if session.can_invert else []))
                listed = session.listed_files()
                pick = gr.Dropdown(listed, value=None, label="…or pick one from the folders given", visible=bool(listed), elem_id="pick")
                with gr.Accordion("Inversion dial (photos)", open=False, visible=session.can_invert):
                    full = max(session.n_stages - 1, 0)
                    stage = gr.Slider(0, full, value=full, step=1, label="--stage: 0 = pure W (edits best) … full code (most faithful)",
                                      visible=session.n_stages > 0, elem_id="stage")
                    refine = gr.Dropdown(list(cb.REFINE_CHOICES), value="none", label="--refine", elem_id="refine")
                    steps = gr.Number(30, precision=0, minimum=0, maximum=1000, label="--refine-steps", elem_id="refine-steps")
                    again = gr.Button("Invert again with this dial")
                status = gr.Markdown("", elem_id="status")
            with gr.Column(scale=1, min_width=220):
                crop = gr.Image(label="Input (aligned crop)", height=256, type="numpy", format="png", interactive=False, elem_id="crop")
                recon = gr.Image(label="Reconstruction", height=256, type="numpy", format="png", interactive=False, elem_id="recon")
                dist = gr.Markdown("", elem_id="distortion")
            with gr.Column(scale=1, min_width=220):
                preview = gr.Image(label="Edited (preview)", height=256, type="numpy", format="png", interactive=False, elem_id="preview")
                with gr.Row():
                    paste = gr.Checkbox(False, label="paste back into the photo", elem_id="paste")
                    feather = gr.Slider(0.0, 0.5, value=0.1, step=0.01, label="feather")
                full_size = gr.Button("Render full size")
        command = gr.Textbox(to_command(first), label="Batch command (reproduces this view; run it on a folder)", lines=3,
                             buttons=["copy"], interactive=False, elem_id="command")
        with gr.Row():
            pasted = gr.Textbox("", label="Load settings: paste an `e4e edit …` command", lines=2, scale=3, elem_id="settings")
            load = gr.Button("Load settings", scale=1)
        with gr.Accordion("Directions", open=True):
            sliders = []
            with gr.Row():
                for i, s in enumerate(session.sliders):
                    sliders.append(gr.Slider(s.low, s.high, value=0.0, step=s.step, label=s.label, elem_id=f"dir-{i}", min_width=240))
            textctl = []
            if session.has_text:
                with gr.Row():
                    prompt = gr.Textbox("", label="Text direction (StyleCLIP): the target, e.g. a face with a smile (Enter applies)",
                                        max_lines=1, scale=3, elem_id="text-prompt")
                    neutral = gr.Textbox("", label=f"--neutral (empty: the domain's, e.g. '{cb.neutral_for(session)}')", max_lines=1,
                                         scale=2, elem_id="text-neutral")
                    beta = gr.Number(cb.DEFAULT_BETA, minimum=0.0, maximum=0.99, step=0.01, label="--beta", scale=1, elem_id="text-beta")
                    tstrength = gr.Slider(cb.TEXT_RANGE[0], cb.TEXT_RANGE[1], value=cb.TEXT_STRENGTH, step=0.1, label="text strength",
                                          scale=2, elem_id="text-strength")
                textctl = [prompt, neutral, beta, tstrength]
            else:
                gr.Markdown(session.text_note, elem_id="text-note")
            notes = list(session.unavailable) + ["StyleFlow attributes: not on the page yet (they need each latent's attributes and "
                                                 "the flow's weights; `e4e edit -d styleflow:NAME -s VALUE` has them)"]
            gr.Markdown("Not offered here: " + "; ".join(notes), elem_id="unavailable")
        with gr.Row():
            sweep = gr.Dropdown([""] + [s.spec for s in session.sliders], value="", label="Sweep GIF of (0 → its strength)", scale=1)
            make = gr.Button("Make downloads (PNG, latent, GIF)", scale=1)
            files = gr.File(label="Downloads", file_count="multiple", interactive=False, scale=2, height=120, elem_id="downloads")
        gr.Markdown(f"Uploads: at most {MAX_UPLOAD_BYTES // (1024 * 1024)} MB and {MAX_UPLOAD_PIXELS // 1_000_000} megapixels each; "
                    "kept in a temporary folder that is removed when `e4e ui` stops.")

        controls = [stage, refine, steps, *sliders, paste, feather, *textctl]
        n = len(sliders)

        def text_of(rest):  # the text box's controls after the sliders, paste-back and feather (None: no text box)
            return tuple(rest[n + 2:n + 6]) if textctl else None

        def opening(path, v, st, rf, sp, *rest, uploaded=True, progress=gr.Progress()):
            values, pb, fe = rest[:n], rest[n], rest[n + 1]
            total = max(int(sp or 0), 1)
            result = cb.open_input(session, path, v, st, rf, sp, values, pb, fe, uploaded=uploaded, text=text_of(rest),
                                   on_step=lambda step, loss: progress((step + 1) / total, desc="refining"))
            return result

        outputs = [opened, view, crop, recon, dist, preview, command, status]
        upload.upload(opening, [upload, view, *controls], outputs, concurrency_id=MODEL_QUEUE)
        pick.input(lambda p, v, *rest: opening(p, v, *rest, uploaded=False), [pick, view, *controls], outputs, concurrency_id=MODEL_QUEUE)

        def reopen(o, v, *args, progress=gr.Progress()):
            if o is None or o.photo is None:
                return (o, v, skip, skip, skip, skip, to_command(v), "open a photo first")
            st, rf, sp, rest = args[0], args[1], args[2], args[3:]
            total = max(int(sp or 0), 1)
            return cb.open_input(session, str(o.photo), v, st, rf, sp, rest[:n], rest[n], rest[n + 1], uploaded=False,
                                 source=o.view.source, text=text_of(rest), on_step=lambda step, loss: progress((step + 1) / total, desc="refining"))

        again.click(reopen, [opened, view, *controls], outputs, concurrency_id=MODEL_QUEUE)

        def changed(o, v, *rest, full=False):
            return cb.update(session, o, v, rest[:n], rest[n], rest[n + 1], full=full, text=text_of(rest))

        live = [view, preview, command, status]
        edit_inputs = [opened, view, *sliders, paste, feather, *textctl]
        for s in sliders:
            s.release(changed, edit_inputs, live, concurrency_id=MODEL_QUEUE)
        paste.input(changed, edit_inputs, live, concurrency_id=MODEL_QUEUE)
        feather.release(changed, edit_inputs, live, concurrency_id=MODEL_QUEUE)
        if textctl:
            prompt, neutral, beta, tstrength = textctl
            for box in (prompt, neutral, beta):
                box.submit(changed, edit_inputs, live, concurrency_id=MODEL_QUEUE)
            tstrength.release(changed, edit_inputs, live, concurrency_id=MODEL_QUEUE)
        full_size.click(lambda o, v, *rest: changed(o, v, *rest, full=True), edit_inputs, live, concurrency_id=MODEL_QUEUE)

        def loading(text, o, v, progress=gr.Progress()):
            r = cb.load_settings(session, text, o, v, on_step=lambda step, loss: progress(None, desc=f"refining: step {step + 1}"))
            o, v, values, st, rf, sp, pb, fe, tx, c, rc, d, pv, cmd, msg = r
            return out((o, v, st, rf, sp, *values, pb, fe, *(tx if textctl else ()), c, rc, d, pv, cmd, msg))

        load.click(loading, [pasted, opened, view], [opened, view, stage, refine, steps, *sliders, paste, feather, *textctl, crop, recon, dist,
                                                     preview, command, status], concurrency_id=MODEL_QUEUE)

        def downloading(o, v, spec):
            return cb.make_downloads(session, o, v, spec or None)

        make.click(downloading, [opened, view, sweep], [files, view, command, status], concurrency_id=MODEL_QUEUE)
    return demo


def serve(session: Session, host: str, port: int, *, block: bool = True, quiet: bool = True):
    """Build the page and serve it (one model call at a time); returns the Blocks (already launched)."""
    demo = build(session)
    demo.queue(default_concurrency_limit=1, max_size=32)
    demo.launch(server_name=host, server_port=port, prevent_thread_lock=True, quiet=quiet, show_error=False, inbrowser=False,
                max_file_size=MAX_UPLOAD_BYTES, allowed_paths=[str(session.workdir)], theme=theme(), css=CSS, ssr_mode=False,
                footer_links=[])
    if block:
        try:
            demo.block_thread()
        finally:
            demo.close()
    return demo
