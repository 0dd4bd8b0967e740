"""Model folders: ``config.json``, ``vocab.json``, ``model.safetensors``, ``metrics.json``
(and optional extras such as ``training.png``, which loading never needs).

Folders are written whole into a temporary sibling and renamed into place, so a crash
never leaves a half-written model and an existing one is only replaced when asked.
Loading checks the format version, the weights' checksum and their shapes; nothing is
ever unpickled.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from tagger.config import (
    FORMAT_VERSION,
    TrainConfig,
    decode_utf8,
    json_kind,
    json_trouble,
    short_repr,
)
from tagger.errors import TaggerError
from tagger.vocab import Vocab

if TYPE_CHECKING:
    import torch

CONFIG, VOCAB, WEIGHTS, METRICS, EPOCHS = (
    "config.json",
    "vocab.json",
    "model.safetensors",
    "metrics.json",
    "epochs.jsonl",
)
PLOT = "training.png"  # optional: training curves, written by train()
TEMPERATURES = (0.05, 20.0)  # the calibration temperatures a model folder may record


@dataclass
class ModelFiles:
    """What a model folder holds, in memory."""

    config: TrainConfig
    vocab: Vocab
    state: dict[str, torch.Tensor]
    metrics: dict = field(default_factory=dict)
    data: dict = field(default_factory=dict)  # fingerprint and sizes of the training data
    temperature: float = 1.0  # calibration of the probabilities (tagger calibrate)


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
    check_replaceable(path, ("model",), overwrite, "--output")
    broken = [k for k, v in files.state.items() if v.is_floating_point() and not v.isfinite().all()]
    if broken:
        raise TaggerError(
            f"refusing to save a model with non-finite weights to {path} "
            f"({', '.join(broken[:3])}{', ...' if len(broken) > 3 else ''})"
        )
    weights = save({k: v.detach().cpu().contiguous() for k, v in files.state.items()})
    vocab = _json(files.vocab.to_dict()).encode("utf-8")
    header = {
        "format_version": FORMAT_VERSION,
        "tagger_version": _version(),
        "labels": files.vocab.labels,
        "scheme": files.config.scheme,
        "config": files.config.to_dict(),
        "data": files.data,
        "scores": {k: files.metrics.get(k) for k in ("best_epoch", "dev_f1", "test_f1")},
        "calibration_temperature": files.temperature,
        "weights": {
            "file": WEIGHTS,
            "sha256": hashlib.sha256(weights).hexdigest(),
            "values": sum(v.numel() for v in files.state.values()),
        },
        "vocab": {"file": VOCAB, "sha256": hashlib.sha256(vocab).hexdigest()},
    }
    epochs = "".join(json.dumps(e) + "\n" for e in files.metrics.get("epochs", []))
    contents = {
        **(extras or {}),
        WEIGHTS: weights,
        VOCAB: vocab,
        METRICS: _json(files.metrics).encode("utf-8"),
        EPOCHS: epochs.encode("utf-8"),
        CONFIG: _json(header).encode("utf-8"),  # last: marks the folder complete
    }
    write_dir(path, contents, f"the model to {path}")
    return path


def write_dir(path: Path, contents: dict[str, bytes], what: str) -> None:
    """Write the files ``contents`` (in order) as the folder ``path``, atomically: into a
    temporary sibling, flushed to disk, then renamed into place (``write_dir_with``). An
    ``OSError`` (disk full, no permission) becomes one ``cannot write WHAT: reason`` line."""

    def fill(tmp: Path) -> None:
        for name, content in contents.items():
            (tmp / name).write_bytes(content)

    write_dir_with(path, fill, what)


def write_dir_with(path: Path, fill: Callable[[Path], object], what: str) -> None:
    """Make the folder ``path`` atomically with ``fill``, which writes its files (and
    subfolders) into the empty folder it is given: a temporary sibling
    ``.NAME.tmp-PID-RANDOM``, flushed to disk and then renamed over ``path``
    (``replace_dir``). If anything fails the temporary folder is removed and ``path``
    is as it was; one a killed process left is removed by the next writer of ``path``.
    An ``OSError`` (disk full, no permission) becomes one ``cannot write WHAT: reason``
    line; other errors from ``fill`` pass through."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(path)  # what a killed run left behind
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-{os.getpid()}-", dir=path.parent))
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes it owner-only
        try:
            fill(tmp)
            _fsync_tree(tmp)  # a power cut must not leave a renamed but empty file
            replace_dir(tmp, path)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    except OSError as err:
        raise TaggerError(f"cannot write {what}: {err.strerror or err}") from None


