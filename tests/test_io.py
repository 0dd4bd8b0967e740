"""Model folders: contents, atomic save, overwrite rules, and every load check."""

from __future__ import annotations

import hashlib
import json
import os
import shutil

import pytest
import torch
from safetensors.torch import load_file

from tagger.config import FORMAT_VERSION
from tagger.errors import TaggerError
from tagger.io import load_model, read_header, save_model
from tagger.predict import Tagger

FILES = {"config.json", "vocab.json", "model.safetensors", "metrics.json", "epochs.jsonl"}
PROBE = [
    ["Angela", "Merkel", "visited", "Paris", "on", "Monday", "."],
    ["Shares", "of", "Globex", "rose", "."],
    ["Wei", "Chen"],
]


@pytest.fixture
def model_copy(trained_model, tmp_path):
    dst = tmp_path / "model"
    shutil.copytree(trained_model, dst)
    return dst


def load_error(path) -> str:
    with pytest.raises(TaggerError) as err:
        Tagger.load(path)
    return str(err.value)


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_folder_contents(trained_model):
    assert {p.name for p in trained_model.iterdir()} == FILES | {
        "training.png"
    }  # no pickles, no temp files
    header = json.loads((trained_model / "config.json").read_text())
    assert header["format_version"] == FORMAT_VERSION
    labels = [f"{p}-{t}" for t in ("LOC", "ORG", "PER") for p in "BIES"]
    assert header["labels"] == ["O", *labels]
    assert header["scheme"] == "BIOES"
    assert header["config"]["decoder"] == "crf"
    assert len(header["data"]["fingerprint"]) == 64
    assert header["data"]["sentences"] == {"train": 60, "validation": 15, "test": 15}
    assert set(header["scores"]) == {"best_epoch", "dev_f1", "test_f1"}
    weights = (trained_model / "model.safetensors").read_bytes()
    assert header["weights"]["sha256"] == hashlib.sha256(weights).hexdigest()
    state = load_file(trained_model / "model.safetensors")
    assert header["weights"]["values"] == sum(t.numel() for t in state.values())
    metrics = json.loads((trained_model / "metrics.json").read_text())
    assert metrics["best_epoch"] == header["scores"]["best_epoch"]
    assert metrics["dev_f1"] == header["scores"]["dev_f1"]
    lines = (trained_model / "epochs.jsonl").read_text().splitlines()
    assert len(lines) == len(metrics["epochs"]) >= 1
    assert [json.loads(line) for line in lines] == metrics["epochs"]
    assert [json.loads(line)["epoch"] for line in lines] == list(range(1, len(lines) + 1))
    vocab = json.loads((trained_model / "vocab.json").read_text())
    assert vocab["labels"] == header["labels"] and vocab["words"][:2] == ["<pad>", "<unk>"]


def test_save_load_round_trip(tagger_model, tmp_path):
    path = tagger_model.save(tmp_path / "copy")
    assert {p.name for p in path.iterdir()} == FILES
    again = Tagger.load(path, device="cpu")
    original_state = tagger_model.model.state_dict()
    for name, tensor in again.model.state_dict().items():
        assert torch.equal(tensor, original_state[name]), name
    assert again.vocab == tagger_model.vocab
    assert again.config == tagger_model.config
    assert again.metrics == tagger_model.metrics
    assert again.data == tagger_model.data
    assert again.predict(PROBE) == tagger_model.predict(PROBE)
    _, p1 = again.predict_with_scores(PROBE)
    _, p2 = tagger_model.predict_with_scores(PROBE)
    assert all((a == b).all() for a, b in zip(p1, p2))
    assert [p.name for p in tmp_path.iterdir()] == ["copy"]  # nothing left behind


def test_save_refuses_existing_model(tagger_model, trained_model, tmp_path):
    target = tmp_path / "existing"
    shutil.copytree(trained_model, target)
    with pytest.raises(TaggerError) as err:
        tagger_model.save(target)
    assert str(err.value) == f"{target} already exists; pass --overwrite to replace it"
    assert [p.name for p in tmp_path.iterdir()] == ["existing"]


@pytest.mark.parametrize("overwrite", [False, True])
def test_save_never_replaces_a_folder_of_other_files(tagger_model, tmp_path, overwrite):
    target = tmp_path / "existing"
    target.mkdir()
    (target / "keep.txt").write_text("precious")
    with pytest.raises(TaggerError, match="is a folder of other files .keep.txt., not a tagger"):
        tagger_model.save(target, overwrite=overwrite)
    assert [p.name for p in target.iterdir()] == ["keep.txt"]
    assert (target / "keep.txt").read_text() == "precious"
    assert [p.name for p in tmp_path.iterdir()] == ["existing"]


