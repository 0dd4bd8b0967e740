"""Where and how torch runs: device choice, threads, seeding."""

from __future__ import annotations

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


def set_threads(threads: int | None) -> None:
    """Use ``threads`` intra-op threads (default: torch's own choice, one per core)."""
    if threads:
        torch.set_num_threads(threads)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