def _fsync_tree(folder: Path) -> None:
    """Flush every file under ``folder`` to disk, and (best effort) the folders below it,
    so their entries survive too; links are not followed."""
    for root, dirs, files in os.walk(folder):
        for name in files:
            file = os.path.join(root, name)
            if os.path.islink(file):
                continue
            with open(file, "rb") as fh:
                os.fsync(fh.fileno())
        for name in dirs:
            _fsync_folder(Path(root) / name)


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


# ------------------------------------------------------------------ ownership, locks

MODEL_FILES = frozenset({CONFIG, VOCAB, WEIGHTS, METRICS, EPOCHS, PLOT})
CHECKPOINT_FILES = frozenset({"checkpoint.json", "state.safetensors"})
ENSEMBLE_PLAN = "ensemble.json"  # marks an ensemble run's checkpoint (work) folder
KINDS = {
    "model": "a tagger model folder",
    "checkpoint": "a tagger training checkpoint",
    "spacy": "a spaCy pipeline exported by tagger",
}


def folder_kind(path: Path) -> str | None:
    """What tagger wrote at ``path`` (a key of ``KINDS``), or None for anything else.

    Only a folder holding nothing but the files tagger writes counts: a model folder in
    which the user keeps notes, or a folder of several models, is not ours to replace."""
    if not path.is_dir() or path.is_symlink():
        return None
    try:
        names = {p.name for p in path.iterdir()}
    except OSError:
        return None
    if CONFIG in names and names <= MODEL_FILES and _json_has(path / CONFIG, "format_version"):
        return "model"
    checkpoint = "checkpoint.json" in names and names <= CHECKPOINT_FILES
    if checkpoint and _json_has(path / "checkpoint.json", "kind"):
        return "checkpoint"
    if ENSEMBLE_PLAN in names and all(
        n == ENSEMBLE_PLAN or re.fullmatch(r"\.?member-\d+(\.checkpoint)?(\.(tmp|old)-.*)?", n)
        for n in names
    ):
        return "checkpoint"
    if {"config.cfg", "meta.json"} <= names and _spacy_export(path, names):
        return "spacy"
    return None


def _empty_dir(path: Path) -> bool:
    try:
        return path.is_dir() and not path.is_symlink() and not any(path.iterdir())
    except OSError:
        return False


def _json_has(file: Path, key: str) -> bool:
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and key in data


def _spacy_export(path: Path, names: set[str]) -> bool:
    """A pipeline folder that ``export_spacy`` wrote: its meta names the tagger_ner
    component, and it holds only spaCy's files and its components' folders."""
    try:
        meta = json.loads((path / "meta.json").read_text(encoding="utf-8"))
        pipeline = list(meta.get("pipeline", []))
    except (OSError, ValueError, AttributeError, TypeError):
        return False
    names_of = [str(p) for p in pipeline]  # a component writes NAME/ or NAME.json
    allowed = {"config.cfg", "meta.json", "tokenizer", "vocab", *names_of}
    allowed |= {f"{n}.json" for n in names_of}
    return "tagger_ner" in pipeline and names <= allowed