def test_save_never_replaces_a_file(tagger_model, tmp_path):
    target = tmp_path / "notes.txt"
    target.write_text("precious")
    with pytest.raises(TaggerError, match="is a file, not a tagger model folder"):
        tagger_model.save(target, overwrite=True)
    assert target.read_text() == "precious"


def test_overwrite_replaces_model_folder(tagger_model, trained_model, tmp_path):
    target = tmp_path / "existing"
    target.mkdir()  # an empty folder holds nothing to lose
    tagger_model.save(target, overwrite=True)
    tagger_model.save(target, overwrite=True)
    assert {p.name for p in target.iterdir()} == FILES
    assert [p.name for p in tmp_path.iterdir()] == ["existing"]  # old copy and temp removed
    assert Tagger.load(target).predict(PROBE) == tagger_model.predict(PROBE)


def test_model_folder_permissions_follow_umask(trained_model):
    assert trained_model.stat().st_mode & 0o777 == 0o777 & ~current_umask()


def test_load_missing_folder(tmp_path):
    assert load_error(tmp_path / "nope") == (
        f"{tmp_path / 'nope'}: no such model folder; train one with `tagger train`"
    )


def test_load_folder_without_config(model_copy, tmp_path):
    (model_copy / "config.json").unlink()
    assert load_error(model_copy) == f"{model_copy} is not a tagger model folder (no config.json)"
    assert load_error(tmp_path) == f"{tmp_path} is not a tagger model folder (no config.json)"


def test_load_wrong_format_version(model_copy):
    header = json.loads((model_copy / "config.json").read_text())
    header["format_version"] = 99
    header["tagger_version"] = "9.0.0"
    (model_copy / "config.json").write_text(json.dumps(header))
    assert load_error(model_copy) == (
        f"{model_copy} has model format version 99, newer than this tagger (0.1.0) reads (1): "
        "upgrade tagger to load it (it was written by tagger 9.0.0)"
    )


def test_load_config_not_json(model_copy):
    (model_copy / "config.json").write_text("{not json")
    assert load_error(model_copy).startswith(f"{model_copy / 'config.json'}: not valid JSON (")


def test_load_config_missing_keys(model_copy):
    (model_copy / "config.json").write_text(json.dumps({"format_version": FORMAT_VERSION}))
    with pytest.raises(TaggerError):
        load_model(model_copy)


def test_load_truncated_weights(model_copy):
    weights = model_copy / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    assert load_error(model_copy) == (
        f"{weights} does not match the checksum in config.json: the file is truncated or was "
        "changed after training"
    )


def test_load_edited_weights(model_copy):
    weights = model_copy / "model.safetensors"
    raw = bytearray(weights.read_bytes())
    raw[-1] ^= 0x01  # one bit of one float
    weights.write_bytes(bytes(raw))
    assert "does not match the checksum in config.json" in load_error(model_copy)


def test_load_missing_weights_or_vocab(model_copy):
    (model_copy / "model.safetensors").unlink()
    assert load_error(model_copy) == f"{model_copy}: missing model.safetensors"
    (model_copy / "vocab.json").unlink()
    assert load_error(model_copy) == f"{model_copy}: missing vocab.json"


def test_load_vocab_with_other_labels(model_copy):
    vocab = json.loads((model_copy / "vocab.json").read_text())
    vocab["labels"] = vocab["labels"][::-1]
    (model_copy / "vocab.json").write_text(json.dumps(vocab))
    assert load_error(model_copy) == (
        f"{model_copy / 'vocab.json'} does not match the checksum in config.json: the file is "
        "truncated or was changed after training"
    )
    header = json.loads((model_copy / "config.json").read_text())
    del header["vocab"]  # a folder from before vocab.json had a checksum
    (model_copy / "config.json").write_text(json.dumps(header))
    assert (
        load_error(model_copy) == f"{model_copy}: the labels in vocab.json and config.json differ"
    )


def test_load_weights_that_do_not_fit(model_copy):
    header = json.loads((model_copy / "config.json").read_text())
    header["config"]["hidden_size"] += 1
    (model_copy / "config.json").write_text(json.dumps(header))
    assert load_error(model_copy).startswith(
        f"{model_copy / 'model.safetensors'}: the weights do not fit the vocabulary/config "
        "(encoder.rnn.weight_ih_l0 is 64x28, the config and vocabulary need 68x28; "
    )


