"""A damaged model folder (or checkpoint) of any shape is one error line naming the file."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from tagger.errors import TaggerError
from tagger.io import read_metrics
from tagger.predict import Tagger

JSON_FILES = ["config.json", "vocab.json", "metrics.json"]
FILES = [*JSON_FILES, "model.safetensors"]


@pytest.fixture
def model(trained_model, tmp_path) -> Path:
    dst = tmp_path / "model"
    shutil.copytree(trained_model, dst)
    return dst


def load_error(path, *, metrics: bool = False) -> str:
    """The one-line error of ``Tagger.load`` (or of ``read_metrics``)."""
    with pytest.raises(TaggerError) as err:
        read_metrics(path) if metrics else Tagger.load(path, device="cpu")
    message = str(err.value)
    assert "\n" not in message, message
    return message


def read(model: Path, name: str):
    return json.loads((model / name).read_text(encoding="utf-8"))


def write(model: Path, name: str, data) -> None:
    (model / name).write_text(json.dumps(data), encoding="utf-8")


def write_vocab(model: Path, vocab) -> None:
    """Write vocab.json and record its checksum in config.json: the damage then reaches
    the vocabulary's own checks instead of the checksum."""
    write(model, "vocab.json", vocab)
    header = read(model, "config.json")
    raw = (model / "vocab.json").read_bytes()
    header["vocab"]["sha256"] = hashlib.sha256(raw).hexdigest()
    write(model, "config.json", header)


def test_the_folder_loads_and_records_the_vocab_checksum(model):
    header = read(model, "config.json")
    raw = (model / "vocab.json").read_bytes()
    assert header["vocab"] == {"file": "vocab.json", "sha256": hashlib.sha256(raw).hexdigest()}
    Tagger.load(model, device="cpu")


def test_a_folder_without_the_vocab_checksum_still_loads(model):
    header = read(model, "config.json")
    del header["vocab"]  # written by a tagger from before the checksum
    write(model, "config.json", header)
    assert Tagger.load(model, device="cpu").vocab.labels == header["labels"]


# ------------------------------------------------------------------ whole files


@pytest.mark.parametrize("name", FILES)
@pytest.mark.parametrize("damage", ["missing", "empty", "garbage", "folder"])
def test_damaged_file(model, name, damage):
    file = model / name
    file.unlink()
    if damage == "empty":
        file.write_bytes(b"")
    elif damage == "garbage":
        file.write_bytes(b"\xff\xfe garbage")
    elif damage == "folder":
        file.mkdir()
    if name == "metrics.json" and damage == "missing":
        Tagger.load(model, device="cpu")  # loading does not need it ...
        assert (
            load_error(model, metrics=True) == f"{model}: missing metrics.json"
        )  # ... compare does
        return
    message = load_error(model)
    assert name in message
    expected = {
        "missing": f"{model}: missing {name}",
        "empty": f"{file} is empty",
        "garbage": f"{file}:1: not UTF-8 text (byte 0xff at offset 0)",
        "folder": f"{file} is a folder, not a file",
    }[damage]
    if name == "config.json" and damage == "missing":
        expected = f"{model} is not a tagger model folder (no config.json)"
    if name == "vocab.json" and damage in ("empty", "garbage"):
        expected = f"{file} does not match the checksum in config.json: " + (
            "the file is truncated or was changed after training"
        )
    if name == "model.safetensors" and damage in ("empty", "garbage"):
        expected = f"{file} does not match the checksum in config.json: " + (
            "the file is truncated or was changed after training"
        )
    assert message == expected
    if name in ("config.json", "metrics.json"):  # what compare and plot read
        assert name in load_error(model, metrics=True)


@pytest.mark.parametrize("name", JSON_FILES)
@pytest.mark.parametrize("value", [[], "x", 5, None, True, {}])
def test_json_of_the_wrong_type(model, name, value):
    if name == "vocab.json":
        write_vocab(model, value)
    else:
        write(model, name, value)
    if name == "metrics.json" and value == {}:
        Tagger.load(model, device="cpu")  # an empty object is fine (nothing to report)
        return
    message = load_error(model)
    if name == "config.json" and value == {}:
        assert message == f"{model / name} is incomplete: no format_version"
    elif name == "vocab.json" and value == {}:
        assert message == f"{model / name}: vocabulary format version None is not supported " + (
            "(this tagger reads versions 1, 2)"
        )
    else:
        assert message.startswith(f"{model / name}: ")
        assert "must be a JSON object" in message or "expected a JSON object" in message


def test_config_not_json(model):
    (model / "config.json").write_text("{not json")
    assert load_error(model).startswith(f"{model / 'config.json'}: not valid JSON (")