def check_replaceable(path: Path, kinds: tuple[str, ...], overwrite: bool, flag: str) -> None:
    """Refuse to write over ``path`` unless it is absent, or is of one of ``kinds`` (what
    tagger itself wrote) and ``overwrite`` was asked for. ``flag`` names the option to
    choose another path with, for the message."""
    path = Path(path)
    recover_dir(path)
    if not path.exists() and not path.is_symlink():
        return
    kind = folder_kind(path)
    if kind in kinds or _empty_dir(path):  # an empty folder holds nothing to lose
        if not overwrite:
            raise TaggerError(f"{path} already exists; pass --overwrite to replace it")
        return
    if path.is_symlink():
        what = "a symbolic link"
    elif path.is_dir():
        what = "a folder"
        try:
            names = sorted(p.name for p in path.iterdir())
        except OSError:
            names = []
        if names:  # the files that are not tagger's first: those are why
            ours = MODEL_FILES | CHECKPOINT_FILES | {ENSEMBLE_PLAN}
            names = [n for n in names if n not in ours] + [n for n in names if n in ours]
            listing = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
            what = f"a folder of other files ({listing})"
    else:
        what = "a file" if path.is_file() else "something else"
    wanted = " or ".join(KINDS[k] for k in kinds)
    raise TaggerError(
        f"{path} is {what}, not {wanted}; tagger replaces only what it wrote itself, "
        f"even with --overwrite: choose another {flag}"
    )


