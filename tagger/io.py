"""Model folders: ``config.json``, ``vocab.json``, ``model.safetensors``, ``metrics.json``
(and optional extras such as ``training.png``, which loading never needs).

Folders are written whole into a temporary sibling and renamed into place, so a crash
never leaves a half-written model and an existing one is only replaced when asked.
Loading checks the format version, the weights' checksum and their shapes; nothing is
ever unpickled.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch

from tagger.config import FORMAT_VERSION, TrainConfig
from tagger.errors import TaggerError
from tagger.vocab import Vocab

CONFIG, VOCAB, WEIGHTS, METRICS, EPOCHS = (
    "config.json",
    "vocab.json",
    "model.safetensors",
    "metrics.json",
    "epochs.jsonl",
)
PLOT = "training.png"  # optional: training curves, written by train()


@dataclass
class ModelFiles:
    """What a model folder holds, in memory."""

    config: TrainConfig
    vocab: Vocab
    state: dict[str, torch.Tensor]
    metrics: dict = field(default_factory=dict)
    data: dict = field(default_factory=dict)  # fingerprint and sizes of the training data


def _json(obj) -> str:
    return json.dumps(obj, indent=2, ensure_ascii=False) + "\n"


def save_model(
    path: str | Path,
    files: ModelFiles,
    overwrite: bool = False,
    extras: dict[str, bytes] | None = None,
) -> Path:
    """Write a model folder atomically; refuses to replace one unless ``overwrite``.

    ``extras`` (file name to bytes, e.g. ``training.png``) go into the same folder, so
    they appear together with the model or not at all.
    """
    from safetensors.torch import save

    path = Path(path)
    recover_dir(path)
    if path.exists() and not overwrite:
        raise TaggerError(f"{path} already exists; pass --overwrite to replace it")
    weights = save({k: v.detach().cpu().contiguous() for k, v in files.state.items()})
    header = {
        "format_version": FORMAT_VERSION,
        "tagger_version": _version(),
        "labels": files.vocab.labels,
        "scheme": files.config.scheme,
        "config": files.config.to_dict(),
        "data": files.data,
        "scores": {k: files.metrics.get(k) for k in ("best_epoch", "dev_f1", "test_f1")},
        "weights": {
            "file": WEIGHTS,
            "sha256": hashlib.sha256(weights).hexdigest(),
            "values": sum(v.numel() for v in files.state.values()),
        },
    }
    epochs = "".join(json.dumps(e) + "\n" for e in files.metrics.get("epochs", []))
    contents = {
        **(extras or {}),
        WEIGHTS: weights,
        VOCAB: _json(files.vocab.to_dict()).encode("utf-8"),
        METRICS: _json(files.metrics).encode("utf-8"),
        EPOCHS: epochs.encode("utf-8"),
        CONFIG: _json(header).encode("utf-8"),  # last: marks the folder complete
    }
    write_dir(path, contents, f"the model to {path}")
    return path


def write_dir(path: Path, contents: dict[str, bytes], what: str) -> None:
    """Write the files ``contents`` (in order) as the folder ``path``, atomically: into a
    temporary sibling, flushed to disk, then renamed into place. An ``OSError`` (disk
    full, no permission) becomes one ``cannot write WHAT: reason`` line."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes it owner-only
        try:
            for name, content in contents.items():
                (tmp / name).write_bytes(content)
            for name in contents:  # a power cut must not leave a renamed but empty file
                with open(tmp / name, "rb") as fh:
                    os.fsync(fh.fileno())
            replace_dir(tmp, path)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    except OSError as err:
        raise TaggerError(f"cannot write {what}: {err.strerror or err}") from None


def replace_dir(src: Path, dst: Path) -> None:
    """Move ``src`` to ``dst``; an old ``dst`` is set aside first and removed last.

    Linux cannot swap two folders in one step, so a crash between the two renames leaves
    the old folder set aside; ``recover_dir`` (run by every load and save) puts it back.
    """
    if not dst.exists():
        os.replace(src, dst)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{dst.name}.old-", dir=dst.parent))
    os.replace(dst, old / dst.name)
    try:
        os.replace(src, dst)
    except BaseException:
        os.replace(old / dst.name, dst)
        raise
    finally:
        shutil.rmtree(old, ignore_errors=True)


