"""Errors whose message names settings the user chose, spelled by whoever shows the message.

Below the CLI nothing knows a flag: a library function says `{beta} 1.2: use 0 <= beta < 1` and the interface
that shows it words `{beta}` its own way (the CLI `--beta`, the page of `e4e ui` the same flag its command box
writes). `str()` spells the settings by their keyword names in backquotes (`beta`, `neutral`, `clip_weights`,
...), as a library caller passes them.
"""
from __future__ import annotations

from typing import Mapping

# the settings a message may name, spelled as the library's keyword arguments
SETTINGS = {name: f"`{name}`" for name in ("pca", "neutral", "beta", "relevance", "clip_weights", "force", "attribute", "direction", "strength",
                                          "out")}


class SettingError(ValueError):
    """A ValueError whose message may name settings. Built as `SettingError(text)` the message is `text` as it
    is; built as `SettingError(template, settings=True, **values)` the template's `{name}` fields are the values
    and the settings of SETTINGS, and `worded(names)` spells the settings as `names` maps them."""

    template: str | None = None
    values: Mapping[str, object] = {}

    def __init__(self, message: str = "", *, settings: bool = False, **values: object):
        if settings or values:
            self.template, self.values = message, dict(values)
            message = self.worded({})
        super().__init__(message)

    def worded(self, names: Mapping[str, str]) -> str:
        """The message with its settings spelled as `names` maps them (those it lacks: by SETTINGS)."""
        if self.template is None:
            return str(self)
        return self.template.format_map({**SETTINGS, **names, **self.values})


def worded(error: BaseException, names: Mapping[str, str]) -> str:
    """str(error), its settings spelled by `names` when it is a SettingError."""
    return error.worded(names) if isinstance(error, SettingError) else str(error)