@pytest.mark.parametrize("name", ["vocab.json", "metrics.json"])
def test_not_json_after_a_good_config(model, name):
    if name == "vocab.json":
        header = read(model, "config.json")
        del header["vocab"]
        write(model, "config.json", header)
    (model / name).write_text('{"words": [1, 2')
    assert load_error(model).startswith(f"{model / name}: not valid JSON (")


def test_cannot_read(model, monkeypatch):
    real = Path.read_bytes

    def denied(self):
        if self.name == "vocab.json":
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(self))
        return real(self)

    monkeypatch.setattr(Path, "read_bytes", denied)
    assert load_error(model) == f"cannot read {model / 'vocab.json'}: Permission denied"


def test_a_file_instead_of_a_folder(model):
    assert load_error(model / "config.json") == (
        f"{model / 'config.json'} is not a tagger model folder (no config.json)"
    )


# ------------------------------------------------------------------ config.json


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("format_version", "1", "format_version must be 1 or more, not '1'"),
        ("format_version", 0, "format_version must be 1 or more, not 0"),
        ("format_version", True, "format_version must be 1 or more, not True"),
        ("format_version", None, "format_version must be 1 or more, not None"),
        ("labels", "O", "labels must be a list of strings, not 'O'"),
        ("labels", [1, 2], "labels must be a list of strings, not [1, 2]"),
        ("config", [], "config must be an object, not []"),
        ("weights", "abc", "weights must be an object, not 'abc'"),
        ("weights", {}, "is incomplete: no weights.sha256"),
        ("weights", {"sha256": 5}, "weights.sha256 must be a SHA-256 in hex, not 5"),
        ("vocab", {"sha256": "00"}, "vocab.sha256 must be a SHA-256 in hex, not '00'"),
        ("vocab", [], "vocab must be an object, not []"),
        ("data", "x", "data must be an object, not 'x'"),
        ("scores", [], "scores must be an object, not []"),
        ("scheme", 5, "scheme must be a string, not 5"),
        ("scheme", "IOB2", "scheme 'IOB2' differs from the config's scheme 'BIOES'"),
        ("tagger_version", [], "tagger_version must be a string, not []"),
    ],
)
def test_header_values(model, key, value, message):
    header = read(model, "config.json")
    header[key] = value
    write(model, "config.json", header)
    error = load_error(model)
    assert error.startswith(str(model / "config.json")) and error.endswith(message)


@pytest.mark.parametrize("key", ["config", "labels", "weights", "format_version"])
def test_header_keys_missing(model, key):
    header = read(model, "config.json")
    del header[key]
    write(model, "config.json", header)
    assert load_error(model) == f"{model / 'config.json'} is incomplete: no {key}"


def test_newer_format_version_says_to_upgrade(model):
    header = read(model, "config.json")
    header["format_version"] = 2
    del header["tagger_version"]
    write(model, "config.json", header)
    message = load_error(model)
    assert message.startswith(f"{model} has model format version 2, newer than this tagger (")
    assert message.endswith(") reads (1): upgrade tagger to load it")


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("hidden_size", 0, "hidden_size must be from 1 to 4096, not 0"),
        ("hidden_size", 10**12, "hidden_size must be from 1 to 4096, not 1000000000000"),
        ("lr", float("nan"), "lr must be a finite number > 0, not nan"),
        ("dropout", 1.5, "dropout must be in [0, 1), not 1.5"),
        ("cell", "tcn", "cell must be one of rnn, lstm, gru, not 'tcn'"),
        ("patience", 0, "patience must be null (unset) or from 1 to 10000, not 0"),
        ("lang", "Klingon", "lang must be a spaCy language code such as en, de, zh or xx"),
        ("colour", "red", "unknown key 'colour'"),
        ("word_dim", "16", "word_dim must be int, not '16'"),
    ],
)
def test_config_values(model, key, value, message):
    header = read(model, "config.json")
    header["config"][key] = value
    write(model, "config.json", header)
    assert load_error(model).startswith(f"{model / 'config.json'}: {message}")


@pytest.mark.parametrize(
    ("key", "value", "reason"),
    [
        (
            "hidden_size",
            17,
            "encoder.rnn.weight_ih_l0 is 64x28, the config and vocabulary need 68x28",
        ),
        (
            "casing_dim",
            0,
            "encoder.rnn.weight_ih_l0 is 64x28, the config and vocabulary need 64x24",
        ),
        ("decoder", "softmax", "unexpected tensor decoder.crf."),
        ("ensemble", 64, "no tensor members.0.embedder.words.weight"),
        (
            "char_encoder",
            "lstm",
            "encoder.rnn.weight_ih_l0 is 64x28, the config and vocabulary need 64x36",
        ),
    ],
)
def test_config_values_that_do_not_fit_the_weights(model, key, value, reason):
    header = read(model, "config.json")
    header["config"][key] = value
    write(model, "config.json", header)
    assert load_error(model).startswith(
        f"{model / 'model.safetensors'}: the weights do not fit the vocabulary/config ({reason}"
    )