class OutputLock:
    """An exclusive OS lock (``flock``) on ``.NAME.lock`` beside an output path: one run
    owns the output (and its checkpoint) at a time. The kernel releases it when the
    process dies, so a crashed run never blocks the next one."""

    def __init__(self, output: Path, what: str = "training run") -> None:
        output = Path(output).absolute()
        if not output.name:  # "/": no sibling to lock, no parent to write into
            raise TaggerError(f"{output} cannot be an output folder; choose another --output")
        self.file = output.with_name(f".{output.name}.lock")
        self.output = output
        self.what = what
        self._fd: int | None = None

    def acquire(self) -> OutputLock:
        import fcntl

        while True:
            try:
                self.file.parent.mkdir(parents=True, exist_ok=True)
                fd = os.open(self.file, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as err:
                raise TaggerError(f"cannot lock {self.output}: {err.strerror or err}") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise TaggerError(
                    f"{self.output} is in use by another {self.what} (locked through "
                    f"{self.file}); wait for it to end or choose another --output"
                ) from None
            # The previous owner removes the file as it lets go: if our file was removed
            # between open and flock, we locked a dead inode; take the lock again.
            try:
                same = os.stat(self.file).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                self._fd = fd
                os.ftruncate(fd, 0)
                os.write(fd, f"{os.getpid()}\n".encode())
                return self
            os.close(fd)

    def release(self) -> None:
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            self.file.unlink()
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> OutputLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _read_bytes(file: Path, missing: str | None = None, optional: bool = False) -> bytes | None:
    """A file's bytes (None for a missing ``optional`` one); a missing file, a folder in
    its place or an ``OSError`` is one ``TaggerError`` line naming it."""
    try:
        return file.read_bytes()
    except FileNotFoundError:
        if optional:
            return None
        raise TaggerError(missing or f"{file}: no such file") from None
    except IsADirectoryError:
        raise TaggerError(f"{file} is a folder, not a file") from None
    except OSError as err:
        raise TaggerError(f"cannot read {file}: {err.strerror or err}") from None


def _parse_json(raw: bytes, file: Path):
    """``raw`` (the bytes of ``file``) as JSON: empty, not UTF-8 or not JSON is one line."""
    if not raw.strip():
        raise TaggerError(f"{file} is empty")
    text = decode_utf8(raw, file)
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise TaggerError(f"{file}: not valid JSON ({err})") from None
    except (ValueError, RecursionError) as err:  # a 5000-digit number, [[[[...]]]]
        raise TaggerError(f"{file}: not valid JSON ({json_trouble(err)})") from None


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    """A JSON number a float can hold (nan and inf included)."""
    if _is_int(value):
        return abs(value) < 2**63
    return isinstance(value, float)


def _expect(ok: bool, file: Path, key: str, what: str, value) -> None:
    if not ok:
        raise TaggerError(f"{file}: {key} must be {what}, not {short_repr(value)}")


def read_header(path: str | Path) -> dict:
    """``config.json`` of a model folder, after checking it is one of ours, not newer than
    this tagger, and that its parts have the types tagger writes."""
    path = Path(path)
    file = path / CONFIG
    try:
        recover_dir(path)
        if not path.exists():
            raise TaggerError(f"{path}: no such model folder; train one with `tagger train`")
        if not path.is_dir() or not (file.exists() or file.is_symlink()):
            raise TaggerError(f"{path} is not a tagger model folder (no {CONFIG})")
    except OSError as err:
        raise TaggerError(f"cannot read {path}: {err.strerror or err}") from None
    header = _parse_json(_read_bytes(file), file)
    if not isinstance(header, dict):
        raise TaggerError(f"{file}: expected a JSON object, not {json_kind(header)}")
    if "format_version" not in header:
        raise TaggerError(f"{file} is incomplete: no format_version")
    version = header["format_version"]
    _expect(_is_int(version) and version >= 1, file, "format_version", "1 or more", version)
    if version > FORMAT_VERSION:
        by = header.get("tagger_version")
        by = f" (it was written by tagger {by})" if isinstance(by, str) and len(by) < 40 else ""
        raise TaggerError(
            f"{path} has model format version {short_repr(version)}, newer than this tagger "
            f"({_version()}) reads ({FORMAT_VERSION}): upgrade tagger to load it{by}"
        )
    missing = [k for k in ("config", "labels", "weights") if k not in header]
    if not missing and isinstance(header["weights"], dict) and "sha256" not in header["weights"]:
        missing = ["weights.sha256"]
    if missing:
        raise TaggerError(f"{file} is incomplete: no {', '.join(missing)}")
    labels = header["labels"]
    is_labels = isinstance(labels, list) and all(isinstance(t, str) for t in labels)
    _expect(is_labels, file, "labels", "a list of strings", labels)
    for key in ("config", "weights", "vocab", "data", "scores"):
        if key in header:
            _expect(isinstance(header[key], dict), file, key, "an object", header[key])
    for key in ("weights", "vocab"):
        if key in header:
            if "sha256" not in header[key]:
                raise TaggerError(f"{file} is incomplete: no {key}.sha256")
            digest = header[key]["sha256"]
            ok = isinstance(digest, str) and re.fullmatch(r"[0-9a-f]{64}", digest) is not None
            _expect(ok, file, f"{key}.sha256", "a SHA-256 in hex", digest)
    for key in ("scheme", "tagger_version"):
        if key in header:
            _expect(isinstance(header[key], str), file, key, "a string", header[key])
    if "calibration_temperature" in header:  # older folders: 1 (uncalibrated)
        value = header["calibration_temperature"]
        ok = _is_number(value) and TEMPERATURES[0] <= value <= TEMPERATURES[1]
        bounds = f"a number from {TEMPERATURES[0]:g} to {TEMPERATURES[1]:g}"
        _expect(ok, file, "calibration_temperature", bounds, value)
    return header


def _check_metrics(metrics, file: Path) -> dict:
    """``metrics.json`` has the shape that ``compare`` and ``plot`` read."""
    if not isinstance(metrics, dict):
        raise TaggerError(f"{file}: expected a JSON object, not {json_kind(metrics)}")
    for key in ("best_epoch", "parameters"):
        value = metrics.get(key)
        _expect(value is None or _is_int(value), file, key, "a whole number or null", value)
    for key in ("dev_f1", "test_f1", "seconds"):
        value = metrics.get(key)
        _expect(value is None or _is_number(value), file, key, "a number or null", value)
    if "interrupted" in metrics:
        value = metrics["interrupted"]
        _expect(isinstance(value, bool), file, "interrupted", "true or false", value)
    for split in ("dev", "test"):
        scores = metrics.get(split)
        _expect(scores is None or isinstance(scores, dict), file, split, "an object", scores)
        per_type = (scores or {}).get("per_type", {})
        ok = isinstance(per_type, dict) and all(
            isinstance(s, dict) and _is_number(s.get("f1")) for s in per_type.values()
        )
        _expect(ok, file, f"{split}.per_type", "an object of {f1: number} objects", per_type)
    _check_epochs(metrics.get("epochs", []), file, "epochs")
    members = metrics.get("members", [])
    _expect(isinstance(members, list), file, "members", "a list", members)
    for i, member in enumerate(members):
        _expect(isinstance(member, dict), file, f"members[{i}]", "an object", member)
        _check_epochs(member.get("epochs", []), file, f"members[{i}].epochs")
    best, epochs = metrics.get("best_epoch"), metrics.get("epochs", [])
    if best and epochs and best not in [e["epoch"] for e in epochs]:
        raise TaggerError(f"{file}: best_epoch {best} is not one of the epochs")
    return metrics


def _check_epochs(epochs, file: Path, key: str) -> None:
    _expect(isinstance(epochs, list), file, key, "a list", epochs)
    for i, epoch in enumerate(epochs):
        _expect(isinstance(epoch, dict), file, f"{key}[{i}]", "an object", epoch)
        value = epoch.get("epoch")
        ok = _is_int(value) and 0 <= value < 2**31
        _expect(ok, file, f"{key}[{i}].epoch", "a whole number 0 or more", value)
        for name in ("loss", "dev_f1", "seconds"):
            value = epoch.get(name)
            _expect(_is_number(value), file, f"{key}[{i}].{name}", "a number", value)


def read_metrics(path: str | Path) -> tuple[dict, dict]:
    """The header and ``metrics.json`` of a model folder, without the weights
    (``tagger compare`` and ``tagger plot`` need no torch model)."""
    path = Path(path)
    header = read_header(path)
    file = path / METRICS
    metrics = _parse_json(_read_bytes(file, missing=f"{path}: missing {METRICS}"), file)
    return header, _check_metrics(metrics, file)


def load_model(path: str | Path) -> ModelFiles:
    """Read and check a model folder: format version, every file's shape and types, the
    checksums of the weights (and of the vocabulary, in folders that record it) and that
    the labels agree. Whether the weights fit the config is ``Tagger.load``'s check."""
    from safetensors import SafetensorError
    from safetensors.torch import load

    path = Path(path)
    header = read_header(path)
    config = TrainConfig.from_dict(header["config"], where=str(path / CONFIG))
    if header.get("scheme", config.scheme) != config.scheme:
        raise TaggerError(
            f"{path / CONFIG}: scheme {short_repr(header['scheme'])} differs from the "
            f"config's scheme {config.scheme!r}"
        )
    raw = _read_bytes(path / VOCAB, missing=f"{path}: missing {VOCAB}")
    if "vocab" in header and hashlib.sha256(raw).hexdigest() != header["vocab"]["sha256"]:
        raise TaggerError(
            f"{path / VOCAB} does not match the checksum in {CONFIG}: the file is truncated "
            f"or was changed after training"
        )
    vocab = Vocab.from_dict(_parse_json(raw, path / VOCAB), where=str(path / VOCAB))
    weights = _read_bytes(path / WEIGHTS, missing=f"{path}: missing {WEIGHTS}")
    if hashlib.sha256(weights).hexdigest() != header["weights"]["sha256"]:
        raise TaggerError(
            f"{path / WEIGHTS} does not match the checksum in {CONFIG}: the file is truncated "
            f"or was changed after training"
        )
    try:
        state = load(weights)
    except (SafetensorError, ValueError, TypeError) as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise TaggerError(f"{path / WEIGHTS}: not a readable safetensors file ({reason})") from None
    values = header["weights"].get("values")
    if values is not None and values != sum(t.numel() for t in state.values()):
        raise TaggerError(
            f"{path / CONFIG}: weights.values {short_repr(values)} is not the number of "
            f"values in {WEIGHTS}"
        )
    if vocab.labels != header["labels"]:
        raise TaggerError(f"{path}: the labels in {VOCAB} and {CONFIG} differ")
    file = path / METRICS
    raw = _read_bytes(file, optional=True)  # loading does not need it
    metrics = {} if raw is None else _check_metrics(_parse_json(raw, file), file)
    temperature = float(header.get("calibration_temperature", 1.0))
    return ModelFiles(config, vocab, state, metrics, header.get("data", {}), temperature)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _version() -> str:
    from tagger import __version__

    return __version__


# ------------------------------------------------------------------ single output files
# Every output file is written here: into a temporary sibling named
# ``.NAME.tmp-PID-RANDOM``, flushed to disk, then renamed over NAME, so a crash leaves
# either the old file or the new one, never half of one. A writer killed outright
# (SIGKILL, power cut) cannot clean up: the next writer of NAME removes what it left.


def temporary_sibling(path: Path) -> Path:
    """A fresh name ``.NAME.tmp-PID-RANDOM`` beside ``path`` (files and folders alike)."""
    path = Path(path)
    return path.with_name(f".{path.name}.tmp-{os.getpid()}-{os.urandom(4).hex()}")


def remove_stale_temporaries(path: Path) -> None:
    """Delete the siblings ``.NAME.tmp-PID-*`` of ``path`` (files or folders) that a
    killed process PID left behind. Those of running processes, this one included, are
    left alone; what cannot be removed (no permission) is skipped."""
    path = Path(path)
    prefix = f".{path.name}.tmp-"
    try:
        entries = [e for e in os.scandir(path.parent) if e.name.startswith(prefix)]
    except OSError:
        return
    for entry in entries:
        pid, sep, rest = entry.name[len(prefix) :].partition("-")
        if not (sep and rest and pid.isdigit()) or _process_alive(int(pid)):
            continue
        try:
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path)
            else:
                os.unlink(entry.path)
        except OSError:
            pass  # not ours to remove, or another run removed it first


