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
import math
import random
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from tagger.config import TrainConfig, json_kind, short_repr
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
    """Read and check a checkpoint folder (version, checksum, the type of every part);
    never unpickles. Any damage is one ``TaggerError`` line naming the file."""
    from safetensors import SafetensorError
    from safetensors.torch import load

    from tagger.io import _check_epochs, _parse_json, _read_bytes, recover_dir

    path = Path(path)
    file = path / META
    try:
        recover_dir(path)
        present = file.exists() or file.is_symlink()
        hint = checkpoint_dir(path)
        hinted = not present and (hint / META).is_file()
    except OSError as err:
        raise TaggerError(f"cannot read {path}: {err.strerror or err}") from None
    if not present:
        extra = f" (did you mean {hint}?)" if hinted else ""
        raise TaggerError(f"{path} is not a training checkpoint (no {META}){extra}")
    meta = _parse_json(_read_bytes(file), file)
    if not isinstance(meta, dict):
        raise TaggerError(f"{file}: expected a JSON object, not {json_kind(meta)}")
    version = meta.get("format_version")
    if version != CHECKPOINT_VERSION or isinstance(version, bool):
        newer = isinstance(version, int) and version > CHECKPOINT_VERSION
        raise TaggerError(
            f"{path} has checkpoint format version {short_repr(version)}; this tagger resumes "
            f"version {CHECKPOINT_VERSION}" + ("; upgrade tagger to resume it" if newer else "")
        )
    weights = _read_bytes(path / STATE, missing=f"{path}: missing {STATE}")
    if hashlib.sha256(weights).hexdigest() != meta.get("state_sha256"):
        raise TaggerError(f"{path / STATE} does not match the checksum in {META}")
    try:
        tensors = load(weights)
    except (SafetensorError, ValueError, TypeError) as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise TaggerError(f"{path / STATE}: not a readable safetensors file ({reason})") from None
    keys = ("config", "vocab", "fingerprint", "epoch", "progress", "optimizer", "scheduler", "rng")
    missing = [k for k in keys if k not in meta]
    if missing:
        raise TaggerError(f"{file} is incomplete: no {', '.join(missing)}")
    if "rng.torch" not in tensors:
        raise TaggerError(f"{path / STATE} is incomplete: no rng.torch")
    config = TrainConfig.from_dict(meta["config"], where=str(file))
    vocab = Vocab.from_dict(meta["vocab"], where=str(file))
    _need(isinstance(meta["fingerprint"], str), file, "fingerprint", "a string", meta)
    epoch = meta["epoch"]
    _need(_whole(epoch), file, "epoch", "a whole number 0 or more", meta)
    _check_progress(meta["progress"], file)
    _check_optimizer(meta["optimizer"], file)
    _check_scheduler(meta["scheduler"], file, len(meta["optimizer"]["param_groups"]))
    _check_rng(meta["rng"], file)
    _check_epochs(meta["progress"].get("epochs", []), file, "progress.epochs")
    return Checkpoint(
        config=config,
        vocab=vocab,
        fingerprint=meta["fingerprint"],
        epoch=epoch,
        progress=meta["progress"],
        tensors=tensors,
        optimizer=meta["optimizer"],
        scheduler=meta["scheduler"],
        rng=meta["rng"],
    )


def _whole(value, limit: int = 2**31) -> bool:
    """A JSON whole number from 0 to ``limit``."""
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= limit


