"""The page's callbacks as plain functions over a Session (no gradio): what each control does.

Every callback returns plain values (numpy images, strings, Views) and never raises for what a user can
cause: the last value it returns is the status line, one line ('' when all went well).
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Callable, Sequence

from e4ecli.ui.command import CommandError, View, parse_command, to_command
from e4ecli.ui.session import Opened, Session, UIError, first_line

REFINE_CHOICES = ("none", "w+", "w", "pti")


def error_line(error: BaseException) -> str:
    """One line for the page: the reason for expected failures, the type and first line for anything else."""
    if isinstance(error, (UIError, CommandError)):
        return f"⚠ {first_line(error)}"
    return f"⚠ {type(error).__name__}: {first_line(error)}"


def initial_view(session: Session) -> View:
    return View(checkpoint=session.checkpoint, align=session.is_face)


def edits_from(session: Session, values: Sequence[float]) -> tuple[tuple[str, float], ...]:
    """Slider values (in the page's order) -> the nonzero edits, composed in that order."""
    return tuple((s.spec, float(v)) for s, v in zip(session.sliders, values) if v is not None and float(v) != 0.0)


def dial(session: Session, stage: float | None, refine: str | None, steps: float | None) -> dict:
    """The inversion dial's controls -> View fields (the full code is the default, written without --stage)."""
    full = session.n_stages - 1
    chosen = None if stage is None or session.n_stages == 0 or int(stage) >= full else int(stage)
    mode = None if refine in (None, "", "none") else refine
    return {"stage": chosen, "refine": mode, "refine_steps": int(steps) if steps is not None else 30}


def view_for(session: Session, view: View, values: Sequence[float], paste: bool, feather: float) -> View:
    return replace(view, edits=edits_from(session, values), paste_back=bool(paste), feather=float(feather))


def open_input(session: Session, path: str | None, view: View, stage, refine, steps, values: Sequence[float], paste: bool,
               feather: float, *, uploaded: bool = True, source: str | None = None, on_step: Callable[[int, float], None] | None = None):
    """Open an uploaded file (copied into the session folder first) or a listed one; invert photos with the dial.
    `source`: how the batch command names the input (default: the upload's name, or the listed path).
    -> (opened, view, crop, reconstruction, distortion, preview, command, status)."""
    empty = (None, view, None, None, "", None, to_command(view))
    if not path:
        return (*empty, "")
    try:
        name = Path(path).name
        local = session.accept_upload(path, name) if uploaded else Path(path)
        source = source or (name if uploaded else str(path))
        base = replace(view, source=source, sweep=None, **dial(session, stage, refine, steps))
        opened = session.open(local, base, on_step=on_step)
        view = view_for(session, replace(opened.view, checkpoint=session.checkpoint), values, paste, feather)
        if view.paste_back and opened.sidecar is None:
            view = replace(view, paste_back=False)
        preview = session.preview(opened, view.edits, paste_back=view.paste_back, feather=view.feather)
    except Exception as e:  # noqa: BLE001 -- one line on the page, never a traceback
        return (*empty, session.hide_folder(error_line(e)))
    note = "" if opened.sidecar is not None or not paste else "paste-back is off: this input has no alignment sidecar"
    return opened, view, opened.crop, opened.reconstruction, opened.distortion, preview, to_command(view), note


def update(session: Session, opened: Opened | None, view: View, values: Sequence[float], paste: bool, feather: float, full: bool = False):
    """A slider, paste-back or feather changed: -> (view, preview, command, status)."""
    view = replace(view_for(session, view, values, paste, feather), sweep=None)
    if opened is None:
        return view, None, to_command(view), "open a photo or a latent first" if view.edits else ""
    try:
        image = session.preview(opened, view.edits, full=full, paste_back=view.paste_back, feather=view.feather)
    except Exception as e:  # noqa: BLE001
        return view, None, to_command(view), error_line(e)
    return view, image, to_command(view), ""


def load_settings(session: Session, text: str, opened: Opened | None, view: View, on_step=None):
    """Pasted `e4e ...` lines -> the page's controls and a new view (re-inverting a photo when the dial changed).
    -> (opened, view, slider values, stage, refine, steps, paste, feather, crop, reconstruction, distortion, preview, command, status)."""
    values = [dict(view.edits).get(s.spec, 0.0) for s in session.sliders]

    def controls(v: View, o: Opened | None, preview, status: str):
        stage = v.stage if v.stage is not None else max(session.n_stages - 1, 0)
        vals = [dict(v.edits).get(s.spec, 0.0) for s in session.sliders]
        crop, recon, dist = (o.crop, o.reconstruction, o.distortion) if o is not None else (None, None, "")
        return (o, v, vals, stage, v.refine or "none", v.refine_steps, v.paste_back, v.feather, crop, recon, dist, preview,
                to_command(v), status)

    try:
        new = parse_command(text, view)
        for spec, value in new.edits:
            slider = session.slider(spec)
            if not slider.low <= value <= slider.high:
                raise UIError(f"-d {spec} -s {value:g}: outside the page's range {slider.low:g} to {slider.high:g}")
        order = [s.spec for s in session.sliders]
        new = replace(new, edits=tuple(sorted(new.edits, key=lambda e: order.index(e[0]))), checkpoint=view.checkpoint)
        if new.sweep is not None:
            session.slider(new.sweep[0])
        dial_changed = (new.stage, new.refine, new.refine_steps if new.refine else None) != \
                       (view.stage, view.refine, view.refine_steps if view.refine else None)
        if opened is not None and opened.photo is not None and dial_changed:
            opened = session.open_photo(opened.photo, replace(new, source=opened.view.source), on_step=on_step)
        preview = session.preview(opened, new.edits, paste_back=new.paste_back and opened.sidecar is not None,
                                  feather=new.feather) if opened is not None else None
        if opened is not None:
            new = replace(new, source=opened.view.source, photo=opened.view.photo, align=opened.view.align)
    except Exception as e:  # noqa: BLE001
        return (opened, view, values, view.stage if view.stage is not None else max(session.n_stages - 1, 0), view.refine or "none",
                view.refine_steps, view.paste_back, view.feather, *((opened.crop, opened.reconstruction, opened.distortion) if opened else
                                                                  (None, None, "")), Keep, to_command(view), error_line(e))
    return controls(new, opened, preview, "")


class Keep:
    """An output to leave as it is (the app maps it to gradio's skip)."""


def make_downloads(session: Session, opened: Opened | None, view: View, sweep_spec: str | None):
    """-> (files, view (with the sweep), command, status): the full-size PNG, the latent, the pasted photo and a sweep GIF."""
    if opened is None:
        return None, view, to_command(view), "open a photo or a latent first"
    sweep = None
    try:
        if sweep_spec:
            strength = dict(view.edits).get(sweep_spec) or session.slider(sweep_spec).high
            sweep = (sweep_spec, 0.0, float(strength), 16)
        files = session.downloads(opened, view.edits, paste_back=view.paste_back and opened.sidecar is not None, feather=view.feather,
                                  sweep=sweep)
    except Exception as e:  # noqa: BLE001
        return None, view, to_command(view), error_line(e)
    view = replace(view, sweep=sweep)
    return [str(f) for f in files], view, to_command(view), ""