def _process_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):
        return False
    except OSError:  # EPERM: alive, but another user's
        return True
    return True


def check_output_file(
    path: str | Path | None, inputs=(), flag: str = "--output", overwrite: bool | None = None
) -> None:
    """Refuse at once, before any work, an output file that would destroy one of
    ``inputs`` (the same file under any name: symlinks, hard links), that is a folder,
    whose folder is missing, or (``overwrite`` False) that exists as a regular file: the
    user's file is replaced only when asked. ``None`` or ``-`` is standard output:
    refused only when it is redirected into one of ``inputs``."""
    if path is None or str(path) == "-":
        import sys

        try:
            fd = sys.stdout.fileno()
            regular = _is_regular(os.fstat(fd).st_mode)
        except (AttributeError, ValueError, OSError):
            return
        for item in inputs if regular else ():
            if _same_file(fd, item):
                raise TaggerError(
                    f"standard output is the input {item}: writing it would destroy it; "
                    f"redirect the output elsewhere or give {flag}"
                )
        return
    path = Path(path)
    for item in inputs:
        if _same_file(path, item):
            raise TaggerError(
                f"{flag} {path} is the input {item}: writing it would destroy it; "
                f"choose another {flag}"
            )
    if path.is_dir():
        raise TaggerError(f"cannot write {path}: it is a folder; give {flag} a file name")
    if overwrite is False and path.is_file():
        raise TaggerError(f"{path} already exists; pass --overwrite to replace it")
    parent = _target(path).parent
    if not parent.is_dir():
        above = parent
        while not above.exists() and above != above.parent:
            above = above.parent
        reason = (
            f"{above} is a file, not a folder"
            if above.exists() and not above.is_dir()
            else f"the folder {parent} does not exist"
        )
        raise TaggerError(f"cannot write {path}: {reason}")


