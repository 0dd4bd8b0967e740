"""TrainConfig.validate: every field's type, range and choices; from_file's one-line errors."""

from __future__ import annotations

import errno
import json
import math
import os
from dataclasses import fields
from pathlib import Path

import pytest
from test_cli import assert_user_error, cli

from tagger.config import (
    INT_RANGES,
    NON_NEGATIVE_FLOATS,
    PATHS,
    UNIT_FLOATS,
    UNSETTABLE,
    TrainConfig,
)
from tagger.errors import TaggerError

FIELDS = [f.name for f in fields(TrainConfig)]
FLOATS = [*UNIT_FLOATS, *NON_NEGATIVE_FLOATS, "lr"]


def error(data: dict) -> str:
    with pytest.raises(TaggerError) as err:
        TrainConfig.from_dict(data, where="run.json")
    message = str(err.value)
    assert "\n" not in message and message.startswith("run.json: ")
    return message


def test_every_field_is_checked_somewhere():
    from tagger.config import CHOICES

    bools = {"lowercase", "normalize_digits", "bidirectional", "freeze_embeddings"}
    bools |= {"calibrate", "overwrite"}
    other = {"device", "lang", "encoding", "map_labels", "replay_fraction"}
    other |= {"distill_weight", "distill_temperature"}
    checked = set(CHOICES) | set(INT_RANGES) | set(FLOATS) | set(PATHS) | bools | other
    assert checked == set(FIELDS)


@pytest.mark.parametrize("key", list(INT_RANGES))
def test_int_bounds(key):
    low, high = INT_RANGES[key]
    if key == "char_kernel":
        assert TrainConfig.from_dict({key: low}).char_kernel == low
        assert TrainConfig.from_dict({key: high}).char_kernel == high
    else:
        assert getattr(TrainConfig.from_dict({key: low}), key) == low
        assert getattr(TrainConfig.from_dict({key: high}), key) == high
    unset = "null (unset) or " if key in UNSETTABLE else ""
    for value in (low - 1, high + 1, 10**12, -(10**30)):
        assert error({key: value}) == (
            f"run.json: {key} must be {unset}from {low} to {high}, not {value}"
        )


def test_int_bounds_examples():
    assert error({"patience": 0}) == (
        "run.json: patience must be null (unset) or from 1 to 10000, not 0"
    )
    assert error({"hidden_size": 10**12}) == (
        "run.json: hidden_size must be from 1 to 4096, not 1000000000000"
    )
    assert error({"seed": 2**32}) == "run.json: seed must be from 0 to 4294967295, not 4294967296"
    assert TrainConfig.from_dict({"casing_dim": 0, "tag_column": -1000}).casing_dim == 0
    assert TrainConfig.from_dict({"max_vocab": None, "threads": None}).threads is None


@pytest.mark.parametrize("value", [2, 4, 14])
def test_char_kernel_must_be_odd(value):
    assert error({"char_kernel": value}) == (
        f"run.json: char_kernel must be odd, not {value} (1, 3, ..., 15)"
    )


@pytest.mark.parametrize("key", FLOATS)
@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_non_finite_floats_are_refused(key, value):
    message = error({key: value})
    assert message.startswith(f"run.json: {key} must be ") and message.endswith(f"not {value}")


@pytest.mark.parametrize("key", FLOATS)
def test_floats_beyond_the_float_range_are_refused(key):
    message = error({key: 10**400})
    assert message == f"run.json: {key} must be a finite number, not <a number of about 401 digits>"


@pytest.mark.parametrize("key", UNIT_FLOATS)
def test_unit_floats(key):
    assert getattr(TrainConfig.from_dict({key: 0}), key) == 0.0
    assert getattr(TrainConfig.from_dict({key: 0.999}), key) == 0.999
    for value in (1.0, -0.01, 5):
        assert error({key: value}) == f"run.json: {key} must be in [0, 1), not {float(value)}"
    assert error({key: math.nan}) == f"run.json: {key} must be in [0, 1), not nan"


@pytest.mark.parametrize("key", NON_NEGATIVE_FLOATS)
def test_non_negative_floats(key):
    assert getattr(TrainConfig.from_dict({key: 0}), key) == 0.0
    assert getattr(TrainConfig.from_dict({key: 1e6}), key) == 1e6
    assert error({key: -1}) == f"run.json: {key} must be 0 or more, not -1.0"
    assert error({key: math.inf}) == f"run.json: {key} must be a finite number, 0 or more, not inf"


