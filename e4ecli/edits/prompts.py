"""Text directions checked without torch (a typo or a hostile prompt is answered before any model loads): prompts
and the options of text directions (no files: `pipelines.directions.check` looks at those). `edits.stylespace`
re-exports them."""
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
def clean_prompt(text: str, setting: str | None = None) -> str:
    """A prompt as CLIP will read it, or DirectionError: surrounding whitespace and one pair of matching outer quotes
    are removed; empty text, control characters and more than MAX_PROMPT_CHARS characters are refused. Quotes
    inside and any printable Unicode are kept (CLIP's byte-level BPE reads them). `setting`: the setting the text
    came from ('neutral'), named in the message; None: the `text:` of a direction."""
    what = "text" if setting is None else "{" + setting + "}"
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
        text = text[1:-1].strip()
    if not text:
        raise DirectionError(what + ": the description is empty; write what the edit should show, e.g. \"text:a face with a smile\"",
                             settings=True)
    bad = next((ch for ch in text if unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Zl", "Zp")), None)
    if bad is not None:
        raise DirectionError(what + ": the description contains the control character U+{code:04X}; write it on one line of printable text",
                             code=ord(bad))
    if len(text) > MAX_PROMPT_CHARS:
        raise DirectionError(what + ": the description is {n} characters; CLIP reads at most {tokens} tokens "
                             "(a sentence of about 50 words), so keep it under {most} characters", n=len(text), tokens=CONTEXT_LENGTH,
                             most=MAX_PROMPT_CHARS)
    return text


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


def check_text_options(text: TextOptions | None) -> None:
    """What can be checked of a text direction's options without files or models: the neutral description, beta."""
    text = text or TextOptions()
    if text.neutral is not None:
        clean_prompt(text.neutral, "neutral")
    if not 0 <= text.beta < 1:
        raise DirectionError("{beta} {value:g}: the threshold is on cosine-like relevance values, use 0 <= beta < 1 "
                             "(StyleCLIP's default {default})", value=text.beta, default=DEFAULT_BETA)