def test_labels_edited_in_config_json(model):
    header = read(model, "config.json")
    header["labels"] = header["labels"][::-1]
    write(model, "config.json", header)
    assert load_error(model) == f"{model}: the labels in vocab.json and config.json differ"


# ------------------------------------------------------------------ vocab.json


def test_labels_edited_in_vocab_json(model):
    vocab = read(model, "vocab.json")
    vocab["labels"][1] = "B-MISC"
    write(model, "vocab.json", vocab)
    assert load_error(model) == (
        f"{model / 'vocab.json'} does not match the checksum in config.json: the file is "
        "truncated or was changed after training"
    )


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("words", "abc", "vocabulary words must be a list of strings"),
        ("words", ["<pad>", "<unk>", 3], "vocabulary words must be a list of strings"),
        ("chars", None, "vocabulary chars must be a list of strings"),
        ("labels", "O", "vocabulary labels must be a list of strings"),
        ("labels", [], "vocabulary has no labels"),
        ("labels", ["O", "O"], "vocabulary labels has 'O' twice"),
        ("labels", ["O", "X-PER"], "vocabulary label 'X-PER' is not a tag"),
        ("lowercase", 1, "vocabulary lowercase must be true or false, not 1"),
        ("normalize_digits", "yes", "vocabulary normalize_digits must be true or false, not 'yes'"),
        ("words", ["<unk>", "<pad>"], "vocabulary does not start with the PAD and UNK entries"),
        ("words", ["<pad>", "<unk>", "a", "a"], "vocabulary words has 'a' twice"),
        ("format_version", 3, "vocabulary format version 3 is not supported"),
    ],
)
def test_vocab_values(model, key, value, message):
    vocab = read(model, "vocab.json")
    vocab[key] = value
    write_vocab(model, vocab)
    assert load_error(model).startswith(f"{model / 'vocab.json'}: {message}")


def test_vocab_key_missing(model):
    vocab = read(model, "vocab.json")
    del vocab["chars"]
    write_vocab(model, vocab)
    assert load_error(model) == f"{model / 'vocab.json'}: vocabulary is missing the key 'chars'"


def test_vocab_with_labels_edited_in_both_files(model):
    vocab, header = read(model, "vocab.json"), read(model, "config.json")
    vocab["labels"] = header["labels"] = ["O", "B-PER"]
    write(model, "config.json", header)
    write_vocab(model, vocab)
    assert load_error(model).startswith(
        f"{model / 'model.safetensors'}: the weights do not fit the vocabulary/config "
        "(projection.weight is 13x32, the config and vocabulary need 2x32"
    )


def test_weights_that_do_not_fit_the_vocabulary(model):
    vocab = read(model, "vocab.json")
    vocab["words"].append("zebra")
    write_vocab(model, vocab)
    n = len(vocab["words"])
    assert load_error(model).startswith(
        f"{model / 'model.safetensors'}: the weights do not fit the vocabulary/config "
        f"(embedder.words.weight is {n - 1}x16, the config and vocabulary need {n}x16"
    )


def test_a_mismatch_allocates_nothing(model, monkeypatch):
    """The shapes are compared on the meta device, before a real model is built."""
    header = read(model, "config.json")
    header["config"].update(hidden_size=4096, num_layers=8, ensemble=64)  # ~400 GB of weights
    write(model, "config.json", header)
    built = []
    import tagger.predict

    real = tagger.predict.build_model
    monkeypatch.setattr(
        tagger.predict,
        "build_model",
        lambda *a: built.append(torch.empty(0).device.type) or real(*a),
    )
    assert "the weights do not fit" in load_error(model)
    assert built == ["meta"]


# ------------------------------------------------------------------ metrics.json


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("epochs", "x", "epochs must be a list, not 'x'"),
        ("epochs", [5], "epochs[0] must be an object, not 5"),
        ("epochs", [{"epoch": 1}], "epochs[0].loss must be a number, not None"),
        ("best_epoch", "2", "best_epoch must be a whole number or null, not '2'"),
        ("best_epoch", 99, "best_epoch 99 is not one of the epochs"),
        ("dev_f1", [], "dev_f1 must be a number or null, not []"),
        ("test", 5, "test must be an object, not 5"),
        ("interrupted", "no", "interrupted must be true or false, not 'no'"),
        ("members", {}, "members must be a list, not {}"),
        ("members", [{"epochs": [{}]}], "members[0].epochs[0].epoch must be a whole number"),
    ],
)
def test_metrics_values(model, key, value, message):
    metrics = read(model, "metrics.json")
    metrics[key] = value
    write(model, "metrics.json", metrics)
    assert load_error(model, metrics=True).startswith(f"{model / 'metrics.json'}: {message}")
    assert load_error(model).startswith(f"{model / 'metrics.json'}: {message}")