def test_save_model_directly_and_read_header(trained_model, tmp_path):
    files = load_model(trained_model)
    out = save_model(tmp_path / "a" / "b", files)  # parents are created
    assert read_header(out)["weights"] == read_header(trained_model)["weights"]
    assert load_model(out).state.keys() == files.state.keys()


# A fresh interpreter re-saves the model at ARGV[1] over ARGV[2] and dies (os._exit, no
# clean-up of any kind) at the moment ARGV[3] names: the crash the atomic save guards against.
CRASHER = """
import os, sys
from pathlib import Path
import tagger.io as io
from tagger.predict import Tagger

source, target, when = sys.argv[1:]
if when == "writing":  # half of the weights written into the temporary folder
    real_write = Path.write_bytes
    def write_bytes(self, data):
        real_write(self, data[: len(data) // 2])
        os._exit(9)
    Path.write_bytes = write_bytes
else:  # between setting the old folder aside and moving the new one in
    real_replace = os.replace
    calls = []
    def replace(a, b):
        calls.append(1)
        if len(calls) == 2:
            os._exit(9)
        real_replace(a, b)
    io.os.replace = replace
Tagger.load(source).save(target, overwrite=True)
"""


@pytest.mark.parametrize("when", ["writing", "renaming"])
def test_crash_mid_save_keeps_the_previous_model(trained_model, model_copy, tmp_path, python, when):
    import subprocess

    before = Tagger.load(model_copy).predict(PROBE)
    proc = subprocess.run(
        [python, "-c", CRASHER, str(trained_model), str(model_copy), when],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 9, proc.stderr
    if when == "renaming":
        assert not model_copy.exists()  # the crash left it set aside ...
    again = Tagger.load(model_copy)  # ... and loading puts it back
    assert again.predict(PROBE) == before
    assert {p.name for p in model_copy.iterdir()} >= FILES
    assert not list(tmp_path.glob(".model.old-*"))


def test_disk_full_is_one_line_and_keeps_the_model(tagger_model, model_copy, monkeypatch):
    import errno
    from pathlib import Path

    def full(self, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self))

    monkeypatch.setattr(Path, "write_bytes", full)
    with pytest.raises(TaggerError) as err:
        tagger_model.save(model_copy, overwrite=True)
    assert str(err.value) == f"cannot write the model to {model_copy}: No space left on device"
    monkeypatch.undo()
    assert Tagger.load(model_copy).predict(PROBE) == tagger_model.predict(PROBE)
    assert [p.name for p in model_copy.parent.iterdir()] == ["model"]  # no temp folder left


def test_permission_denied_is_one_line(tagger_model):
    # /sys refuses new folders even to root: a real EPERM, not a mock.
    if not os.path.isdir("/sys/kernel"):
        pytest.skip("no /sys here")
    with pytest.raises(TaggerError) as err:
        tagger_model.save("/sys/kernel/tagger-model")
    assert str(err.value) == "cannot write the model to /sys/kernel/tagger-model: " + (
        "Operation not permitted"
    )


def test_write_dir_with_fills_a_temporary_sibling_and_renames_it(tmp_path):
    from tagger.io import write_dir_with

    out = tmp_path / "out"
    (tmp_path / ".out.tmp-999999-abc").mkdir()  # a dead writer's leftover: removed
    seen = []

    def fill(folder):
        seen.append(folder.name)
        assert folder.parent == tmp_path and not any(folder.iterdir())
        (folder / "sub").mkdir()
        (folder / "sub" / "a.txt").write_text("a")
        (folder / "b.txt").write_text("b")

    write_dir_with(out, fill, "the thing")
    assert seen[0].startswith(f".out.tmp-{os.getpid()}-")
    assert (out / "sub" / "a.txt").read_text() == "a" and (out / "b.txt").read_text() == "b"
    assert [p.name for p in tmp_path.iterdir()] == ["out"]
    assert out.stat().st_mode & 0o777 == 0o777 & ~_umask()


def test_write_dir_with_failure_keeps_the_old_folder(tmp_path):
    import errno

    from tagger.io import write_dir_with

    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("old")

    def full(folder):
        (folder / "half").write_text("x")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with pytest.raises(TaggerError) as err:
        write_dir_with(out, full, f"the thing to {out}")
    assert str(err.value) == f"cannot write the thing to {out}: No space left on device"

    def broken(folder):
        raise ValueError("not an OSError")

    with pytest.raises(ValueError, match="not an OSError"):  # passes through as it is
        write_dir_with(out, broken, "the thing")
    assert [p.name for p in tmp_path.iterdir()] == ["out"]
    assert [p.name for p in out.iterdir()] == ["old.txt"]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
