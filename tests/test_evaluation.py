"""seqeval wrappers: hand-computed scores, strict mode, evaluate() on a model folder."""

from __future__ import annotations

import dataclasses
import json

import pytest
from seqeval.metrics.sequence_labeling import get_entities

from tagger.config import TrainConfig
from tagger.data import decoded_tags, load_data
from tagger.errors import TaggerError
from tagger.evaluation import evaluate, format_report, score, training_source
from tagger.predict import Tagger

GOLD = [
    ["B-PER", "I-PER", "O", "B-LOC"],
    ["B-ORG", "O", "B-PER"],
    ["O", "B-LOC", "I-LOC"],
]
PRED = [
    ["B-PER", "I-PER", "O", "O"],  # PER right, LOC missed
    ["B-ORG", "O", "B-LOC"],  # ORG right, PER missed, a false LOC
    ["O", "B-LOC", "O"],  # LOC with the wrong boundary: wrong
]


def test_score_by_hand():
    # gold: PER 2, LOC 2, ORG 1 = 5; pred: PER 1, ORG 1, LOC 2 = 4; correct: PER 1, ORG 1.
    s = score(GOLD, PRED)
    assert s["precision"] == pytest.approx(2 / 4)
    assert s["recall"] == pytest.approx(2 / 5)
    assert s["f1"] == pytest.approx(2 * 0.5 * 0.4 / 0.9)
    assert s["support"] == 5
    assert s["per_type"] == {
        "LOC": {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 2},
        "ORG": {"precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 1},
        "PER": {"precision": 1.0, "recall": 0.5, "f1": pytest.approx(2 / 3), "support": 2},
    }
    assert s["macro_f1"] == pytest.approx((0 + 1 + 2 / 3) / 3)
    assert s["mode"] == "default"
    assert all(type(v) is float for k, v in s.items() if k in ("precision", "recall", "f1"))
    json.dumps(s)  # plain JSON values


def test_perfect_and_empty_prediction():
    assert score(GOLD, GOLD)["f1"] == 1.0
    s = score(GOLD, [["O"] * len(g) for g in GOLD])
    assert (s["precision"], s["recall"], s["f1"]) == (0.0, 0.0, 0.0)


def test_strict_mode_differs_on_invalid_iob2():
    gold = [["O", "B-PER", "I-PER"]]
    pred = [["O", "I-PER", "I-PER"]]
    default, strict = score(gold, pred), score(gold, pred, strict=True)
    assert default["f1"] == 1.0  # conlleval: I-PER after O opens a mention
    assert strict["f1"] == 0.0  # strict IOB2: no mention at all
    assert strict["precision"] == 0.0 and strict["recall"] == 0.0
    assert strict["mode"] == "strict"


def test_score_without_any_mention_is_json():
    s = score([["O", "O"]], [["O", "O"]])
    json.dumps(s, allow_nan=False)


def test_format_report():
    text = format_report(score(GOLD, PRED))
    lines = text.splitlines()
    assert lines[0].split() == ["precision", "recall", "f1", "support"]
    assert lines[1].split() == ["LOC", "0.00", "0.00", "0.00", "2"]
    assert lines[3].split() == ["PER", "100.00", "50.00", "66.67", "2"]
    assert lines[5].split() == ["micro", "50.00", "40.00", "44.44", "5"]
    assert lines[6].split() == ["macro", "55.56"]


def test_evaluate_model_folder(trained_model, tagger_model, tiny_corpus):
    result = evaluate(trained_model, tiny_corpus)
    data = load_data(tiny_corpus)
    expected = score(decoded_tags(data["test"]), tagger_model.predict(data["test"]["tokens"]))
    assert result == {**expected, "unknown_types": []}
    assert set(result) == {
        *("precision", "recall", "f1", "macro_f1", "support", "per_type", "mode"),
        "unknown_types",
    }
    assert result["support"] == sum(len(get_entities(t)) for t in decoded_tags(data["test"])) > 15
    # The same from a Tagger, a DatasetDict or a Dataset.
    assert evaluate(tagger_model, data) == result
    assert evaluate(tagger_model, data["test"]) == result
    assert evaluate(tagger_model, tiny_corpus, split="validation") == {
        **score(
            decoded_tags(data["validation"]), tagger_model.predict(data["validation"]["tokens"])
        ),
        "unknown_types": [],
    }
    assert evaluate(tagger_model, data, strict=True)["mode"] == "strict"


def test_evaluate_errors(tagger_model, tiny_corpus, tmp_path):
    data = load_data(tiny_corpus)
    with pytest.raises(TaggerError) as err:
        evaluate(tagger_model, data, split="dev")
    assert str(err.value) == "no 'dev' split in the data (splits: train, validation, test)"
    # A type the model does not know is scored as missed and named, not refused.
    (tmp_path / "train.txt").write_text("Bonn B-LOC\n\nTim B-MISC\n")
    result = evaluate(tagger_model, tmp_path, split="train")
    assert result["unknown_types"] == ["MISC"]
    assert result["per_type"]["MISC"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}


def test_evaluate_defaults_to_the_data_the_model_was_trained_on(
    trained_model, tagger_model, tiny_corpus
):
    data = load_data(tiny_corpus)  # the model's config.data
    test = score(decoded_tags(data["test"]), tagger_model.predict(data["test"]["tokens"]))
    assert evaluate(tagger_model) == {**test, "unknown_types": []}
    assert evaluate(trained_model, split="validation") == evaluate(
        tagger_model, data, split="validation"
    )


def test_evaluate_reads_other_data_as_the_model_was_trained(tagger_model, tiny_corpus, tmp_path):
    # A model trained on Latin-1 files with the tag in the middle column: its test
    # split is read the same way.
    folder = tmp_path / "tag-in-the-middle"
    folder.mkdir()
    for name in ("train.txt", "test.txt"):
        lines = (tiny_corpus / name).read_text(encoding="utf-8").splitlines()
        text = "".join(f"{line} x\n" if line.strip() else "\n" for line in lines)
        (folder / name).write_text(text, encoding="latin-1")
    config = dataclasses.replace(
        tagger_model.config, data=str(folder), tag_column=1, encoding="latin-1"
    )
    other = Tagger(tagger_model.model, config, tagger_model.vocab)
    expected = evaluate(tagger_model, tiny_corpus)
    assert evaluate(other) == expected  # data, tag_column and encoding from the config
    assert evaluate(other, folder) == expected  # tag_column and encoding from the config
    with pytest.raises(TaggerError, match="tag .x. is not valid"):
        evaluate(other, folder, tag_column=-1)  # options given win


def test_training_source():
    config = TrainConfig(
        data="corpus/train.txt",
        dev="dev.txt",
        test="test.txt",
        revision="v1",
        encoding="latin-1",
        tag_column=2,
    )
    own = {"encoding": "latin-1", "tag_column": 2, "lang": "en", "misaligned": "error"}
    as_trained = {"data_format": "auto", "map_labels": None, "dev_fraction": 0.0}
    as_trained.update(test_fraction=0.0, seed=13, dev="dev.txt", test="test.txt", revision="v1")
    assert training_source(config) == ("corpus/train.txt", {**own, **as_trained})
    # Other data: the model's encoding, tag column, language and misaligned policy (the
    # format is detected, no label map, no split); options given (not None) win.
    assert training_source(config, "conll2003") == ("conll2003", own)
    assert training_source(config, "x", encoding="utf-8", tag_column=None, dev="d") == (
        "x",
        {**own, "encoding": "utf-8", "dev": "d"},
    )
    assert training_source(config, None, revision=None, test="t")[1]["test"] == "t"
    defaults = training_source(TrainConfig())
    assert defaults[0] is None
    assert defaults[1] == {
        **{"encoding": "utf-8", "tag_column": -1, "lang": "en", "misaligned": "error"},
        **{"data_format": "auto", "map_labels": None, "dev_fraction": 0.0, "test_fraction": 0.0},
        **{"seed": 13, "dev": None, "test": None, "revision": None},
    }


def test_reliability_by_hand():
    from tagger.evaluation import format_calibration, reliability

    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "O"]]
    entities = [
        [(0, 2, "PER", 0.95), (3, 4, "ORG", 0.92)],  # right, wrong type
        [(0, 1, "ORG", 0.55), (1, 2, "LOC", 0.15)],  # right, spurious
    ]
    table = reliability(gold, entities, bins=10)
    rows = {round(r["low"], 1): r for r in table["bins"] if r["count"]}
    assert rows[0.9] == {
        "low": 0.9,
        "high": 1.0,
        "count": 2,
        "precision": 0.5,
        "confidence": pytest.approx(0.935),
    }
    assert rows[0.5]["precision"] == 1.0 and rows[0.1]["precision"] == 0.0
    # ECE = 2/4 * |0.5 - 0.935| + 1/4 * |1 - 0.55| + 1/4 * |0 - 0.15|
    assert table["ece"] == pytest.approx(0.5 * 0.435 + 0.25 * 0.45 + 0.25 * 0.15)
    assert table["high_confidence"] == {"threshold": 0.9, "precision": 0.5, "share": 0.5}
    text = format_calibration(table)
    assert "expected calibration error: 36.75 points" in text
    assert "confidence >= 0.9: precision 50.00% on 50.0% of the 4 predicted entities" in text
    assert reliability([], [])["ece"] == 0.0


def test_evaluate_calibration_errors_and_threshold(tagger_model, tiny_corpus):
    full = evaluate(tagger_model, tiny_corpus, calibration=True, errors=True)
    assert full["calibration"]["entities"] == full["errors"]["mentions"]["pred"] > 0
    assert full["errors"]["correct"] == round(
        full["precision"] * full["errors"]["mentions"]["pred"]
    )
    strict = evaluate(tagger_model, tiny_corpus, min_confidence=1.0)
    assert strict["min_confidence"] == 1.0
    assert strict["recall"] <= full["recall"]