def _is_regular(mode: int) -> bool:
    import stat

    return stat.S_ISREG(mode)


def _same_file(a, b) -> bool:
    """Whether ``a`` and ``b`` (paths or open file descriptors) are one file."""
    try:
        sa, sb = os.stat(a), os.stat(b)
    except (OSError, ValueError):
        return False
    return (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)


def _target(path: Path) -> Path:
    """What writing ``path`` should change: the file a symlink points to, or ``path``."""
    return Path(os.path.realpath(path)) if path.is_symlink() else path


class AtomicWriter:
    """One output file, written whole or not at all.

    The temporary sibling is created at once, so a folder that cannot be written is
    reported before any work. ``write`` takes text (written as UTF-8) or bytes;
    ``commit`` flushes to disk and renames into place, keeping an old file's permission
    bits; leaving the ``with`` block by an exception removes the temporary and leaves an
    old file as it was. A symlink is written through (the file it points to is
    replaced); a device or pipe (``/dev/null``) is written into, never replaced.
    ``None`` or ``-`` is standard output, written as it comes (its errors are raised
    as they are, for the CLI to report). Other ``OSError``s become one
    ``cannot write PATH: reason`` ``TaggerError``.
    """

    def __init__(self, path: str | Path | None) -> None:
        self.path = None if path is None or str(path) == "-" else Path(path)
        self._file = None
        self._tmp: Path | None = None
        if self.path is None:
            return
        self._target = _target(self.path)
        try:
            if self._target.exists() and not (self._target.is_file() or self._target.is_dir()):
                self._file = open(self._target, "wb")  # noqa: SIM115 (closed by commit)
                return
            mode = None
            if self._target.is_file():
                if not os.access(self._target, os.W_OK):  # read-only: the user protects it
                    import errno

                    raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))
                mode = os.stat(self._target).st_mode & 0o7777
            remove_stale_temporaries(self._target)
            while self._tmp is None:
                tmp = temporary_sibling(self._target)
                try:
                    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
                except FileExistsError:
                    continue
                self._tmp = tmp
            try:
                if mode is not None:
                    os.fchmod(fd, mode)
                self._file = os.fdopen(fd, "wb")
            except BaseException:
                os.close(fd)
                raise
        except OSError as err:
            self.discard()
            raise self._error(err) from None
        except BaseException:
            self.discard()
            raise

    def write(self, chunk: str | bytes) -> None:
        if self.path is None:
            import sys

            sys.stdout.write(chunk)
            return
        data = chunk.encode("utf-8") if isinstance(chunk, str) else chunk
        try:
            self._file.write(data)
        except OSError as err:
            self.discard()
            raise self._error(err) from None

    def commit(self) -> None:
        """Make the output the written file (or flush standard output)."""
        if self.path is None:
            import sys

            sys.stdout.flush()
            return
        try:
            self._file.flush()
            if self._tmp is not None:
                os.fsync(self._file.fileno())  # a power cut must not leave an empty file
            self._file.close()
            self._file = None
            if self._tmp is not None:
                os.replace(self._tmp, self._target)
                self._tmp = None
                _fsync_folder(self._target.parent)
        except OSError as err:
            self.discard()
            raise self._error(err) from None

    def discard(self) -> None:
        """Remove the temporary; an old output stays as it was."""
        if self._file is not None:
            with contextlib.suppress(OSError):
                self._file.close()
            self._file = None
        if self._tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(self._tmp)
            self._tmp = None

    def _error(self, err: OSError) -> TaggerError:
        return TaggerError(f"cannot write {self.path}: {err.strerror or err}")

    def __enter__(self) -> AtomicWriter:
        return self

    def __exit__(self, kind, value, tb) -> None:
        if kind is None:
            self.commit()
        else:
            self.discard()


def write_atomic(chunks, output: str | Path | None) -> None:
    """Write ``chunks`` (text or bytes) to the file ``output`` atomically (see
    ``AtomicWriter``), or to standard output for ``None`` or ``-``."""
    with AtomicWriter(output) as out:
        for chunk in chunks:
            out.write(chunk)


def _fsync_folder(folder: Path) -> None:
    """Make a rename in ``folder`` durable (best effort: not every file system can)."""
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