def _real(value) -> bool:
    """A JSON number that a float holds, finite."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return abs(value) < 2**63 if isinstance(value, int) else math.isfinite(value)


def _need(ok: bool, file: Path, key: str, what: str, parent: dict | None = None) -> None:
    """Raise ``FILE: KEY must be WHAT, not VALUE`` unless ``ok`` (``parent[last part]``
    is the value shown)."""
    if not ok:
        shown = ""
        if isinstance(parent, dict):
            shown = f", not {short_repr(parent.get(key.rsplit('.', 1)[-1]))}"
        raise TaggerError(f"{file}: {key} must be {what}{shown}")


PROGRESS = {  # RunState's fields: what each must be
    "best_f1": (_real, "a number"),
    "best_epoch": (_whole, "a whole number 0 or more"),
    "stale": (_whole, "a whole number 0 or more"),
    "epochs": (lambda v: isinstance(v, list), "a list"),
    "seconds": (lambda v: _real(v) and v >= 0, "a number 0 or more"),
}


def _check_progress(progress, file: Path) -> None:
    _need(isinstance(progress, dict), file, "progress", "an object", {"progress": progress})
    for key, value in progress.items():
        if key not in PROGRESS:
            raise TaggerError(f"{file}: progress has an unknown key {short_repr(key)}")
        test, what = PROGRESS[key]
        _need(test(value), file, f"progress.{key}", what, progress)


_NUMBERS = ("lr", "eps", "weight_decay", "momentum", "dampening", "initial_lr")
_FLAGS = (
    "amsgrad",
    "maximize",
    "foreach",
    "capturable",
    "differentiable",
    "fused",
    "nesterov",
    "decoupled_weight_decay",
)


def _check_optimizer(optimizer, file: Path) -> None:
    """The optimizer's settings (what ``torch.optim`` state dicts hold, minus tensors)."""
    _need(isinstance(optimizer, dict), file, "optimizer", "an object", {"optimizer": optimizer})
    groups = optimizer.get("param_groups")
    _need(isinstance(groups, list) and groups, file, "optimizer.param_groups", "a list", optimizer)
    for i, group in enumerate(groups):
        key = f"optimizer.param_groups[{i}]"
        _need(isinstance(group, dict), file, key, "an object")
        params = group.get("params")
        ok = isinstance(params, list) and all(_whole(p) for p in params)
        _need(ok, file, f"{key}.params", "a list of whole numbers")
        for name in _NUMBERS:
            if name in group:
                ok = _real(group[name]) and group[name] >= 0
                _need(ok, file, f"{key}.{name}", "a number 0 or more", group)
        for name in _FLAGS:
            if name in group:
                ok = group[name] is None or isinstance(group[name], bool)
                _need(ok, file, f"{key}.{name}", "true, false or null", group)
        if "betas" in group:
            betas = group["betas"]
            ok = isinstance(betas, list) and len(betas) == 2 and all(_real(b) for b in betas)
            _need(ok, file, f"{key}.betas", "a list of two numbers", group)
    numbered = [p for group in groups for p in group["params"]]
    if not numbered or numbered != list(range(len(numbered))):
        raise TaggerError(
            f"{file}: optimizer.param_groups must number the parameters 0, 1, 2, ... in order"
        )
    state = optimizer.get("state", {})
    _need(isinstance(state, dict), file, "optimizer.state", "an object", optimizer)
    for index, values in state.items():
        ok = index.isascii() and index.isdigit() and len(index) < 10 and isinstance(values, dict)
        _need(ok, file, "optimizer.state", "an object of parameter numbers to objects")


def _check_scheduler(scheduler, file: Path, groups: int) -> None:
    """A ``LambdaLR`` state dict: its attributes, which loading sets one by one (the
    lambdas are code, saved as null)."""
    _need(isinstance(scheduler, dict), file, "scheduler", "an object", {"scheduler": scheduler})
    lambdas = scheduler.get("lr_lambdas")
    ok = isinstance(lambdas, list) and len(lambdas) == groups
    ok = ok and all(f is None or isinstance(f, dict) for f in lambdas)
    _need(ok, file, "scheduler.lr_lambdas", f"a list of {groups} nulls", scheduler)
    for key, value in scheduler.items():
        if key in ("last_epoch", "_step_count"):
            ok = isinstance(value, int) and not isinstance(value, bool) and -1 <= value < 2**31
            _need(ok, file, f"scheduler.{key}", "a whole number", scheduler)
        elif key in ("base_lrs", "_last_lr"):
            ok = isinstance(value, list) and len(value) == groups and all(map(_real, value))
            _need(ok, file, f"scheduler.{key}", f"a list of {groups} numbers", scheduler)
        elif key != "lr_lambdas":
            ok = key != "optimizer" and (value is None or isinstance(value, (bool, int, float)))
            _need(ok, file, f"scheduler.{key}", "true, false, a number or null", scheduler)


def _check_rng(rng, file: Path) -> None:
    """The NumPy and Python generator states: tried on throwaway generators."""
    _need(isinstance(rng, dict), file, "rng", "an object", {"rng": rng})
    try:
        np.random.default_rng().bit_generator.state = rng["numpy"]
    except (KeyError, TypeError, ValueError, OverflowError, AttributeError):
        raise TaggerError(f"{file}: rng.numpy is not a NumPy generator state") from None
    state = rng.get("python")
    try:
        version, internal, gauss = state
        if not (gauss is None or isinstance(gauss, float)):
            raise TypeError(gauss)
        random.Random().setstate((version, tuple(internal), gauss))
    except (TypeError, ValueError, OverflowError):
        raise TaggerError(f"{file}: rng.python is not a Python random state") from None


def _python_random_state() -> list:
    version, internal, gauss = random.getstate()
    return [version, list(internal), gauss]
