"""What the page shows <-> the batch command lines that reproduce it (no torch, no gradio).

A View holds every setting that changes the picture: the input, the inversion dial (--stage, --refine),
the edits in order (a `text:` direction last: its style offsets add after every W+ edit, as in `e4e edit`)
with the text options (--neutral, --beta, --clip-weights, --relevance) and paste-back. `to_command` writes the `e4e invert` (photos) and `e4e edit` lines,
and the `e4e video` line of a sweep GIF; `parse_command` reads such text back into a View, so pasting a
command into "load settings" reproduces the view.
"""
from __future__ import annotations

import shlex
from dataclasses import dataclass, replace

from e4ecli.edits.prompts import DEFAULT_BETA
from e4ecli.edits.specs import parse_range
from e4ecli.edits.syntax import Text, direction_kind
from e4ecli.hub.directions import DirectionError

DEFAULT_FEATHER = 0.1
LATENTS_DIR = "latents/"
EDITED_DIR = "edited/"


# the flags of `e4e edit` the page's settings are written as; also how the page words errors naming them (e4ecli.errors)
FLAGS = {"neutral": "--neutral", "beta": "--beta", "clip_weights": "--clip-weights", "relevance": "--relevance", "pca": "--pca",
         "force": "--force", "direction": "--direction", "strength": "--strength", "attribute": "--attribute"}


class CommandError(ValueError):
    """Text that is not an e4e command this page can reproduce; str() is one line saying why."""


@dataclass(frozen=True)
class View:
    """The settings behind the picture. `edits`: (direction spec, strength) in the order they compose;
    `source`: the photo or latent as the batch command names it; `photo`: whether it is inverted first."""

    source: str = "photo.jpg"
    photo: bool = True
    checkpoint: str | None = None
    stage: int | None = None
    refine: str | None = None  # w+ | w | pti
    refine_steps: int = 30
    align: bool = True
    detector: str | None = None
    edits: tuple[tuple[str, float], ...] = ()
    paste_back: bool = False
    feather: float = DEFAULT_FEATHER
    sweep: tuple[str, float, float, int] | None = None  # (direction, from, to, frames) of the GIF shown
    neutral: str | None = None  # text directions: --neutral (None: the domain's)
    beta: float = DEFAULT_BETA  # text directions: --beta
    clip_weights: str | None = None  # text directions: --clip-weights (None: the zoo's)
    relevance: str | None = None  # text directions: --relevance

    @property
    def text(self) -> tuple[str, float] | None:
        """The text direction on screen: (its `text:TARGET` spec, strength), or None."""
        return next(((s, v) for s, v in self.edits if is_text(s)), None)


def is_text(spec: str) -> bool:
    """A `text:TARGET` direction, as the direction parser tells the kinds apart (edits.syntax)."""
    return direction_kind(spec) == Text.kind


def text_words(view: View) -> list:
    """The options a text direction needs, as `e4e edit` takes them."""
    words = [] if view.neutral is None else [FLAGS["neutral"], view.neutral]
    words += [FLAGS["beta"], number(view.beta)]
    words += [] if view.clip_weights is None else [FLAGS["clip_weights"], view.clip_weights]
    return words + ([] if view.relevance is None else [FLAGS["relevance"], view.relevance])


def number(value: float) -> str:
    """Shortest text that reads back to the same float ('2', '-0.5', '0.30000000000000004')."""
    text = repr(float(value))
    return text[:-2] if text.endswith(".0") else text


def stem(source: str) -> str:
    name = source.replace("\\", "/").rstrip("/").rsplit("/", 1)[-1]
    return name.rsplit(".", 1)[0] if "." in name[1:] else name


def latent_path(view: View) -> str:
    return f"{LATENTS_DIR}{stem(view.source)}.npy" if view.photo else _argument(view.source)


def _join(words) -> str:
    return " ".join(shlex.quote(str(w)) for w in words)


def _argument(path: str) -> str:
    """A path as a positional argument: one starting with '-' would read as an option."""
    return f"./{path}" if path.startswith("-") else path


def _checkpoint_words(checkpoint: str | None) -> list[str]:
    return ["--checkpoint", checkpoint] if checkpoint else []


