"""One process or many: torchrun / torch.distributed set-up and the few collectives training needs.

`torchrun --nproc-per-node 8 -m e4ecli train ...` starts one process per GPU with RANK,
WORLD_SIZE, LOCAL_RANK and MASTER_ADDR/PORT in the environment; `setup` reads them, takes the
NCCL backend on CUDA (gloo on CPU) and gives each process cuda:LOCAL_RANK. Without those
variables everything runs in this one process and the collectives are no-ops.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist


class DistributedError(RuntimeError):
    pass


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    initialised_here: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def sum_(self, t: torch.Tensor) -> torch.Tensor:
        """In-place sum over ranks (float64 on CPU for gloo, the device for NCCL)."""
        if self.enabled:
            dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t

    def gather(self, obj: Any) -> list[Any]:
        """Every rank's `obj` (picklable, made by this program), in rank order, on every rank."""
        if not self.enabled:
            return [obj]
        out: list[Any] = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's `obj` on every rank."""
        if not self.enabled:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def close(self) -> None:
        if self.initialised_here and dist.is_initialized():
            dist.destroy_process_group()


def world_from_env() -> tuple[int, int, int]:
    """(rank, world size, local rank) from torchrun's environment; (0, 1, 0) when absent."""
    try:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", str(rank)))
    except ValueError as e:
        raise DistributedError(f"bad torchrun environment (RANK/WORLD_SIZE/LOCAL_RANK): {e}") from None
    return rank, world, local


def setup(device: torch.device) -> Dist:
    """Join the process group torchrun describes (if any) and pick this process's device.

    device: the device the user asked for (resolved); under torchrun a CUDA device becomes
    cuda:LOCAL_RANK (NCCL), anything else stays (gloo).
    """
    rank, world, local = world_from_env()
    if world <= 1:
        return Dist(0, 1, 0, device)
    if device.type == "cuda":
        if local >= torch.cuda.device_count():
            raise DistributedError(f"LOCAL_RANK {local} but only {torch.cuda.device_count()} CUDA device(s) visible; "
                                   "start at most one process per GPU (torchrun --nproc-per-node)")
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
        backend = "nccl"
    else:
        backend = "gloo"
    here = False
    if not dist.is_initialized():
        for var in ("MASTER_ADDR", "MASTER_PORT"):
            if var not in os.environ:
                raise DistributedError(f"WORLD_SIZE={world} but {var} is not set: start the processes with torchrun")
        dist.init_process_group(backend=backend, rank=rank, world_size=world)
        here = True
    return Dist(rank, world, local, device, here)