# ------------------------------------------------------------------ the command line


def test_cli_on_a_damaged_folder_is_one_line(model, python):
    write(model, "vocab.json", [])
    proc = subprocess.run(
        [python, "-m", "tagger", "summary", str(model)], capture_output=True, text=True
    )
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert proc.stderr.splitlines() == [
        f"error: {model / 'vocab.json'} does not match the checksum in config.json: the file "
        "is truncated or was changed after training"
    ]


# ------------------------------------------------------------------ checkpoints


@pytest.fixture
def checkpoint(tagger_model, tmp_path) -> Path:
    """A checkpoint of the trained model, as a run writes it after an epoch."""
    import numpy as np

    from tagger.checkpoint import capture, save_checkpoint

    model = tagger_model.model
    optimizer = torch.optim.Adam(model.parameters())
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda epoch: 1.0)
    progress = {"best_f1": 0.5, "best_epoch": 1, "stale": 0, "epochs": [], "seconds": 1.0}
    ckpt = capture(
        tagger_model.config,
        tagger_model.vocab,
        "f" * 64,
        1,
        progress,
        {"model": model},
        optimizer,
        scheduler,
        np.random.default_rng(0),
    )
    return save_checkpoint(tmp_path / "model.checkpoint", ckpt)


def checkpoint_error(path) -> str:
    from tagger.checkpoint import load_checkpoint

    with pytest.raises(TaggerError) as err:
        load_checkpoint(path)
    message = str(err.value)
    assert "\n" not in message, message
    return message


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("epoch", "3", "epoch must be a whole number 0 or more, not '3'"),
        ("epoch", -1, "epoch must be a whole number 0 or more, not -1"),
        ("fingerprint", None, "fingerprint must be a string, not None"),
        ("progress", [], "progress must be an object, not []"),
        ("progress", {"best": 1}, "progress has an unknown key 'best'"),
        ("progress", {"stale": "1"}, "progress.stale must be a whole number 0 or more, not '1'"),
        ("progress", {"epochs": [1]}, "progress.epochs[0] must be an object, not 1"),
        ("optimizer", {"param_groups": 5}, "optimizer.param_groups must be a list, not 5"),
        ("optimizer", {"param_groups": [{"params": []}]}, "optimizer.param_groups must number"),
        ("scheduler", {}, "scheduler.lr_lambdas must be a list of 1 nulls, not None"),
        ("rng", {"numpy": 5}, "rng.numpy is not a NumPy generator state"),
        ("rng", {"numpy": None, "python": None}, "rng.numpy is not a NumPy generator state"),
        ("config", {"hidden_size": 0}, "hidden_size must be from 1 to 4096, not 0"),
        ("vocab", [], "vocabulary must be a JSON object, not a list"),
    ],
)
def test_damaged_checkpoint_json(checkpoint, key, value, message):
    meta = read(checkpoint, "checkpoint.json")
    meta[key] = value
    write(checkpoint, "checkpoint.json", meta)
    assert checkpoint_error(checkpoint).startswith(f"{checkpoint / 'checkpoint.json'}: {message}")


def test_damaged_checkpoint_rng_python(checkpoint):
    meta = read(checkpoint, "checkpoint.json")
    meta["rng"]["python"][1] = "x"
    write(checkpoint, "checkpoint.json", meta)
    assert checkpoint_error(checkpoint) == (
        f"{checkpoint / 'checkpoint.json'}: rng.python is not a Python random state"
    )


@pytest.mark.parametrize("value", [[], "x", None, 5])
def test_checkpoint_json_of_the_wrong_type(checkpoint, value):
    write(checkpoint, "checkpoint.json", value)
    assert checkpoint_error(checkpoint).startswith(
        f"{checkpoint / 'checkpoint.json'}: expected a JSON object, not "
    )


@pytest.mark.parametrize("damage", ["empty", "garbage", "folder"])
def test_damaged_checkpoint_files(checkpoint, damage):
    file = checkpoint / "checkpoint.json"
    file.unlink()
    if damage == "empty":
        file.write_bytes(b"")
        assert checkpoint_error(checkpoint) == f"{file} is empty"
    elif damage == "garbage":
        file.write_bytes(b"\xff\xfe garbage")
        assert checkpoint_error(checkpoint) == f"{file}:1: not UTF-8 text (byte 0xff at offset 0)"
    else:
        file.mkdir()
        assert checkpoint_error(checkpoint) == f"{file} is a folder, not a file"


def test_the_checkpoint_fixture_loads(checkpoint):
    from tagger.checkpoint import load_checkpoint

    assert load_checkpoint(checkpoint).epoch == 1