def to_command(view: View) -> str:
    """The command lines (one per line) that reproduce `view` on the command line."""
    lines = []
    checkpoint = view.checkpoint
    if view.photo:
        words = ["e4e", "invert", _argument(view.source), "-o", LATENTS_DIR] + _checkpoint_words(view.checkpoint)
        if view.align:
            words += ["--align"] + (["--detector", view.detector] if view.detector else [])
        if view.stage is not None:
            words += ["--stage", view.stage]
        if view.refine:
            words += ["--refine", view.refine, "--refine-steps", view.refine_steps]
            if view.refine == "pti":  # the edits render with the generator tuned for this photo
                checkpoint = f"{LATENTS_DIR}{stem(view.source)}.pti.safetensors"
        lines.append(_join(words))
    words = ["e4e", "edit", latent_path(view), "-o", EDITED_DIR] + _checkpoint_words(checkpoint)
    for spec, value in view.edits:
        words += ["-d", spec, "-s", number(value)]
    if not view.edits:  # `e4e edit` needs a direction: a zero-strength edit renders the reconstruction
        words += ["-d", "sefa:0", "-s", "0"]
    if view.text is not None:
        words += text_words(view)
    if view.paste_back:
        words += ["--paste-back"] + ([] if view.feather == DEFAULT_FEATHER else ["--feather", number(view.feather)])
        if view.photo:
            words += ["--aligned", LATENTS_DIR]
    lines.append(_join(words))
    if view.sweep is not None:
        spec, low, high, frames = view.sweep
        words = ["e4e", "video", latent_path(view), "-o", f"{stem(view.source)}_sweep.gif"] + _checkpoint_words(checkpoint)
        lines.append(_join(words + ["-d", spec, "-s", f"{number(low)}:{number(high)}", "-n", frames]))
    return "\n".join(lines)


# -- reading a command back ------------------------------------------------------------------------
_FLAGS = {"--align", "--paste-back", "--save-reconstructions", "--save-aligned", "--save-latents", "--force", "--overwrite",
          "--bounce", "--no-bounce", "--loop", "--no-overwrite", "--latents-only"}


def _segments(line: str) -> list[str]:
    """A shell line split at its unquoted `&&`, `||` and `;` (quoted ones belong to words)."""
    out, current, quote, i = [], [], None, 0
    while i < len(line):
        c = line[i]
        if c == "\\" and quote != "'" and i + 1 < len(line):  # an escaped character (outside single quotes)
            current.append(line[i:i + 2])
            i += 2
            continue
        if quote is None and c in "'\"":
            quote = c
        elif c == quote:
            quote = None
        elif quote is None and (c == ";" or line.startswith(("&&", "||"), i)):
            out.append("".join(current))
            current = []
            i += 1 if c == ";" else 2
            continue
        current.append(c)
        i += 1
    out.append("".join(current))
    return out


def _commands(text: str) -> list[list[str]]:
    """Split pasted text into e4e commands: one per line (backslash continuations joined), or separated by
    `&&` / `;`; a leading shell prompt `$ ` and comments are ignored. Each command: its words after `e4e`."""
    commands = []
    for line in text.replace("\\\n", " ").splitlines():
        for segment in _segments(line):
            try:
                words = shlex.split(segment, comments=True)
            except ValueError as e:
                raise CommandError(f"cannot read the command: {e}") from None
            while words and words[0] in ("$", "%", ">"):
                words = words[1:]
            if words and (words[0] == "e4e" or words[0].endswith("/e4e")):
                commands.append(words[1:])
            elif words[:3] == ["python", "-m", "e4ecli"]:
                commands.append(words[3:])
    if not commands:
        raise CommandError("no e4e command found (paste the `e4e edit ...` line the page wrote)")
    return commands


def _options(words: list[str], command: str) -> tuple[list[str], list[tuple[str, str]]]:
    """(positional arguments, [(option, value or '')]) of one command's words."""
    positional, options = [], []
    i = 0
    while i < len(words):
        word = words[i]
        if word.startswith("-") and len(word) > 1 and not _is_number(word):
            name, eq, value = word.partition("=")
            if name in _FLAGS:
                options.append((name, ""))
            elif eq:
                options.append((name, value))
            elif i + 1 < len(words):
                options.append((name, words[i + 1]))
                i += 1
            else:
                raise CommandError(f"e4e {command}: {name} needs a value")
        else:
            positional.append(word)
        i += 1
    return positional, options


def _is_number(word: str) -> bool:
    try:
        float(word)
    except ValueError:
        return False
    return True


