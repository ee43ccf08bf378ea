"""What every batch pipeline shares: results, skip-finished, decoding in a DataLoader."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from e4ecli.files.batch import Item, output_path


@dataclass
class Result:
    item: Item
    status: str  # "ok" | "skipped" | "failed"
    outputs: list[Path] = field(default_factory=list)
    error: str | None = None
    extra: dict = field(default_factory=dict)  # more manifest fields for this output


def outputs_for(item: Item, out_dir: Path, suffixes: Sequence[str]) -> list[Path]:
    return [output_path(out_dir, item.key, s) for s in suffixes]


def split_finished(items: Sequence[Item], out_dir: Path, suffixes: Sequence[str], overwrite: bool) -> tuple[list[Item], list[Result]]:
    """(items still to do, 'skipped' results for items whose every output already exists)."""
    todo, skipped = [], []
    for it in items:
        outs = outputs_for(it, out_dir, suffixes)
        if not overwrite and all(p.exists() for p in outs):
            skipped.append(Result(it, "skipped", outs))
        else:
            todo.append(it)
    return todo, skipped


class _DecodeDataset:
    """Map-style dataset: index -> (index, payload, None) or (index, None, reason)."""

    def __init__(self, items: Sequence[Item], decode: Callable[[Path], Any], expected: tuple[type, ...]):
        self.items = items
        self.decode = decode
        self.expected = expected

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        try:
            return i, self.decode(self.items[i].source), None
        except self.expected as e:
            return i, None, str(e)
        except Exception as e:  # noqa: BLE001 -- one bad file must never stop the batch
            return i, None, f"{type(e).__name__}: {e}"


def _as_list(batch):
    return batch


def decoded_batches(items: Sequence[Item], decode: Callable[[Path], Any], batch_size: int, workers: int = 0,
                    expected: tuple[type, ...] = (ValueError,)) -> Iterator[list[tuple[Item, Any, str | None]]]:
    """Decode items (in `workers` DataLoader processes) and yield lists of (item, payload, error).

    Never drops a partial last batch (the original's `drop_last=True` did); order is preserved.
    """
    from torch.utils.data import DataLoader

    if not items:
        return
    loader = DataLoader(_DecodeDataset(items, decode, expected), batch_size=max(1, batch_size), shuffle=False,
                        num_workers=max(0, workers), collate_fn=_as_list, drop_last=False)
    for batch in loader:
        yield [(items[i], payload, err) for i, payload, err in batch]


def partition(batch: list[tuple[Item, Any, str | None]]) -> tuple[list[tuple[Item, Any]], list[Result]]:
    """A decoded batch -> (decoded (item, payload) pairs, 'failed' Results for the items that did not decode)."""
    good = [(it, payload) for it, payload, err in batch if err is None]
    failed = [Result(it, "failed", error=err) for it, _, err in batch if err is not None]
    return good, failed
