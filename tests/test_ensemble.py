"""Seed ensembles: members trained one after another, decoded as one model (mean label
scores, mean CRF transitions), saved as one folder, resumable between members."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import is_valid_iob2, tiny_config, write_corpus

from tagger.batching import bucket_batches, encode
from tagger.checkpoint import checkpoint_dir
from tagger.errors import TaggerError
from tagger.model import Ensemble, SequenceTagger
from tagger.predict import Tagger
from tagger.summary import layer_rows, summary
from tagger.training import ENSEMBLE_PLAN, Interrupted, train


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_corpus(tmp_path_factory.mktemp("ensemble_corpus"))


@pytest.fixture(scope="module")
def ensemble_dir(corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("ens") / "model"
    return train(tiny_config(data=str(corpus), output=str(out), ensemble=3), progress=False)


def test_ensemble_folder_holds_every_member_and_its_scores(ensemble_dir, corpus):
    tagger = Tagger.load(ensemble_dir)
    assert isinstance(tagger.model, Ensemble) and len(tagger.model.members) == 3
    metrics = json.loads((ensemble_dir / "metrics.json").read_text())
    assert [m["seed"] for m in metrics["members"]] == [13, 14, 15]
    # The members differ (their seeds), so averaging them is not a no-op.
    first, second = (m.embedder.words.weight for m in tagger.model.members[:2])
    assert not torch.equal(first, second)
    # The saved scores are the ensemble's own: re-scoring the loaded folder agrees.
    from tagger.evaluation import evaluate

    assert evaluate(ensemble_dir, str(corpus), split="validation")["f1"] == metrics["dev_f1"]
    assert not checkpoint_dir(ensemble_dir).exists()  # the members' work folder is gone


def test_ensemble_scores_are_the_members_mean(ensemble_dir, corpus):
    tagger = Tagger.load(ensemble_dir)
    ensemble = tagger.model
    sentences = [["Alice", "visited", "Paris"], ["Bob", "and", "Carol", "work", "at", "ACME"]]
    batch = next(bucket_batches(encode(tagger.vocab, sentences), 8))
    with torch.inference_mode():
        each = torch.stack([m.emissions(batch) for m in ensemble.members])
        assert torch.allclose(ensemble.emissions(batch), each.mean(0))
    crfs = [m.decoder.crf for m in ensemble.members]
    for name in ("start_transitions", "transitions", "end_transitions"):
        mean = torch.stack([getattr(c, name) for c in crfs]).mean(0)
        assert torch.allclose(getattr(ensemble.decoder.crf, name), mean)
    assert all(is_valid_iob2(t) for t in tagger.predict(sentences))


def test_ensemble_of_one_member_decodes_like_the_member(corpus, tmp_path):
    path = train(tiny_config(data=str(corpus), output=str(tmp_path / "one")), progress=False)
    single = Tagger.load(path)
    ensemble = Ensemble.of([single.model], single.config.model, single.vocab)
    both = Tagger(ensemble, single.config, single.vocab)
    sentences = [["Alice", "visited", "Paris"], ["ACME", "hired", "Bob", "Smith"]]
    assert both.predict(sentences) == single.predict(sentences)


def test_ensemble_summary_counts_every_parameter(ensemble_dir):
    model = Tagger.load(ensemble_dir).model
    total = sum(p.numel() for p in model.parameters())
    assert sum(row[3] for row in layer_rows(model)) == total
    text = summary(model)
    assert f"Total params: {total:,}" in text
    assert f"Values stored in model.safetensors: {total:,}" in text
    one = sum(p.numel() for p in model.members[0].parameters())
    assert total == 3 * one + sum(p.numel() for p in model.decoder.parameters())


def test_interrupted_ensemble_resumes_with_the_same_result(corpus, ensemble_dir, tmp_path):
    out = tmp_path / "model"
    config = tiny_config(data=str(corpus), output=str(out), ensemble=3)
    calls = []
    real = SequenceTagger.loss

    def loss_then_interrupt(self, batch):  # Ctrl-C in the first epoch of member 2
        calls.append(1)
        if len(calls) == 20:
            raise KeyboardInterrupt
        return real(self, batch)

    SequenceTagger.loss = loss_then_interrupt
    try:
        with pytest.raises(Interrupted, match="continue the ensemble with"):
            train(config, progress=False)
    finally:
        SequenceTagger.loss = real
    work = checkpoint_dir(out)
    assert (work / ENSEMBLE_PLAN).is_file() and (work / "member-0" / "config.json").is_file()
    assert not out.exists()
    with pytest.raises(TaggerError, match="holds an interrupted ensemble run"):
        train(config, progress=False)
    assert train(resume=work, progress=False) == out
    resumed = json.loads((out / "metrics.json").read_text())
    straight = json.loads((ensemble_dir / "metrics.json").read_text())
    assert resumed["dev"] == straight["dev"] and resumed["test"] == straight["test"]
    assert not work.exists()


def test_existing_model_is_not_replaced(ensemble_dir, corpus):
    with pytest.raises(TaggerError, match="already exists"):
        train(tiny_config(data=str(corpus), output=str(ensemble_dir), ensemble=2), progress=False)


def test_ensemble_in_spacy_and_with_scores(ensemble_dir, tmp_path):
    import spacy

    from tagger.spacy_component import export_spacy

    tagger = Tagger.load(ensemble_dir)
    text = "Alice Smith met Bob Jones in Paris. ACME Corp hired Carol in Berlin."
    export_spacy(ensemble_dir, tmp_path / "pipeline")
    doc = spacy.load(tmp_path / "pipeline")(text)
    found = [
        {"text": e.text, "label": e.label_, "start": e.start_char, "end": e.end_char}
        for e in doc.ents
    ]
    entities = tagger.predict_text(text)
    assert found == [{k: v for k, v in e.items() if k != "score"} for e in entities]
    assert [round(e._.tagger_confidence, 4) for e in doc.ents] == [e["score"] for e in entities]
    tags, probs = tagger.predict_with_scores([["Alice", "met", "Bob", "in", "Paris"]])
    assert all(is_valid_iob2(t) for t in tags)
    assert ((probs[0] > 0) & (probs[0] <= 1 + 1e-6)).all()


def test_ensemble_entity_scores_are_those_of_the_averaged_crf(ensemble_dir):
    """One CRF with the members' mean transitions, over their mean label scores: what
    the ensemble decodes with, so what its entity probabilities come from."""
    from tagger.crf import CRF

    tagger = Tagger.load(ensemble_dir)
    sentences = [["Alice", "Smith", "met", "Bob", "in", "Paris"], ["ACME", "Corp", "hired"]]
    found = tagger.predict_spans(sentences)
    assert any(found)
    labels, members = tagger.vocab.labels, tagger.model.members
    averaged = CRF(labels, tagger.config.model.scheme)
    with torch.no_grad():
        for name, param in averaged.named_parameters():
            param.copy_(torch.stack([m.decoder.crf.get_parameter(name) for m in members]).mean(0))
    batch = next(bucket_batches(encode(tagger.vocab, sentences), 8))
    with torch.inference_mode():
        emissions = torch.stack([m.emissions(batch) for m in members]).mean(0)
        best = averaged.decode(emissions, batch.mask)
        for row, sent in enumerate(batch.index):
            spans = torch.tensor([[row, s["start"], s["end"]] for s in found[sent]]).reshape(-1, 3)
            log_p = averaged.span_log_probs(
                emissions, batch.mask, best, spans, temperature=tagger.temperature
            )
            probs = log_p.exp()
            assert [s["score"] for s in found[sent]] == pytest.approx(probs.tolist(), abs=1e-4)


def test_compare_and_plot_read_an_ensemble(ensemble_dir):
    from typer.testing import CliRunner

    from tagger.cli import app

    metrics = json.loads((ensemble_dir / "metrics.json").read_text())
    result = CliRunner().invoke(app, ["compare", str(ensemble_dir), "--json"])
    (row,) = json.loads(result.output)
    assert row["epochs"] == sum(len(m["epochs"]) for m in metrics["members"]) == 6
    assert row["seconds_per_epoch"] > 0 and row["test_f1"] == metrics["test_f1"]
    result = CliRunner().invoke(app, ["plot", str(ensemble_dir)])
    assert result.exit_code == 1 and "an ensemble has no training curve" in result.output


def test_resumed_ensemble_keeps_its_settings(corpus, tmp_path):
    work = tmp_path / "model.checkpoint"
    work.mkdir()
    (work / ENSEMBLE_PLAN).write_text(
        json.dumps({"config": tiny_config(data=str(corpus), ensemble=2).to_dict()})
    )
    with pytest.raises(TaggerError, match="may change, not cell"):
        train(resume=work, cell="gru", progress=False)
    with pytest.raises(TaggerError, match="not config"):
        train(tiny_config(), resume=work, progress=False)