def test_lr():
    assert TrainConfig.from_dict({"lr": 1e-9}).lr == 1e-9
    for value in (0, -0.1, math.nan, math.inf):
        assert (
            error({"lr": value}) == f"run.json: lr must be a finite number > 0, not {float(value)}"
        )


@pytest.mark.parametrize("device", ["auto", "cpu", "cuda", "cuda:0", "cuda:12", "mps"])
def test_good_devices(device):
    assert TrainConfig.from_dict({"device": device}).device == device


@pytest.mark.parametrize("device", ["tpu", "", "CUDA", "cuda:", "cuda:x", "cpu ", "cuda:12345"])
def test_bad_devices(device):
    assert error({"device": device}) == (
        f"run.json: unknown device {device!r}; device must be auto, cpu, cuda, cuda:N or mps"
    )


@pytest.mark.parametrize("lang", ["en", "de", "xx", "zh", "grc", "sr-latn"])
def test_good_langs(lang):
    assert TrainConfig.from_dict({"lang": lang}).lang == lang


@pytest.mark.parametrize("lang", ["", "EN", "english", "e", "en_US", "../en", "en\n"])
def test_bad_langs(lang):
    assert error({"lang": lang}) == (
        "run.json: lang must be a spaCy language code such as en, de, zh or xx "
        f"(multi-language), not {lang!r}"
    )


@pytest.mark.parametrize("encoding", ["utf-8", "UTF8", "latin-1", "cp1252", "utf_16"])
def test_good_encodings(encoding):
    assert TrainConfig.from_dict({"encoding": encoding}).encoding == encoding


@pytest.mark.parametrize("encoding", ["", "klingon", "base64", "rot13", "zlib", "utf-8\x00"])
def test_bad_encodings(encoding):
    assert error({"encoding": encoding}) == (
        "run.json: encoding must be a text encoding Python knows (utf-8, latin-1, cp1252, ...), "
        f"not {encoding!r}"
    )


@pytest.mark.parametrize("key", PATHS)
def test_paths_not_empty_and_without_nul(key):
    needs = {"replay": {"init_from": "model"}, "unlabeled": {"teacher": "model"}}
    values = {key: "some/where"} | needs.get(key, {})
    assert getattr(TrainConfig.from_dict(values), key) == "some/where"
    unset = "" if key == "output" else " (leave it out, or null, to unset it)"
    assert error({key: ""}) == f"run.json: {key} must not be empty{unset}"
    assert error({key: "a\x00b"}) == f"run.json: {key} must not contain a NUL character"
    if key == "output":
        assert error({key: None}) == "run.json: output must be str, not None"
    else:
        assert getattr(TrainConfig.from_dict({key: None}), key) is None


@pytest.mark.parametrize("key", FIELDS)
@pytest.mark.parametrize(
    "value",
    [10**5000, -(10**400), [1, [2, [3, [4]]]], {"a": {"b": None}}, [], {}, math.nan, "x" * 500],
    ids=["huge", "-huge", "nested", "dict", "list", "object", "nan", "long"],
)
def test_any_odd_value_in_any_field_is_one_line(key, value):
    try:
        TrainConfig.from_dict({key: value}, where="run.json")
    except TaggerError as err:
        message = str(err)
        assert "\n" not in message and len(message) < 300
        assert message.startswith(f"run.json: {key} ") or message.startswith("run.json: unknown")


def test_validate_checks_types_of_a_config_built_in_python():
    with pytest.raises(TaggerError, match=r"^config: hidden_size must be int, not '8'$"):
        TrainConfig(hidden_size="8").validate()
    with pytest.raises(TaggerError, match=r"^config: lr must be float, not None$"):
        TrainConfig(lr=None).validate()


def test_from_dict_needs_an_object():
    with pytest.raises(TaggerError) as err:
        TrainConfig.from_dict([1, 2], where="run.json")
    assert str(err.value) == "run.json: expected an object of config keys, not [1, 2]"


def test_long_values_are_shown_short():
    message = error({"cell": "x" * 1000})
    assert len(message) < 200 and "..." in message
    assert error({"x" * 1000: 1}).startswith("run.json: unknown key 'xxxx")


