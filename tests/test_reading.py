"""Reading options shared by every format: --map-labels, --dev/--test-fraction, and
scoring a model on data with entity types it does not know."""

from __future__ import annotations

import json

import pytest
from conftest import conll_text, make_sentences, tiny_config
from typer.testing import CliRunner

from tagger.cli import app
from tagger.config import TrainConfig
from tagger.data import carve, load_data, read_source, report
from tagger.errors import TaggerError

runner = CliRunner()


def write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


# ----------------------------------------------------------------- map_labels


IOB1 = """EU I-ORG
rejects O
German I-MISC
call O
to O
boycott O
British I-MISC
lamb O

Peter I-PER
Blackburn I-PER
Smith B-PER
Jones I-PER

"""


def test_map_labels_drops_a_type_and_keeps_iob1_boundaries(tmp_path):
    corpus = read_source(write(tmp_path / "train.txt", IOB1), map_labels="MISC=O")
    first, second = corpus.splits["train"]
    assert first.tags == ["B-ORG", "O", "O", "O", "O", "O", "O", "O"]
    # IOB1's B-PER after I-PER starts a second mention: still two after mapping.
    assert second.tags == ["B-PER", "I-PER", "B-PER", "I-PER"]
    assert corpus.notes == ["map_labels: MISC -> dropped (2 mentions)"]


def test_map_labels_renames_and_merges_types_without_joining_mentions(tmp_path):
    corpus = read_source(write(tmp_path / "train.txt", IOB1), map_labels="PER=PERSON,ORG=PERSON")
    first, second = corpus.splits["train"]
    assert first.tags[0] == "B-PERSON"
    assert second.tags == ["B-PERSON", "I-PERSON", "B-PERSON", "I-PERSON"]
    rep = report(corpus)
    assert rep["splits"]["train"]["mentions"] == {"MISC": 2, "PERSON": 3}


def test_map_labels_applies_to_every_split(tiny_corpus):
    data = load_data(tiny_corpus, map_labels={"ORG": "O"})
    for split in data.values():
        assert not any("ORG" in t for t in split.features["ner_tags"].feature.names)


def test_map_labels_typo_is_refused(tmp_path):
    with pytest.raises(TaggerError, match=r"no MSIC mention in .*train.txt \(types are case"):
        read_source(write(tmp_path / "train.txt", IOB1), map_labels="MSIC=O")


@pytest.mark.parametrize("spec", ["MISC", "MISC=", "=O", "MISC=O,,", "A B=O", "MISC=O,MISC=PER"])
def test_map_labels_syntax_errors_name_the_key(spec):
    with pytest.raises(TaggerError, match="map_labels"):
        TrainConfig(map_labels=spec).validate()


# ----------------------------------------------------------------- fractions


def docs_text(n_docs: int, per_doc: int, seed: int = 0) -> str:
    parts = []
    for d in range(n_docs):
        parts.append(conll_text(make_sentences(per_doc, seed + d), docstart=True))
    return "".join(parts)


def test_dev_fraction_keeps_documents_whole_and_is_reproducible(tmp_path):
    path = write(tmp_path / "train.txt", docs_text(20, 3))
    corpus = read_source(path, dev_fraction=0.2, test_fraction=0.1, seed=5)
    docs = {split: {s.doc for s in sents} for split, sents in corpus.splits.items()}
    assert len(docs["validation"]) == 4 and len(docs["test"]) == 2 and len(docs["train"]) == 14
    assert not (docs["train"] & docs["validation"]) and not (docs["train"] & docs["test"])
    assert all(len(s) == 3 * len(docs[split]) for split, s in corpus.splits.items())
    again = read_source(path, dev_fraction=0.2, test_fraction=0.1, seed=5)
    other = read_source(path, dev_fraction=0.2, test_fraction=0.1, seed=6)
    origins = lambda c: [s.origin for s in c.splits["validation"]]  # noqa: E731
    assert origins(again) == origins(corpus)
    assert origins(other) != origins(corpus)
    assert "split by document (seed 5)" in corpus.notes[-1]


