"""This process's place among the processes that train together (torch.distributed).

torchrun (`launch.py`) sets RANK, WORLD_SIZE, LOCAL_RANK and LOCAL_WORLD_SIZE; without them the
run is one process and every collective below returns its input, so the trainer has a single
code path for any world size. gloo carries the collectives on the CPU, NCCL on GPUs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Ranks:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1
    backend: str | None = None
    _device: str = field(default="cpu", repr=False)  # where collective tensors live

    @classmethod
    def from_environment(cls) -> Ranks:
        env = os.environ
        world = int(env.get("WORLD_SIZE", "1"))
        return cls(
            rank=int(env.get("RANK", "0")) if world > 1 else 0,
            world_size=world,
            local_rank=int(env.get("LOCAL_RANK", "0")) if world > 1 else 0,
            local_world_size=int(env.get("LOCAL_WORLD_SIZE", str(world))) if world > 1 else 1,
        )

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def start(self, device: str) -> None:
        """Join the process group: NCCL between GPUs (one per local rank), gloo between CPU
        processes. Rendezvous is torchrun's (MASTER_ADDR/MASTER_PORT in the environment)."""
        if not self.distributed:
            return
        import torch
        import torch.distributed as dist

        if device.startswith("cuda"):
            torch.cuda.set_device(self.local_rank)
            self.backend, self._device = "nccl", f"cuda:{self.local_rank}"
        else:
            self.backend, self._device = "gloo", "cpu"
        if not dist.is_initialized():
            dist.init_process_group(backend=self.backend)

    def close(self) -> None:
        if not self.distributed:
            return
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()

    def broadcast_int(self, value: int) -> int:
        """Rank 0's value, on every rank (how rank 0's stop decision reaches the others)."""
        if not self.distributed:
            return value
        import torch
        import torch.distributed as dist

        tensor = torch.tensor([value], dtype=torch.int64, device=self._device)
        dist.broadcast(tensor, src=0)
        return int(tensor.item())

    def sum(self, values: list[float]) -> list[float]:
        """Element-wise sums over the ranks, in float64."""
        if not self.distributed:
            return list(values)
        import torch
        import torch.distributed as dist

        tensor = torch.tensor(values, dtype=torch.float64, device=self._device)
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return [float(v) for v in tensor.tolist()]

    def gather(self, obj: Any) -> list[Any]:
        """Every rank's `obj`, in rank order (on every rank)."""
        if not self.distributed:
            return [obj]
        import torch.distributed as dist

        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def barrier(self) -> None:
        if not self.distributed:
            return
        import torch.distributed as dist

        if self.backend == "nccl":
            dist.barrier(device_ids=[self.local_rank])
        else:
            dist.barrier()
