"""A strength that ramps over a clip's frames (`e4e edit-video -s A:B`): plain numbers, no torch."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Ramp:
    """A strength, constant (start == end) or ramped linearly from the first frame to the last."""

    start: float
    end: float

    def at(self, frame: int, frames: int) -> float:
        if frames <= 1 or self.start == self.end:
            return self.start
        return self.start + (self.end - self.start) * frame / (frames - 1)

    def to_json(self) -> list[float]:
        return [self.start, self.end]


def parse_ramp(text: str) -> Ramp:
    """'3' -> Ramp(3, 3); 'A:B' -> Ramp(A, B); DirectionError otherwise."""
    from e4ecli.edits.specs import parse_number
    from e4ecli.hub.directions import DirectionError

    parts = text.strip().split(":")
    if len(parts) == 1:
        v = parse_number(parts[0])
        return Ramp(v, v)
    if len(parts) == 2:
        return Ramp(parse_number(parts[0]), parse_number(parts[1]))
    raise DirectionError(f"strength {text!r}: use a number or A:B (a ramp from the first frame to the last, e.g. 0:3)")


__all__ = ["Ramp", "parse_ramp"]
