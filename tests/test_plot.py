"""Reports read from model folders: training.png, `tagger plot` and `tagger compare`."""

from __future__ import annotations

import json
import shutil
import struct
import sys
from statistics import median

import pytest
from conftest import tiny_config
from test_cli import assert_ok, assert_user_error, cli

from tagger.errors import TaggerError
from tagger.io import ModelFiles, save_model
from tagger.plot import plot_training
from tagger.predict import Tagger
from tagger.training import train

PNG = b"\x89PNG\r\n\x1a\n"


def png_size(data: bytes) -> tuple[int, int]:
    """Width and height from the IHDR chunk, which a valid PNG has first."""
    assert data[:8] == PNG and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


@pytest.fixture(scope="module")
def softmax_model(tmp_path_factory, tiny_corpus):
    """A second model for `compare`: GRU, softmax, char LSTM."""
    out = tmp_path_factory.mktemp("compare") / "softmax"
    config = tiny_config(
        data=str(tiny_corpus), output=str(out), cell="gru", decoder="softmax", char_encoder="lstm"
    )
    return train(config, progress=False)


def metrics_of(model) -> dict:
    return json.loads((model / "metrics.json").read_text())


# ----------------------------------------------------------------- training.png


def test_training_writes_a_png_into_the_model_folder(trained_model):
    assert png_size((trained_model / "training.png").read_bytes()) == (700, 400)


def test_model_loads_without_training_png(trained_model, tmp_path):
    copy = tmp_path / "model"
    shutil.copytree(trained_model, copy)
    (copy / "training.png").unlink()
    assert Tagger.load(copy, device="cpu").predict([["Paris"]]) == Tagger.load(
        trained_model, device="cpu"
    ).predict([["Paris"]])


def test_training_without_matplotlib_warns_and_keeps_the_model(
    tiny_corpus, tmp_path, monkeypatch, capsys
):
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)  # import raises ImportError
    out = tmp_path / "m"
    path = train(tiny_config(data=str(tiny_corpus), output=str(out), max_epochs=1), progress=False)
    assert not (path / "training.png").exists()
    assert capsys.readouterr().err == (
        "warning: training.png not written: plotting needs matplotlib: pip install matplotlib\n"
    )
    assert Tagger.load(path, device="cpu").metrics["epochs"]
    assert_user_error(cli("plot", path), "plotting needs matplotlib")


def test_save_model_extras_arrive_with_the_folder(tagger_model, tmp_path):
    files = ModelFiles(
        tagger_model.config, tagger_model.vocab, tagger_model.model.state_dict(), {"epochs": []}
    )
    path = save_model(tmp_path / "m", files, extras={"training.png": PNG, "config.json": b"x"})
    assert (path / "training.png").read_bytes() == PNG
    assert json.loads((path / "config.json").read_text())["format_version"]  # ours wins
    with pytest.raises(TaggerError, match="already exists"):
        save_model(path, files, extras={"other.png": PNG})
    assert not (path / "other.png").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["m"]  # no temp folders left


# ----------------------------------------------------------------- tagger plot


def test_plot_command_default_and_output(trained_model, tmp_path):
    copy = tmp_path / "model"
    shutil.copytree(trained_model, copy)
    (copy / "training.png").unlink()
    result = cli("plot", copy)
    assert_ok(result)
    assert result.stdout == f"wrote {copy / 'training.png'}\n"
    assert png_size((copy / "training.png").read_bytes()) == (700, 400)
    out = tmp_path / "curves.png"
    assert_ok(cli("plot", trained_model, "--output", out))
    assert out.read_bytes()[:8] == PNG


def test_plot_errors(trained_model, tmp_path):
    assert_user_error(cli("plot", tmp_path / "nope"), "no such model folder")
    assert_user_error(cli("plot", tmp_path), "is not a tagger model folder")
    assert_user_error(cli("plot", trained_model, "-o", tmp_path / "no" / "dir.png"), "cannot write")
    with pytest.raises(TaggerError, match="no epochs"):
        plot_training({"epochs": []}, tmp_path / "x.png")


# ----------------------------------------------------------------- tagger compare


def test_compare_json(trained_model, softmax_model):
    result = cli("compare", trained_model, softmax_model, "--json")
    assert_ok(result)
    rows = json.loads(result.stdout)
    assert [r["model"] for r in rows] == [str(trained_model), str(softmax_model)]
    assert [(r["cell"], r["decoder"], r["char_encoder"]) for r in rows] == [
        ("lstm", "crf", "cnn"),
        ("gru", "softmax", "lstm"),
    ]
    for row, model in zip(rows, (trained_model, softmax_model)):
        metrics = metrics_of(model)
        assert row["epochs"] == len(metrics["epochs"]) == model_epochs(model)
        assert row["best_epoch"] == metrics["best_epoch"]
        assert row["parameters"] == metrics["parameters"]
        assert row["seconds_per_epoch"] == median(e["seconds"] for e in metrics["epochs"])
        assert (row["dev_f1"], row["test_f1"]) == (metrics["dev_f1"], metrics["test_f1"])
        per_type = metrics["test"]["per_type"]
        assert row["test_per_type"] == {t: s["f1"] for t, s in per_type.items()}
        assert set(per_type) == {"LOC", "ORG", "PER"}


def model_epochs(model) -> int:
    return len((model / "epochs.jsonl").read_text().splitlines())


def test_compare_table(trained_model, softmax_model):
    result = cli("compare", trained_model, softmax_model)
    assert_ok(result)
    lines = result.stdout.splitlines()
    assert lines[0].split() == [
        "model",
        "cell",
        "decoder",
        "chars",
        "parameters",
        "epochs",
        "best",
        "s/epoch",
        "dev_f1",
        "test_f1",
        "LOC",
        "ORG",
        "PER",
    ]
    assert len({len(line) for line in lines[:3]}) == 1  # aligned columns
    assert "\x1b" not in result.stdout  # no colours
    for line, model in zip(lines[1:3], (trained_model, softmax_model)):
        metrics = metrics_of(model)
        cells = line.split()
        assert cells[0] == str(model)
        assert cells[4] == f"{metrics['parameters']:,}"
        assert cells[5:7] == [str(model_epochs(model)), str(metrics["best_epoch"])]
        assert cells[8:10] == [f"{100 * metrics['dev_f1']:.2f}", f"{100 * metrics['test_f1']:.2f}"]
        per_type = metrics["test"]["per_type"]
        assert cells[10:] == [f"{100 * per_type[t]['f1']:.2f}" for t in ("LOC", "ORG", "PER")]
    assert lines[4] == "F1 in percent; the entity-type columns are test F1."


def test_compare_errors(trained_model, tmp_path):
    missing = tmp_path / "nope"
    line = assert_user_error(cli("compare", trained_model, missing))
    assert line == f"error: {missing}: no such model folder; train one with `tagger train`"
    assert_user_error(cli("compare", tmp_path), "is not a tagger model folder (no config.json)")
    copy = tmp_path / "model"
    shutil.copytree(trained_model, copy)
    (copy / "metrics.json").write_text("{")
    assert_user_error(cli("compare", copy), "metrics.json: not valid JSON")
    result = cli("compare")
    assert result.exit_code == 2 and "Missing argument" in result.output
