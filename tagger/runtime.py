"""Where and how torch runs: device choice, precision, threads, seeding."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import os
import random
import time

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


PRECISIONS = ("auto", "fp32", "bf16")  # what a model may be asked to predict in
# Pins what ``auto`` resolves to (fp32 or bf16), e.g. so that every worker of a cluster
# job, whatever its CPU, writes the same records, or a test suite compares with fp32.
PRECISION_ENV = "TAGGER_PRECISION"
# ``auto`` takes bf16 on a CPU only where the probe runs it at least this much faster:
# oneDNN emulates bf16 on AVX-512 CPUs without the BF16 instructions, at about half of
# fp32's speed, while those with them (or AMX) run it 1.5-2x faster.
BF16_SPEEDUP = 1.2


def training_precision(device: torch.device, name: str = "auto") -> str:
    """The precision training runs in (``TrainConfig.precision``), and a ``Tagger`` made in
    code predicts in: ``auto`` is bf16 on GPUs that have it and fp32 on CPUs, fixed rather
    than timed, so that runs reproduce and CPU figures stay comparable; ``fp32`` and ``bf16``
    as ``resolve_precision`` has them (bf16 where it cannot run: one ``TaggerError`` line)."""
    if name == "auto":
        return "bf16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "fp32"
    return resolve_precision(name, device)[0]


def resolve_precision(name: str, device: torch.device) -> tuple[str, str]:
    """``(mode, reason)``: the precision (``fp32`` or ``bf16``) that ``name`` (``auto``,
    ``fp32`` or ``bf16``) runs a model in on ``device``, and why, for a log line. ``auto``
    is ``training_precision`` on GPUs; on a CPU it is bf16 only where a short timed probe
    (``cpu_bf16_speedup``) finds it clearly faster, because whether the CPU has bf16
    instructions says too little: ``ONEDNN_MAX_CPU_ISA`` can take them away, and oneDNN
    emulates them slowly where they are missing. ``TAGGER_PRECISION`` (fp32 or bf16) in
    the environment pins what ``auto`` is. bf16 asked for where it cannot run at all is
    one ``TaggerError`` line."""
    if name not in PRECISIONS:
        raise TaggerError(f"unknown precision {name!r}; use {', '.join(PRECISIONS)}")
    pinned = os.environ.get(PRECISION_ENV)
    if name == "auto" and pinned:
        if pinned not in PRECISIONS[1:]:
            raise TaggerError(f"{PRECISION_ENV}={pinned!r}: use fp32 or bf16")
        return resolve_precision(pinned, device)[0], f"auto: {PRECISION_ENV}={pinned}"
    if name == "fp32":
        return "fp32", "asked for"
    if device.type == "cuda":
        if torch.cuda.is_bf16_supported():
            return "bf16", "asked for" if name == "bf16" else "auto: this GPU has bf16"
        missing = "this GPU has no bf16"
    elif device.type == "cpu":
        speedup = cpu_bf16_speedup()
        if speedup is not None and name == "bf16":
            return "bf16", "asked for"
        if speedup is not None:
            if speedup >= BF16_SPEEDUP:
                return "bf16", f"auto: bf16 {speedup:.1f}x faster than fp32 here"
            return "fp32", f"auto: no fast bf16 on this CPU (bf16 ran at {speedup:.1f}x fp32)"
        missing = "this CPU has no bf16 LSTM kernel (oneDNN needs AVX-512 BF16 or AMX)"
    else:
        missing = f"bf16 is not supported on {device.type}"
    if name == "bf16":
        raise TaggerError(f"precision bf16 asked for, but {missing}; use auto or fp32")
    return "fp32", f"auto: {missing}"


@functools.cache
def cpu_bf16_speedup() -> float | None:
    """How many times faster a small BiLSTM and projection, the bulk of the tagger's work,
    run under CPU bf16 autocast than in fp32 here (best of a few interleaved runs each);
    None where bf16 cannot run (oneDNN has no kernel for this CPU, or
    ``ONEDNN_MAX_CPU_ISA`` caps it below AVX-512). It runs on one thread: the ratio is
    the core's, and with two threads on a busy machine it swung from 0.7 to 2.5 where one
    thread kept it within 1.4-1.6. About 0.1 s, once per process; the thread count and
    the global random state are left as they were."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _timed_bf16_speedup()
    finally:
        torch.set_num_threads(threads)


def _timed_bf16_speedup() -> float | None:
    with torch.random.fork_rng(devices=[]), torch.inference_mode():
        torch.manual_seed(0)
        lstm = torch.nn.LSTM(128, 128, batch_first=True, bidirectional=True)
        projection = torch.nn.Linear(256, 17)
        x = torch.randn(64, 24, 128)

        def run(mode: str) -> float:
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=mode == "bf16"):
                start = time.perf_counter()
                projection(lstm(x)[0])
                return time.perf_counter() - start

        try:
            run("bf16")  # oneDNN makes its primitives on the first call: not timed
        except RuntimeError:  # "could not create a primitive descriptor"
            return None
        run("fp32")
        times = {"fp32": [], "bf16": []}
        for _ in range(5):
            for mode, seen in times.items():
                seen.append(run(mode))
        return min(times["fp32"]) / min(times["bf16"])


def precision_autocast(mode: str, device: torch.device):
    """What a model runs under in precision ``mode``: for bf16, autocast, so that the
    embeddings, RNN and projection run in bf16 while the emissions are cast back to fp32
    before the CRF (``SequenceTagger.emissions``), whose sums of exponentials need the
    range; for fp32 nothing."""
    if mode == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
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
