"""What a batch run reports while it runs (see e4ecli.runs): plain dataclasses, no printing."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Started:
    """The run is about to take results: `total` items are this process's share; `missing` lists the inputs
    that could not be read at all ((input, reason); reported by rank 0 only; they count as failed)."""

    label: str
    out: Path
    total: int
    rank: int = 0
    world: int = 1
    missing: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Note:
    """Something worth telling the user that is not an item's result (e.g. why finished outputs are redone)."""

    message: str
    level: str = "note"  # "note" | "warning"


@dataclass(frozen=True)
class ItemDone:
    """One item written: `result` is the pipeline's Result (status "ok"; outputs, main one first)."""

    result: Any

    @property
    def source(self) -> str:
        return str(self.result.item.source)


@dataclass(frozen=True)
class ItemSkipped:
    """One item left as it was: an earlier run made its outputs with the same settings."""

    result: Any

    @property
    def source(self) -> str:
        return str(self.result.item.source)


@dataclass(frozen=True)
class ItemFailed:
    """One item that could not be done; `error` is one line naming the reason. The batch goes on."""

    result: Any

    @property
    def source(self) -> str:
        return str(self.result.item.source)

    @property
    def error(self) -> str:
        return self.result.error or "failed"


@dataclass(frozen=True)
class Finished:
    """The run is over. Counts and failures are those of every process (rank 0 merged the manifests);
    `stopped`: why the run stopped early (a manifest that cannot be written, e.g. a full disk) or None."""

    label: str
    out: Path
    counts: dict = field(default_factory=dict)  # "ok" / "skipped" / "failed" -> n
    failures: list = field(default_factory=list)  # [(input, reason)], missing inputs included
    seconds: float = 0.0
    stopped: str | None = None
    rank: int = 0
    world: int = 1

    @property
    def done(self) -> int:
        return self.counts.get("ok", 0)

    @property
    def skipped(self) -> int:
        return self.counts.get("skipped", 0)

    @property
    def failed(self) -> int:
        return self.counts.get("failed", 0)

    @property
    def ok(self) -> bool:
        """True when every input is done (now or by an earlier run) and every result was recorded."""
        return not self.failed and self.stopped is None


Event = Started | Note | ItemDone | ItemSkipped | ItemFailed | Finished