# ------------------------------------------------------------------ from_file


def file_error(path) -> str:
    with pytest.raises(TaggerError) as err:
        TrainConfig.from_file(path)
    message = str(err.value)
    assert "\n" not in message
    return message


def test_from_file_on_a_folder(tmp_path):
    assert file_error(tmp_path) == f"{tmp_path} is a folder, not a file"


def test_from_file_missing(tmp_path):
    assert file_error(tmp_path / "nope.json") == f"{tmp_path / 'nope.json'}: no such file"
    assert file_error(tmp_path / "nope.toml") == f"{tmp_path / 'nope.toml'}: no such file"


@pytest.mark.parametrize("name", ["c.json", "c.toml"])
def test_from_file_not_utf8_names_line_and_offset(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(
        b'{"cell": "gru",\n "data": "caf\xe9"}'
        if name.endswith("json")
        else (b'cell = "gru"\ndata = "caf\xe9"\n')
    )
    offset = path.read_bytes().index(b"\xe9")
    assert file_error(path) == f"{path}:2: not UTF-8 text (byte 0xe9 at offset {offset})"
    path.write_bytes(b"\xff\xfe garbage")
    assert file_error(path) == f"{path}:1: not UTF-8 text (byte 0xff at offset 0)"


def test_from_file_permission_denied(tmp_path, monkeypatch):
    path = tmp_path / "c.json"
    path.write_text("{}")
    real = Path.read_bytes

    def denied(self):
        if self == path:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(self))
        return real(self)

    monkeypatch.setattr(Path, "read_bytes", denied)
    assert file_error(path) == f"cannot read {path}: Permission denied"


def test_from_file_utf8_bom_is_fine(tmp_path):
    path = tmp_path / "c.json"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps({"cell": "gru"}).encode())
    assert TrainConfig.from_file(path).cell == "gru"
    path = tmp_path / "c.toml"
    path.write_bytes(b'\xef\xbb\xbfcell = "gru"\n')
    assert TrainConfig.from_file(path).cell == "gru"


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("", ":1: not valid JSON: Expecting value"),
        ("[" * 100_000 + "]" * 100_000, ": not valid JSON: nested too deeply"),
        ('{"seed": 1' + "0" * 5000 + "}", ": not valid JSON: a number has too many digits"),
        ('"just a string"', ": expected a JSON object of config keys"),
        ("null", ": expected a JSON object of config keys"),
        ('{"lr": NaN}', ": lr must be a finite number > 0, not nan"),
        ('{"lr": 1e999}', ": lr must be a finite number > 0, not inf"),
        ('{"hidden_size": 1e3}', ": hidden_size must be int, not 1000.0"),
    ],
)
def test_from_file_json_troubles(tmp_path, text, fragment):
    path = tmp_path / "c.json"
    path.write_text(text)
    assert file_error(path) == f"{path}{fragment}"


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("seed = 1" + "0" * 5000 + "\n", ": not valid TOML: a number has too many digits"),
        ("lr = nan\n", ": lr must be a finite number > 0, not nan"),
        ("clip = inf\n", ": clip must be a finite number, 0 or more, not inf"),
        ("hidden_size = [1, 2]\n", ": hidden_size must be int, not [1, 2]"),
        ("patience = 0\n", ": patience must be null (unset) or from 1 to 10000, not 0"),
        ("[data]\nx = 1\n", ": data must be str or null, not {'x': 1}"),
        ("a = " + "[" * 5000 + "]" * 5000 + "\n", ": not valid TOML: "),
    ],
)
def test_from_file_toml_troubles(tmp_path, text, fragment):
    path = tmp_path / "c.toml"
    path.write_text(text)
    assert file_error(path).startswith(f"{path}{fragment}")


# ------------------------------------------------------------------ the CLI


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--lr", "nan"], "error: config: lr must be a finite number > 0, not nan"),
        (
            ["--patience", "0"],
            "error: config: patience must be null (unset) or from 1 to 10000, not 0",
        ),
    ],
)
def test_train_flags_are_validated_before_training(tmp_path, flags, message):
    line = assert_user_error(cli("train", *flags, "-o", tmp_path / "m"))
    assert line == message
    assert not (tmp_path / "m").exists()