def test_dev_fraction_splits_by_sentence_without_documents(tmp_path):
    path = write(tmp_path / "train.txt", conll_text(make_sentences(50, 1), docstart=False))
    corpus = read_source(path, dev_fraction=0.1)
    assert len(corpus.splits["validation"]) == 5 and len(corpus.splits["train"]) == 45
    assert corpus.splits["validation"][0].doc is None
    assert "split by sentence" in corpus.notes[-1]


def test_dev_fraction_refused_when_the_data_has_a_dev_split(tiny_corpus):
    with pytest.raises(TaggerError, match="--dev-fraction carves a validation split .* already"):
        read_source(tiny_corpus, dev_fraction=0.1)


def test_too_few_documents_to_carve(tmp_path):
    corpus = read_source(write(tmp_path / "train.txt", docs_text(2, 2)))
    with pytest.raises(TaggerError, match="2 documents are too few"):
        carve(corpus, 0.5, 0.5, 0)


def test_fractions_must_leave_training_data():
    with pytest.raises(TaggerError, match="dev_fraction \\+ test_fraction must be below 1"):
        TrainConfig(dev_fraction=0.6, test_fraction=0.4).validate()


def test_training_from_one_file_records_the_split(tmp_path):
    from tagger.evaluation import evaluate
    from tagger.training import train

    path = write(tmp_path / "all.txt", docs_text(30, 3))
    out = train(
        tiny_config(
            data=str(path), dev_fraction=0.2, test_fraction=0.2, output=str(tmp_path / "m")
        ),
        progress=False,
    )
    saved = json.loads((out / "config.json").read_text())
    assert saved["config"]["dev_fraction"] == 0.2 and saved["config"]["seed"] == 13
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["test"]["support"] > 0
    # evaluate on the model's own source carves the same test split again
    assert evaluate(out)["f1"] == pytest.approx(metrics["test_f1"])


# ----------------------------------------------------------------- unknown types


@pytest.fixture(scope="module")
def model_without_org(tmp_path_factory, tiny_corpus):
    from tagger.training import train

    out = tmp_path_factory.mktemp("no_org") / "m"
    config = tiny_config(data=str(tiny_corpus), output=str(out), map_labels="ORG=O", max_epochs=6)
    return train(config, progress=False)


def test_evaluate_counts_unknown_types_as_missed(model_without_org, tiny_corpus):
    from tagger.evaluation import evaluate, format_report

    own = evaluate(model_without_org)  # read as trained: ORG dropped
    assert own["unknown_types"] == [] and "ORG" not in own["per_type"]
    full = evaluate(model_without_org, str(tiny_corpus))  # ORG as annotated
    assert full["unknown_types"] == ["ORG"]
    assert full["per_type"]["ORG"]["recall"] == 0.0 and full["per_type"]["ORG"]["support"] > 0
    assert full["recall"] < own["recall"]
    assert "the model does not know ORG: those mentions count as missed" in format_report(full)


def test_cli_evaluate_with_map_labels(model_without_org, tiny_corpus):
    result = runner.invoke(
        app,
        ["evaluate", str(model_without_org), "--data", str(tiny_corpus), "--map-labels", "ORG=O"],
    )
    assert result.exit_code == 0, result.output
    assert "does not know" not in result.output


def test_cli_data_reports_what_reading_changed(tmp_path):
    path = write(tmp_path / "train.txt", docs_text(10, 2))
    result = runner.invoke(
        app, ["data", str(path), "--map-labels", "ORG=O", "--dev-fraction", "0.2"]
    )
    assert result.exit_code == 0, result.output
    assert "map_labels: ORG -> dropped" in result.output
    assert "split by document (seed 13): train 16, validation 4 sentences" in result.output
    assert "ORG" not in result.output.split("\n")[0]  # the table's header


def test_cli_data_bad_fraction_is_one_line(tmp_path):
    path = write(tmp_path / "train.txt", docs_text(3, 2))
    result = runner.invoke(app, ["data", str(path), "--dev-fraction", "1.5"])
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        "error: options: dev_fraction must be in [0, 1), not 1.5"
    ]
