"""Where and how torch runs: device choice, threads, seeding."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import random

import numpy as np
import torch

from tagger.errors import TaggerError


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` picks CUDA when available, else the CPU; ``cuda:N`` is checked."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise TaggerError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise TaggerError(f"device {name!r} asked for, but CUDA is not available here")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise TaggerError(f"device {name!r} does not exist ({torch.cuda.device_count()} GPUs)")
    return device


def autocast(device: torch.device):
    """bf16 autocast on GPUs that have it: the embeddings, RNN and projection run in
    bf16 (the tensor cores' format), while the emissions are cast back to fp32 before the
    CRF, whose sums of exponentials need the range. Elsewhere nothing changes."""
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def set_threads(threads: int | None) -> None:
    """Use ``threads`` intra-op threads (default: torch's own choice, one per core)."""
    if threads:
        torch.set_num_threads(threads)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@functools.cache
def _libc():
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    return libc if libc is not None and hasattr(libc, "malloc_trim") else None


def trim_memory() -> None:
    """Hand freed heap pages back to the OS (glibc only; elsewhere a no-op).

    Batches of every shape leave holes in the heap that glibc keeps, so a long
    prediction run's RSS creeps up (about 400 MB over 20 MB of text); trimming after
    each chunk keeps it flat, at a cost of milliseconds."""
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)


def limit_heap_growth(threshold: int = 1 << 20) -> None:
    """Serve allocations of ``threshold`` bytes and more with their own memory maps, which
    go back to the OS when freed (glibc only). A long ``tagger predict`` run then stays at
    about 550 MiB instead of growing past 1 GB over 100 MB of text, as batch tensors of
    ever-changing shapes fragment the heap; the price is about a fifth of the throughput
    in page faults, so only the streaming command asks for it."""
    libc = _libc()
    if libc is not None and hasattr(libc, "mallopt"):
        libc.mallopt(-3, threshold)  # M_MMAP_THRESHOLD; also stops glibc raising it
