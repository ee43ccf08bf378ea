"""What every batch pipeline shares: results, skip-finished, decoding in a DataLoader, and the
decode -> batch -> compute -> write loop (`run_batches`) with one write step per item (`write_item`)."""
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


Finished = Callable[[Item, Sequence[Path]], bool]
"""(item, its planned outputs, main output first) -> True when an earlier run made exactly these outputs
with this run's settings (e4ecli.files.provenance.Previous.finished); None: redo everything."""


def split_finished(items: Sequence[Item], outputs_of: Callable[[Item], list[Path]],
                   finished: Finished | None) -> tuple[list[Item], list[Result]]:
    """(items still to do, 'skipped' results for items that `finished` says are done)."""
    todo, skipped = [], []
    for it in items:
        outs = outputs_of(it)
        if finished is not None and finished(it, outs):
            skipped.append(Result(it, "skipped", outs))
        else:
            todo.append(it)
    return todo, skipped


def write_item(item: Item, write: Callable[[], list[Path]], errors: dict[type, str] | None = None) -> Result:
    """Run one item's write step -> 'ok' Result with the paths it wrote (main output first), or a 'failed'
    Result naming the reason (OSError: 'cannot write output'; `errors` maps more types to a prefix)."""
    try:
        return Result(item, "ok", write())
    except OSError as e:
        return Result(item, "failed", error=f"cannot write output: {e}")
    except tuple(errors or ()) as e:
        prefix = next(v for k, v in (errors or {}).items() if isinstance(e, k))
        return Result(item, "failed", error=f"{prefix}: {e}")


def run_batches(todo: Sequence[Item], decode: Callable[[Path], Any], batch_size: int, workers: int,
                expected: tuple[type, ...], compute: Callable[[list[Any]], Sequence[Any]],
                write: Callable[[Item, Any, Any], list[Path]], errors: dict[type, str] | None = None) -> Iterator[Result]:
    """The batch loop of every pipeline: decode `todo` (in `workers` processes), yield a failed Result per
    undecodable item, `compute(payloads) -> one product per payload` per batch, then
    `write(item, payload, product) -> paths written` per item through `write_item`."""
    for batch in decoded_batches(todo, decode, batch_size, workers, expected=expected):
        good, failed = partition(batch)
        yield from failed
        if not good:
            continue
        products = compute([payload for _, payload in good])
        for (it, payload), product in zip(good, products):
            yield write_item(it, lambda it=it, payload=payload, product=product: write(it, payload, product), errors)


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
