"""`e4e ui`: a local web page (Gradio) to choose edits by looking; it writes the batch command."""
from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import List, Optional

import typer

from e4ecli.cli.align import DETECTOR_HELP, Detector
from e4ecli.cli.app import app
from e4ecli.cli.batch import checkpoint_option, device_option
from e4ecli.cli.common import DEFAULT_CHECKPOINT, console, die, escape, landmark_note


def is_local(host: str) -> bool:
    """Whether `host` only listens on this machine (loopback address or 'localhost')."""
    if host.lower() in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_options(inputs: List[Path], host: str, port: int, allow_remote: bool, clip_weights: Path | None = None,
                  relevance: Path | None = None) -> list[str]:
    """Everything checked before torch or gradio load: -> problems (empty when fine)."""
    import importlib.util

    problems = []
    for path in inputs:
        if not path.exists():
            problems.append(f"{path}: no such file or folder")
    if relevance is not None and not relevance.is_file():
        problems.append(f"--relevance {relevance}: no such file (`e4e directions styleclip -o {relevance}` computes it)")
    if clip_weights is not None and not clip_weights.is_file():
        problems.append(f"--clip-weights {clip_weights}: no such file (OpenAI's ViT-B-32.pt, or leave it out to use the zoo's once downloaded)")
    if not 0 <= port <= 65535:
        problems.append(f"--port {port}: use 1-65535 (or 0 for any free port)")
    if not is_local(host) and not allow_remote:
        problems.append(f"--host {host} would let other machines use this page (and your model and files); "
                        "add --allow-remote if you mean it, or keep the default 127.0.0.1")
    if importlib.util.find_spec("gradio") is None:
        problems.append("the web page needs gradio: pip install 'e4ecli[ui]'")
    return problems


@app.command(
    "ui",
    epilog=(
        "Examples:\n\n"
        "  e4e ui                                   # http://127.0.0.1:7860, the default FFHQ checkpoint\n\n"
        "  e4e ui --checkpoint e4e_ffhq_encode latents/   # also pick latents (and photos) from latents/\n\n"
        "  e4e ui --port 0 --detector dlib          # any free port; dlib alignment (offline)\n\n"
        "  e4e ui --host 0.0.0.0 --allow-remote     # reachable from other machines (a warning is printed)\n\n"
        "  e4e ui latents/ --relevance ffhq_fs3.npz --clip-weights ViT-B-32.pt   # with a text box for StyleCLIP text edits\n\n"
        "The page shows the `e4e invert` / `e4e edit` / `e4e video` lines that reproduce what is on screen: copy them and "
        "run them on a folder."
    ),
)
def ui_cmd(
    inputs: List[Path] = typer.Argument(None, help="Latent .npy files, photos and/or folders to pick from on the page.", show_default=False),
    checkpoint: str = checkpoint_option("e4e/pSp checkpoint (or a bare generator: latents only): zoo name or file path."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on (default: this machine only)."),
    port: int = typer.Option(7860, "--port", help="Port to listen on (0: any free port)."),
    allow_remote: bool = typer.Option(False, "--allow-remote", help="Allow a --host other machines can reach (anyone there can use the page)."),
    device: str = device_option(),
    detector: Detector = typer.Option(Detector.face_alignment, "--detector", "-L", help="Photos: " + DETECTOR_HELP),
    preview_size: int = typer.Option(256, "--preview-size", min=32, max=1024, help="Width of the fast preview (full size on request)."),
    clip_weights: Optional[Path] = typer.Option(None, "--clip-weights", help="Text directions: CLIP ViT-B/32 weights file (OpenAI's "
                                                "ViT-B-32.pt or an open_clip state dict; default: the zoo's clip_vit_b32_openai when downloaded)."),
    relevance: Optional[Path] = typer.Option(None, "--relevance", help="Text directions: the generator's channel relevance matrix (.npz "
                                             "from `e4e directions styleclip`); with it the page shows a text box for StyleCLIP edits."),
) -> None:
    """Serve a local web page to invert a photo, move edit sliders, and copy the batch command that does the same."""
    inputs = list(inputs or [])
    problems = check_options(inputs, host, port, allow_remote, clip_weights, relevance)
    from e4ecli.cli.batch import checkpoint_problem
    from e4ecli.cli.common import device_problem

    problems += [p for p in (device_problem(device), checkpoint_problem(checkpoint)) if p]  # still before torch loads
    if problems:
        for line in problems[:-1]:
            console.print(f"[red]✗[/] {escape(line)}")
        die(problems[-1])
    if not is_local(host):
        console.print(f"[yellow]warning:[/] listening on {escape(host)}: anyone who can reach this machine can use the page and the model")

    import shutil
    import signal
    import socket
    import tempfile

    from e4ecli.cli.common import device_or_die, load_model

    if port == 0:
        with socket.socket() as s:
            s.bind((host if is_local(host) else "", 0))
            port = s.getsockname()[1]
    dev = device_or_die(device)
    ckpt, ident = load_model(checkpoint)
    workdir = Path(tempfile.mkdtemp(prefix="e4e-ui-"))

    def stop(signum, frame):  # `kill` (SIGTERM) and a closed terminal (SIGHUP) stop the page like Ctrl+C: the folder goes too
        raise KeyboardInterrupt

    for sig in (signal.SIGTERM, getattr(signal, "SIGHUP", None)):
        if sig is not None:
            signal.signal(sig, stop)
    try:
        from e4ecli.ui.app import configure_gradio

        configure_gradio(workdir / "gradio")
        from e4ecli.ui.app import serve
        from e4ecli.ui.session import Session

        with console.status("preparing the directions"):
            session = Session(ckpt, ident, None if checkpoint == DEFAULT_CHECKPOINT else checkpoint, dev, workdir / "session", inputs=inputs,
                              detector=detector.value, notify=landmark_note,
                              clip_weights=clip_weights, relevance=relevance)
        for note in session.unavailable + ([session.text_note] if session.text_note else []):
            console.print(f"[yellow]note:[/] not offered: {escape(note)}")
        console.print(f"e4e ui: http://{host}:{port}  (Ctrl+C stops it and removes its temporary folder {escape(str(workdir))})",
                      highlight=False, soft_wrap=True)
        try:
            serve(session, host, port)
        except OSError as e:
            die(f"cannot listen on {host}:{port} ({e}); choose another --port (0: any free one)")
        except KeyboardInterrupt:
            pass
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