def recover_dir(dst: Path) -> None:
    """Put back a folder that a crash inside ``replace_dir`` left set aside."""
    if dst.exists():
        return
    for old in sorted(dst.parent.glob(f".{glob.escape(dst.name)}.old-*")):
        if (old / dst.name).is_dir():
            os.replace(old / dst.name, dst)
            shutil.rmtree(old, ignore_errors=True)
            return


def read_header(path: str | Path) -> dict:
    """``config.json`` of a model folder, after checking it is one of ours and current."""
    path = Path(path)
    recover_dir(path)
    if not path.exists():
        raise TaggerError(f"{path}: no such model folder; train one with `tagger train`")
    if not (path / CONFIG).is_file():
        raise TaggerError(f"{path} is not a tagger model folder (no {CONFIG})")
    try:
        header = json.loads((path / CONFIG).read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise TaggerError(f"{path / CONFIG}: not valid JSON ({err})") from None
    if not isinstance(header, dict):
        raise TaggerError(f"{path / CONFIG}: expected a JSON object")
    version = header.get("format_version")
    if version != FORMAT_VERSION:
        raise TaggerError(
            f"{path} has model format version {version}; this tagger "
            f"({_version()}) reads version {FORMAT_VERSION}: retrain the model or use the "
            f"tagger release that wrote it ({header.get('tagger_version', 'unknown')})"
        )
    missing = [k for k in ("config", "labels", "weights") if k not in header]
    if not missing and not isinstance(header["weights"], dict):
        missing = ["weights"]
    if not missing and "sha256" not in header["weights"]:
        missing = ["weights.sha256"]
    if missing:
        raise TaggerError(f"{path / CONFIG} is incomplete: no {', '.join(missing)}")
    return header


def read_metrics(path: str | Path) -> tuple[dict, dict]:
    """The header and ``metrics.json`` of a model folder, without the weights
    (``tagger compare`` and ``tagger plot`` need no torch model)."""
    path = Path(path)
    header = read_header(path)
    try:
        metrics = json.loads((path / METRICS).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise TaggerError(f"{path}: missing {METRICS}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise TaggerError(f"{path / METRICS}: not valid JSON ({err})") from None
    if not isinstance(metrics, dict):
        raise TaggerError(f"{path / METRICS}: expected a JSON object")
    return header, metrics


def load_model(path: str | Path) -> ModelFiles:
    """Read and check a model folder (format version, checksum, vocab/weights sizes)."""
    from safetensors import SafetensorError
    from safetensors.torch import load

    path = Path(path)
    header = read_header(path)
    config = TrainConfig.from_dict(header["config"], where=str(path / CONFIG))
    try:
        vocab = Vocab.from_dict(json.loads((path / VOCAB).read_text(encoding="utf-8")))
        weights = (path / WEIGHTS).read_bytes()
        metrics_file = path / METRICS
        metrics = (
            json.loads(metrics_file.read_text(encoding="utf-8")) if metrics_file.exists() else {}
        )
    except FileNotFoundError as err:
        raise TaggerError(f"{path}: missing {Path(err.filename).name}") from None
    except json.JSONDecodeError as err:
        raise TaggerError(f"{path}: a JSON file is not valid ({err})") from None
    if hashlib.sha256(weights).hexdigest() != header["weights"]["sha256"]:
        raise TaggerError(
            f"{path / WEIGHTS} does not match the checksum in {CONFIG}: the file is truncated "
            f"or was changed after training"
        )
    try:
        state = load(weights)
    except SafetensorError as err:
        raise TaggerError(f"{path / WEIGHTS}: not a readable safetensors file ({err})") from None
    if vocab.labels != header["labels"]:
        raise TaggerError(f"{path}: the labels in {VOCAB} and {CONFIG} differ")
    return ModelFiles(config, vocab, state, metrics, header.get("data", {}))


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _version() -> str:
    from tagger import __version__

    return __version__
