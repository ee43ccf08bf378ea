"""The page's callbacks as plain functions over a Session (no gradio): what each control does.

Every callback returns plain values (numpy images, strings, Views) and never raises for what a user can
cause: the last value it returns is the status line, one line ('' when all went well).
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Callable, Sequence

from e4ecli.edits.prompts import DEFAULT_BETA, TEXT_RANGE, TEXT_STRENGTH
from e4ecli.edits.prompts import neutral_for as domain_neutral
from e4ecli.ui.command import CommandError, View, is_text, parse_command, to_command
from e4ecli.ui.session import Opened, Session, UIError, first_line

REFINE_CHOICES = ("none", "w+", "w", "pti")
TextInput = tuple  # the text box's controls: (target prompt, neutral prompt, beta, strength)


def error_line(error: BaseException) -> str:
    """One line for the page: the reason for expected failures, the type and first line for anything else."""
    if isinstance(error, (UIError, CommandError)):
        return f"⚠ {first_line(error)}"
    return f"⚠ {type(error).__name__}: {first_line(error)}"


def initial_view(session: Session) -> View:
    files = {"clip_weights": str(session.clip_weights) if session.clip_weights else None,
             "relevance": str(session.relevance) if session.relevance else None}
    return View(checkpoint=session.checkpoint, align=session.is_face, **files)


def edits_from(session: Session, values: Sequence[float]) -> tuple[tuple[str, float], ...]:
    """Slider values (in the page's order) -> the nonzero edits, composed in that order."""
    return tuple((s.spec, float(v)) for s, v in zip(session.sliders, values) if v is not None and float(v) != 0.0)


def dial(session: Session, stage: float | None, refine: str | None, steps: float | None) -> dict:
    """The inversion dial's controls -> View fields (the full code is the default, written without --stage)."""
    full = session.n_stages - 1
    chosen = None if stage is None or session.n_stages == 0 or int(stage) >= full else int(stage)
    mode = None if refine in (None, "", "none") else refine
    return {"stage": chosen, "refine": mode, "refine_steps": int(steps) if steps is not None else 30}


def neutral_for(session: Session) -> str:
    """The --neutral a text edit uses when the box is empty (the model domain's)."""
    return domain_neutral(session.ckpt.domain.short)


def text_fields(text: TextInput | None) -> dict:
    """The text box's controls -> View fields: the `text:TARGET` edit (composed last) and --neutral / --beta."""
    if text is None:
        return {"edits": (), "neutral": None, "beta": DEFAULT_BETA}
    prompt, neutral, beta, strength = text
    prompt, neutral = (prompt or "").strip(), (neutral or "").strip() or None
    edit = ((f"text:{prompt}", float(strength)),) if prompt and strength not in (None, 0) and float(strength) != 0.0 else ()
    return {"edits": edit, "neutral": neutral, "beta": float(beta) if beta is not None else DEFAULT_BETA}


def text_controls(view: View) -> TextInput:
    """A View's text edit -> the text box's controls (prompt, neutral, beta, strength)."""
    spec, strength = view.text or ("text:", TEXT_STRENGTH)
    return spec.partition(":")[2], view.neutral or "", view.beta, strength


def view_for(session: Session, view: View, values: Sequence[float], paste: bool, feather: float, text: TextInput | None = None) -> View:
    fields = text_fields(text)
    edits = edits_from(session, values) + fields.pop("edits")
    return replace(view, edits=edits, paste_back=bool(paste), feather=float(feather), **fields)


def render_options(view: View) -> dict:
    return {"neutral": view.neutral, "beta": view.beta}


def open_input(session: Session, path: str | None, view: View, stage, refine, steps, values: Sequence[float], paste: bool,
               feather: float, *, uploaded: bool = True, source: str | None = None, on_step: Callable[[int, float], None] | None = None,
               text: TextInput | None = None):
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
        view = view_for(session, replace(opened.view, checkpoint=session.checkpoint), values, paste, feather, text)
        if view.paste_back and opened.sidecar is None:
            view = replace(view, paste_back=False)
        preview = session.preview(opened, view.edits, paste_back=view.paste_back, feather=view.feather, **render_options(view))
    except Exception as e:  # noqa: BLE001 -- one line on the page, never a traceback
        return (*empty, session.hide_folder(error_line(e)))
    note = "" if opened.sidecar is not None or not paste else "paste-back is off: this input has no alignment sidecar"
    return opened, view, opened.crop, opened.reconstruction, opened.distortion, preview, to_command(view), note


def update(session: Session, opened: Opened | None, view: View, values: Sequence[float], paste: bool, feather: float, full: bool = False,
           text: TextInput | None = None):
    """A slider, the text box, paste-back or feather changed: -> (view, preview, command, status)."""
    view = replace(view_for(session, view, values, paste, feather, text), sweep=None)
    if opened is None:
        return view, None, to_command(view), "open a photo or a latent first" if view.edits else ""
    try:
        image = session.preview(opened, view.edits, full=full, paste_back=view.paste_back, feather=view.feather, **render_options(view))
    except Exception as e:  # noqa: BLE001
        return view, None, to_command(view), error_line(e)
    return view, image, to_command(view), ""


def load_settings(session: Session, text: str, opened: Opened | None, view: View, on_step=None):
    """Pasted `e4e ...` lines -> the page's controls and a new view (re-inverting a photo when the dial changed).
    -> (opened, view, slider values, stage, refine, steps, paste, feather, text controls (prompt, neutral, beta, strength),
        crop, reconstruction, distortion, preview, command, status)."""
    values = [dict(view.edits).get(s.spec, 0.0) for s in session.sliders]

    def controls(v: View, o: Opened | None, preview, status: str):
        stage = v.stage if v.stage is not None else max(session.n_stages - 1, 0)
        vals = [dict(v.edits).get(s.spec, 0.0) for s in session.sliders]
        crop, recon, dist = (o.crop, o.reconstruction, o.distortion) if o is not None else (None, None, "")
        return (o, v, vals, stage, v.refine or "none", v.refine_steps, v.paste_back, v.feather, text_controls(v), crop, recon, dist,
                preview, to_command(v), status)

    try:
        new = parse_command(text, view)
        for spec, value in new.edits:
            if is_text(spec):
                if not session.has_text:
                    raise UIError(session.text_note)
                low, high = TEXT_RANGE
            else:
                low, high = session.slider(spec).low, session.slider(spec).high
            if not low <= value <= high:
                raise UIError(f"-d {spec} -s {value:g}: outside the page's range {low:g} to {high:g}")
        order = [s.spec for s in session.sliders]
        # the page's files for text directions stay (as its checkpoint does); a text edit composes last
        new = replace(new, edits=tuple(sorted(new.edits, key=lambda e: len(order) if is_text(e[0]) else order.index(e[0]))),
                      checkpoint=view.checkpoint, clip_weights=view.clip_weights, relevance=view.relevance)
        if new.sweep is not None:
            session.slider(new.sweep[0])
        dial_changed = (new.stage, new.refine, new.refine_steps if new.refine else None) != \
                       (view.stage, view.refine, view.refine_steps if view.refine else None)
        if opened is not None and opened.photo is not None and dial_changed:
            opened = session.open_photo(opened.photo, replace(new, source=opened.view.source), on_step=on_step)
        if new.text is not None:
            session.text_edit(new.text[0], new.neutral, new.beta)  # a bad prompt or beta: one line, the view kept
        preview = session.preview(opened, new.edits, paste_back=new.paste_back and opened.sidecar is not None,
                                  feather=new.feather, **render_options(new)) if opened is not None else None
        if opened is not None:
            new = replace(new, source=opened.view.source, photo=opened.view.photo, align=opened.view.align)
    except Exception as e:  # noqa: BLE001
        return (opened, view, values, view.stage if view.stage is not None else max(session.n_stages - 1, 0), view.refine or "none",
                view.refine_steps, view.paste_back, view.feather, text_controls(view), *((opened.crop, opened.reconstruction, opened.distortion) if opened else
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
                                  sweep=sweep, **render_options(view))
    except Exception as e:  # noqa: BLE001
        return None, view, to_command(view), error_line(e)
    view = replace(view, sweep=sweep)
    return [str(f) for f in files], view, to_command(view), ""
