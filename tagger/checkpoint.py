"""Training checkpoints: everything an interrupted run needs to continue exactly.

A checkpoint folder (``<output>.checkpoint`` next to the model folder) holds
``checkpoint.json`` (config, vocabulary, counters, optimizer and scheduler settings,
NumPy and Python RNG states) and ``state.safetensors`` (the weights, the EMA weights,
the best epoch's weights, the optimizer's moment tensors and torch's RNG state). It is
rewritten atomically at the end of every epoch and removed once the model is saved.
Nothing in it is pickled.
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from tagger.config import TrainConfig
from tagger.errors import TaggerError
from tagger.vocab import Vocab

CHECKPOINT_VERSION = 1
META, STATE = "checkpoint.json", "state.safetensors"


def checkpoint_dir(output: str | Path) -> Path:
    """Where the run writing ``output`` keeps its checkpoint: a sibling folder."""
    output = Path(output)
    return output.with_name(output.name + ".checkpoint")


@dataclass
class Checkpoint:
    """A run's state at the end of an epoch."""

    config: TrainConfig
    vocab: Vocab
    fingerprint: str  # of the training data: a resumed run must see the same data
    epoch: int  # epochs completed
    progress: dict  # best_f1, best_epoch, stale, epochs (the per-epoch log), seconds
    tensors: dict[str, torch.Tensor] = field(default_factory=dict)
    optimizer: dict = field(default_factory=dict)  # param_groups and non-tensor state
    scheduler: dict = field(default_factory=dict)
    rng: dict = field(default_factory=dict)  # numpy generator and python random states


def capture(
    config: TrainConfig,
    vocab: Vocab,
    fingerprint: str,
    epoch: int,
    progress: dict,
    modules: dict[str, torch.nn.Module | dict[str, torch.Tensor] | None],
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    rng: np.random.Generator,
) -> Checkpoint:
    """Snapshot a run. ``modules`` maps a prefix to a module or a state dict (or None)."""
    tensors: dict[str, torch.Tensor] = {}
    for prefix, module in modules.items():
        if module is None:
            continue
        state = module if isinstance(module, dict) else module.state_dict()
        tensors.update({f"{prefix}.{k}": v for k, v in state.items()})
    opt = optimizer.state_dict()
    plain_state: dict[str, dict] = {}
    for index, values in opt["state"].items():
        for key, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optimizer.{index}.{key}"] = value
            else:
                plain_state.setdefault(str(index), {})[key] = value
    tensors["rng.torch"] = torch.get_rng_state()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = state
    return Checkpoint(
        config=config,
        vocab=vocab,
        fingerprint=fingerprint,
        epoch=epoch,
        progress=progress,
        tensors=tensors,
        optimizer={"param_groups": opt["param_groups"], "state": plain_state},
        scheduler=scheduler.state_dict(),
        rng={"numpy": rng.bit_generator.state, "python": _python_random_state()},
    )


def restore(
    ckpt: Checkpoint,
    modules: dict[str, torch.nn.Module | None],
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    rng: np.random.Generator,
) -> None:
    """Load a checkpoint's state into a freshly built run (same config and vocabulary)."""
    for prefix, module in modules.items():
        if module is not None:
            module.load_state_dict(tensors_under(ckpt, prefix))
    state: dict[int, dict] = {}
    for key, value in ckpt.tensors.items():
        if key.startswith("optimizer."):
            _, index, name = key.split(".", 2)
            state.setdefault(int(index), {})[name] = value
    for index, values in ckpt.optimizer.get("state", {}).items():
        state.setdefault(int(index), {}).update(values)
    optimizer.load_state_dict({"state": state, "param_groups": ckpt.optimizer["param_groups"]})
    scheduler.load_state_dict(ckpt.scheduler)
    rng.bit_generator.state = ckpt.rng["numpy"]
    version, internal, gauss = ckpt.rng["python"]
    random.setstate((version, tuple(internal), gauss))
    torch.set_rng_state(ckpt.tensors["rng.torch"])
    cuda = [v for k, v in sorted(ckpt.tensors.items()) if k.startswith("rng.cuda.")]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda[: torch.cuda.device_count()])


def tensors_under(ckpt: Checkpoint, prefix: str) -> dict[str, torch.Tensor]:
    """The tensors saved under ``prefix.``, with the prefix removed."""
    start = prefix + "."
    return {k[len(start) :]: v for k, v in ckpt.tensors.items() if k.startswith(start)}


def save_checkpoint(path: str | Path, ckpt: Checkpoint) -> Path:
    """Write the checkpoint folder atomically (temporary sibling, then rename)."""
    from safetensors.torch import save

    from tagger.io import recover_dir, write_dir

    path = Path(path)
    recover_dir(path)
    weights = save({k: v.detach().cpu().contiguous() for k, v in ckpt.tensors.items()})
    meta = {
        "format_version": CHECKPOINT_VERSION,
        "kind": "tagger training checkpoint",
        "epoch": ckpt.epoch,
        "fingerprint": ckpt.fingerprint,
        "config": ckpt.config.to_dict(),
        "vocab": ckpt.vocab.to_dict(),
        "progress": ckpt.progress,
        "optimizer": ckpt.optimizer,
        "scheduler": ckpt.scheduler,
        "rng": ckpt.rng,
        "state_sha256": hashlib.sha256(weights).hexdigest(),
    }
    contents = {STATE: weights, META: (json.dumps(meta) + "\n").encode("utf-8")}
    write_dir(path, contents, f"the checkpoint {path}")
    return path


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Read and check a checkpoint folder (version, checksum); never unpickles."""
    from safetensors import SafetensorError
    from safetensors.torch import load

    from tagger.io import recover_dir

    path = Path(path)
    recover_dir(path)
    if not (path / META).is_file():
        hint = checkpoint_dir(path)
        extra = f" (did you mean {hint}?)" if (hint / META).is_file() else ""
        raise TaggerError(f"{path} is not a training checkpoint (no {META}){extra}")
    try:
        meta = json.loads((path / META).read_text(encoding="utf-8"))
        weights = (path / STATE).read_bytes()
    except FileNotFoundError:
        raise TaggerError(f"{path}: missing {STATE}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise TaggerError(f"{path / META}: not valid JSON ({err})") from None
    if not isinstance(meta, dict) or meta.get("format_version") != CHECKPOINT_VERSION:
        version = meta.get("format_version") if isinstance(meta, dict) else None
        raise TaggerError(
            f"{path} has checkpoint format version {version}; this tagger resumes version "
            f"{CHECKPOINT_VERSION}"
        )
    if hashlib.sha256(weights).hexdigest() != meta.get("state_sha256"):
        raise TaggerError(f"{path / STATE} does not match the checksum in {META}")
    try:
        tensors = load(weights)
    except SafetensorError as err:
        raise TaggerError(f"{path / STATE}: not a readable safetensors file ({err})") from None
    try:
        return Checkpoint(
            config=TrainConfig.from_dict(meta["config"], where=str(path / META)),
            vocab=Vocab.from_dict(meta["vocab"]),
            fingerprint=meta["fingerprint"],
            epoch=int(meta["epoch"]),
            progress=meta["progress"],
            tensors=tensors,
            optimizer=meta["optimizer"],
            scheduler=meta["scheduler"],
            rng=meta["rng"],
        )
    except KeyError as err:
        raise TaggerError(f"{path / META} is incomplete: no {err.args[0]}") from None


def _python_random_state() -> list:
    version, internal, gauss = random.getstate()
    return [version, list(internal), gauss]
