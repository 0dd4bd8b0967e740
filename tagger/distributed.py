"""Data-parallel training with ``torch.distributed``, launched by ``torchrun``.

``torchrun --nproc-per-node N -m tagger train ...`` (or ``tagger train --nproc N``)
starts N processes; each reads its rank from the environment torchrun sets. Every rank
draws the same global batches from the same seeded shuffle and trains on its slice of
each; DistributedDataParallel averages the gradients, so a step sees the same global
batch as a single process would. Evaluation splits whole batches between ranks and
gathers the predictions, so scores equal a single process's exactly. Only rank 0 prints
and writes files.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from tagger.batching import Batch, Encoded, bucket_indices, make_batch
from tagger.errors import TaggerError


@dataclass(frozen=True)
class World:
    """This process's place among the training processes."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


SINGLE = World()


def current() -> World:
    """The world torchrun describes in the environment (one process without it)."""
    try:
        return World(
            rank=int(os.environ.get("RANK", 0)),
            size=int(os.environ.get("WORLD_SIZE", 1)),
            local_rank=int(os.environ.get("LOCAL_RANK", 0)),
        )
    except ValueError as err:
        raise TaggerError(f"bad torchrun environment (RANK / WORLD_SIZE): {err}") from None


def start(world: World, device: torch.device) -> torch.device:
    """Join the process group (NCCL on GPUs, gloo on CPU); returns this rank's device."""
    import torch.distributed as dist

    if device.type == "cuda":
        device = torch.device("cuda", world.local_rank % torch.cuda.device_count())
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return device


def stop(world: World) -> None:
    import torch.distributed as dist

    if world.distributed and dist.is_initialized():
        dist.destroy_process_group()


def barrier(world: World) -> None:
    if world.distributed:
        import torch.distributed as dist

        dist.barrier()


def broadcast(obj, world: World):
    """Rank 0's ``obj`` on every rank (any JSON-like object)."""
    if not world.distributed:
        return obj
    import torch.distributed as dist

    box = [obj if world.main else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather(obj, world: World) -> list:
    """Every rank's ``obj``, in rank order, on every rank."""
    if not world.distributed:
        return [obj]
    import torch.distributed as dist

    out = [None] * world.size
    dist.all_gather_object(out, obj)
    return out


def rank_batches(
    enc: Encoded,
    batch_size: int,
    world: World,
    *,
    shuffle: bool = False,
    rng: np.random.Generator | None = None,
) -> Iterator[tuple[Batch, int]]:
    """This rank's slice of every global batch, with the global batch's size.

    The distributed sampler: all ranks draw the same length-bucketed global batches
    (same seed), so every rank gets the same number of batches. A global batch with
    fewer sentences than ranks (a bucket's last few) is skipped on every rank alike.
    """
    for chunk in bucket_indices(enc.lengths, batch_size, shuffle=shuffle, rng=rng):
        if len(chunk) >= world.size:
            yield make_batch(enc, chunk[world.rank :: world.size]), len(chunk)


def launch(nproc: int, argv: list[str]) -> int:
    """Run ``tagger ARGV`` as ``nproc`` processes under torchrun on this machine."""
    if nproc < 1:
        raise TaggerError(f"--nproc must be at least 1, not {nproc}")
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc-per-node={nproc}",
        "-m",
        "tagger",
        *argv,
    ]
    print("running:", " ".join(a if a.strip() else repr(a) for a in command[1:]), flush=True)
    return subprocess.call(command)
