"""Fuzzing the loaders: any JSON value anywhere either loads or is a ``TaggerError`` line.

A config field, a key of a model folder's config.json or vocab.json, or of a training
checkpoint, replaced by any JSON value (huge ints, nan, nesting included) must never
raise anything else: no ``TypeError``, ``OverflowError``, ``KeyError``, no huge allocation.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
from dataclasses import fields
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tagger.config import TrainConfig
from tagger.errors import TaggerError

FIELDS = [f.name for f in fields(TrainConfig)]

SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(10**400), max_value=10**400)  # well beyond int64 and float
    | st.sampled_from([0, -1, 1, 2, 3, 2**31, 2**63, 10**12, 10**400])
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20)
    | st.sampled_from(["", "cpu", "cuda:0", "en", "utf-8", "lstm", "crf", "O", "\x00"])
)
JSON = st.recursive(
    SCALARS,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4)
    ),
    max_leaves=12,
)


def one_line(err: TaggerError) -> None:
    message = str(err)
    assert message and "\n" not in message and len(message) < 1000, message


def loads_or_one_line(load):
    """``load()``'s result, or None after checking its ``TaggerError`` is one line."""
    try:
        return load()
    except TaggerError as err:
        one_line(err)
        return None


# ------------------------------------------------------------------ configs


@settings(max_examples=200)
@given(key=st.sampled_from(FIELDS), value=JSON)
def test_any_value_in_any_field_from_dict(key, value):
    config = loads_or_one_line(lambda: TrainConfig.from_dict({key: value}, where="c.json"))
    if config is not None:
        assert config.validate() is config


@settings(max_examples=150)
@given(key=st.sampled_from(FIELDS), value=JSON)
def test_any_value_in_any_field_of_a_json_file(tmp_path_factory, key, value):
    path = tmp_path_factory.getbasetemp() / "fuzz.json"
    path.write_text(json.dumps({key: value}), encoding="utf-8")
    loads_or_one_line(lambda: TrainConfig.from_file(path))


def has_null(value) -> bool:
    if isinstance(value, list):
        return any(has_null(v) for v in value)
    if isinstance(value, dict):
        return any(has_null(v) for v in value.values())
    return value is None


def toml_value(value) -> str:
    """A TOML spelling of a null-free JSON value (tomli_w when installed)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # JSON strings are TOML basic strings
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    items = (f"{json.dumps(k, ensure_ascii=False)} = {toml_value(v)}" for k, v in value.items())
    return "{" + ", ".join(items) + "}"


def toml_text(key: str, value) -> str:
    try:
        import tomli_w
    except ImportError:
        return f"{key} = {toml_value(value)}\n"
    try:
        return tomli_w.dumps({key: value})
    except (TypeError, ValueError):  # e.g. an int beyond what tomli_w writes
        return f"{key} = {toml_value(value)}\n"


@settings(max_examples=150)
@given(key=st.sampled_from(FIELDS), value=JSON.filter(lambda v: not has_null(v)))
def test_any_value_in_any_field_of_a_toml_file(tmp_path_factory, key, value):
    path = tmp_path_factory.getbasetemp() / "fuzz.toml"
    path.write_text(toml_text(key, value), encoding="utf-8")
    loads_or_one_line(lambda: TrainConfig.from_file(path))


# ------------------------------------------------------------------ model folders


@pytest.fixture(scope="module")
def folder(trained_model, tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """A copy of the trained model, and its JSON files' text to restore between examples."""
    dst = tmp_path_factory.mktemp("fuzz") / "model"
    shutil.copytree(trained_model, dst)
    names = ("config.json", "vocab.json", "metrics.json")
    originals = {n: (dst / n).read_text(encoding="utf-8") for n in names}
    return dst, originals


TARGETS = ["config", "header", "vocab", "vocab (checksum updated)", "metrics"]


@settings(max_examples=60)
@given(target=st.sampled_from(TARGETS), pick=st.integers(min_value=0), value=JSON)
def test_any_value_in_a_model_folder(folder, target, pick, value):
    from tagger.io import read_metrics
    from tagger.predict import Tagger

    path, originals = folder
    header, vocab, metrics = (json.loads(originals[n]) for n in originals)
    edited = {"config": header["config"], "header": header, "metrics": metrics}.get(target, vocab)
    keys = sorted(edited)
    edited[keys[pick % len(keys)]] = value
    raw = json.dumps(vocab).encode("utf-8")
    if target == "vocab (checksum updated)":
        header["vocab"]["sha256"] = hashlib.sha256(raw).hexdigest()
    (path / "vocab.json").write_bytes(raw)
    (path / "config.json").write_text(json.dumps(header), encoding="utf-8")
    (path / "metrics.json").write_text(json.dumps(metrics), encoding="utf-8")
    loads_or_one_line(lambda: Tagger.load(path, device="cpu"))
    loads_or_one_line(lambda: read_metrics(path))  # what compare and plot read


# ------------------------------------------------------------------ checkpoints


@pytest.fixture(scope="module")
def checkpoint(tagger_model, tmp_path_factory) -> tuple[Path, str]:
    import numpy as np
    import torch

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
    path = save_checkpoint(tmp_path_factory.mktemp("fuzz") / "model.checkpoint", ckpt)
    return path, (path / "checkpoint.json").read_text(encoding="utf-8")


@settings(max_examples=60)
@given(pick=st.integers(min_value=0), inner=st.integers(min_value=0), value=JSON)
def test_any_value_in_a_checkpoint(checkpoint, pick, inner, value):
    """A top-level key of checkpoint.json, or a key one level down, replaced."""
    from tagger.checkpoint import load_checkpoint

    path, original = checkpoint
    meta = json.loads(original)
    keys = sorted(k for k in meta if k not in ("format_version", "state_sha256"))
    key = keys[pick % len(keys)]
    if isinstance(meta[key], dict) and meta[key] and inner % 2:
        keys = sorted(meta[key])
        meta[key][keys[inner % len(keys)]] = value
    else:
        meta[key] = value
    (path / "checkpoint.json").write_text(json.dumps(meta), encoding="utf-8")
    loads_or_one_line(lambda: load_checkpoint(path))