def _float(value: str, what: str) -> float:
    try:
        number_ = float(value)
    except ValueError:
        raise CommandError(f"{what} {value!r} is not a number") from None
    if number_ != number_ or number_ in (float("inf"), float("-inf")):
        raise CommandError(f"{what} {value!r} must be finite")
    return number_


def _int(value: str, what: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise CommandError(f"{what} {value!r} is not a whole number") from None


def parse_command(text: str, base: View | None = None) -> View:
    """The View that pasted `e4e invert` / `e4e edit` / `e4e video` lines describe; settings the text does not
    mention keep `base`'s values. Raises CommandError (one line) for what the page cannot show."""
    view = base or View()
    found_invert = False
    for words in _commands(text):
        if not words:
            continue
        command, rest = words[0], words[1:]
        positional, options = _options(rest, command)
        if command == "invert":
            found_invert = True
            updates: dict = {"photo": True, "align": False, "stage": None, "refine": None, "refine_steps": 30, "detector": None}
            if positional:
                updates["source"] = positional[0]
            for name, value in options:
                if name in ("--stage",):
                    updates["stage"] = _int(value, "--stage")
                elif name == "--refine":
                    if value not in ("w+", "w", "pti"):
                        raise CommandError(f"--refine {value!r}: use w+, w or pti")
                    updates["refine"] = value
                elif name == "--refine-steps":
                    updates["refine_steps"] = _int(value, "--refine-steps")
                elif name == "--align":
                    updates["align"] = True
                elif name in ("--detector", "-L"):
                    updates["detector"] = value
                elif name in ("--checkpoint", "-c"):
                    updates["checkpoint"] = value
            view = replace(view, **updates)
        elif command == "edit":
            edits, specs, strengths = [], [], []
            paste, feather = False, DEFAULT_FEATHER
            checkpoint = None
            text: dict = {"neutral": None, "beta": DEFAULT_BETA, "clip_weights": view.clip_weights, "relevance": view.relevance}
            for name, value in options:
                if name in ("-d", "--direction"):
                    specs.append(value)
                elif name in ("-s", "--strength"):
                    if ":" in value:
                        raise CommandError(f"--strength {value}: the page shows one strength per direction, not a sweep A:B:N "
                                           "(load one value, make the sweep GIF on the page)")
                    strengths.append(_float(value, "--strength"))
                elif name == "--paste-back":
                    paste = True
                elif name == "--feather":
                    feather = _float(value, "--feather")
                elif name in ("--checkpoint", "-c"):
                    checkpoint = value
                elif name == "--neutral":
                    text["neutral"] = value
                elif name == "--beta":
                    text["beta"] = _float(value, "--beta")
                elif name == "--clip-weights":
                    text["clip_weights"] = value
                elif name == "--relevance":
                    text["relevance"] = value
            if len(specs) != len(strengths):
                raise CommandError(f"got {len(specs)} --direction but {len(strengths)} --strength; give one strength per direction")
            if sum(is_text(s) for s in specs) > 1:
                raise CommandError("the page shows one text direction; keep one -d \"text:...\"")
            edits = [(s, v) for s, v in zip(specs, strengths) if not is_text(s)] + [(s, v) for s, v in zip(specs, strengths) if is_text(s)]
            updates = {"edits": tuple((s, v) for s, v in edits if v != 0.0), "paste_back": paste, "feather": feather, **text}
            if not found_invert:
                updates.update(photo=False, stage=None, refine=None, refine_steps=30, align=False, detector=None, checkpoint=checkpoint)
                if positional:
                    updates["source"] = positional[0]
            view = replace(view, **updates)
        elif command == "video":
            spec = strength = None
            frames = 60
            for name, value in options:
                if name in ("-d", "--direction"):
                    spec = value
                elif name in ("-s", "--strength"):
                    strength = value
                elif name in ("-n", "--frames"):
                    frames = _int(value, "--frames")
            if spec is None or strength is None:
                raise CommandError("e4e video: the page makes sweeps of one edit; give -d DIRECTION -s A:B")
            try:
                lo, hi = parse_range(strength)  # as `e4e video` reads it: A:B, or S for 0:S
            except DirectionError as e:
                raise CommandError(str(e)) from None
            view = replace(view, sweep=(spec, lo, hi, frames))
        else:
            raise CommandError(f"e4e {command}: the page reads `e4e invert`, `e4e edit` and `e4e video` lines")
    return view
