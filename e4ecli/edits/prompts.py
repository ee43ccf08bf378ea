"""Text and StyleSpace direction specs checked without torch (a typo or a hostile prompt is answered before any
model loads): prompts, `stylespace:LAYER:CHANNEL`, the options of text directions. `edits.stylespace` re-exports them."""
from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from pathlib import Path

from e4ecli.hub.directions import DirectionError

NEUTRAL = {"ffhq": "a face", "celeba": "a face", "cars": "a car", "church": "a church", "horse": "a horse"}
DEFAULT_BETA = 0.15  # StyleCLIP's disentanglement threshold
MAX_PROMPT_CHARS = 300  # far more than CLIP's 77-token context holds; longer prompts are refused before any model loads
CONTEXT_LENGTH = 77  # CLIP's text context, start and end tokens included


def neutral_for(domain_short: str) -> str:
    return NEUTRAL.get(domain_short, "a photo")


# -- prompts ------------------------------------------------------------------------------------
def clean_prompt(text: str, what: str = "text") -> str:
    """A prompt as CLIP will read it, or DirectionError: surrounding whitespace and one pair of matching outer quotes
    are removed; empty text, control characters and more than MAX_PROMPT_CHARS characters are refused. Quotes
    inside and any printable Unicode are kept (CLIP's byte-level BPE reads them)."""
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
        text = text[1:-1].strip()
    if not text:
        raise DirectionError(f"{what}: the description is empty; write what the edit should show, e.g. \"text:a face with a smile\"")
    bad = next((ch for ch in text if unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Zl", "Zp")), None)
    if bad is not None:
        raise DirectionError(f"{what}: the description contains the control character U+{ord(bad):04X}; write it on one line of printable text")
    if len(text) > MAX_PROMPT_CHARS:
        raise DirectionError(f"{what}: the description is {len(text)} characters; CLIP reads at most {CONTEXT_LENGTH} tokens "
                             f"(a sentence of about 50 words), so keep it under {MAX_PROMPT_CHARS} characters")
    return text


def parse_channel_spec(spec: str, rest: str) -> tuple[int, int]:
    """LAYER, CHANNEL of `stylespace:LAYER:CHANNEL`; DirectionError when malformed."""
    parts = rest.split(":")
    usage = "stylespace:LAYER:CHANNEL (e.g. stylespace:6:501, the StyleSpace paper's smile channel at 1024 px)"
    if len(parts) != 2:
        raise DirectionError(f"direction {spec!r}: use {usage}")
    try:
        layer, channel = int(parts[0]), int(parts[1])
    except ValueError:
        raise DirectionError(f"direction {spec!r}: use {usage}") from None
    if layer < 0 or channel < 0:
        raise DirectionError(f"direction {spec!r}: LAYER and CHANNEL are counted from 0")
    return layer, channel


TEXT_STRENGTH = 4.0  # default alpha of a text edit
TEXT_RANGE = (-6.0, 6.0)


@dataclass(frozen=True)
class TextOptions:
    """What a text:... direction needs besides the prompt."""

    neutral: str | None = None  # None: the model domain's (NEUTRAL)
    beta: float = DEFAULT_BETA
    clip_weights: Path | None = None  # None: the zoo's OpenAI ViT-B/32
    relevance: Path | None = None
    device: str = "cpu"


def precheck_text(rest: str, text: TextOptions | None) -> None:
    """What can be checked of `text:TARGET` before any model loads."""
    clean_prompt(rest, "text")
    text = text or TextOptions()
    if text.neutral is not None:
        clean_prompt(text.neutral, "--neutral")
    if not 0 <= text.beta < 1:
        raise DirectionError(f"--beta {text.beta:g}: the threshold is on cosine-like relevance values, use 0 <= beta < 1 "
                             f"(StyleCLIP's default {DEFAULT_BETA})")
    if text.relevance is None:
        raise DirectionError("text directions need the generator's relevance matrix: give --relevance FILE "
                             "(`e4e directions styleclip -o FILE` computes it; README: Text edits)")
    if not Path(text.relevance).is_file():
        raise DirectionError(f"--relevance {text.relevance}: no such file (`e4e directions styleclip -o {text.relevance}` computes it)")
    if text.clip_weights is not None and not Path(text.clip_weights).is_file():
        raise DirectionError(f"--clip-weights {text.clip_weights}: no such file")
