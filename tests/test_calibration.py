"""Temperature scaling: probabilities at T, the fit, and the model folder that keeps it."""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import replace

import pytest
import torch
from typer.testing import CliRunner

from tagger.calibration import DecodedSplit, calibrate, fit_temperature
from tagger.cli import app
from tagger.crf import CRF
from tagger.errors import TaggerError
from tagger.predict import Tagger

LABELS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]


def tempered_copy(crf: CRF, t: float) -> CRF:
    """A CRF whose learnt scores are crf's divided by t (the penalties stay)."""
    other = CRF(LABELS, "IOB2")
    with torch.no_grad():
        for name, p in crf.named_parameters():
            other.get_parameter(name).copy_(p / t)
    return other


@pytest.mark.parametrize("t", [0.5, 1.0, 2.5])
def test_temperature_divides_every_score(t):
    torch.manual_seed(0)
    crf = CRF(LABELS, "IOB2")
    with torch.no_grad():
        for p in crf.parameters():
            p.normal_()
    emissions = torch.randn(3, 5, len(LABELS), dtype=torch.float64) * 3
    crf = crf.double()
    mask = torch.tensor([[1] * 5, [1] * 3 + [0] * 2, [1] + [0] * 4], dtype=torch.bool)
    other = tempered_copy(crf, t).double()
    expected = other.marginals(emissions / t, mask)
    assert torch.allclose(crf.marginals(emissions, mask, temperature=t), expected, atol=1e-9)
    best = crf.decode(emissions, mask)
    spans = torch.tensor([[0, 0, 2], [1, 1, 3]])
    got = crf.span_log_probs(emissions, mask, best, spans, temperature=t)
    assert torch.allclose(got, other.span_log_probs(emissions / t, mask, best, spans), atol=1e-9)
    # the decoded path does not depend on the temperature
    assert torch.equal(other.decode(emissions / t, mask), best)


def test_a_decoded_split_reads_what_predict_reads(tagger_model, tiny_corpus):
    from tagger import schemes
    from tagger.data import decoded_tags, load_data

    dev = load_data(tiny_corpus)["validation"]
    tokens, gold = list(dev["tokens"]), [schemes.to_iob2(t) for t in decoded_tags(dev)]
    split = DecodedSplit.of(tagger_model, tokens, gold, batch_size=4)
    decoder = tagger_model.model.decoder
    for t in (0.5, 2.0):
        saved, tagger_model.temperature = tagger_model.temperature, t
        try:
            expected = tagger_model.tag(tokens).entities
        finally:
            tagger_model.temperature = saved
        got = split.entities(decoder, t)
        assert [[e[:3] for e in s] for s in got] == [[e[:3] for e in s] for s in expected]
        scores = [p for s in got for *_, p in s]
        assert scores == pytest.approx([p for s in expected for *_, p in s], abs=1e-6)
    truth = [set(schemes.spans(tags)) for tags in gold]
    right = [(s, e, label) in truth[i] for i, ents in enumerate(got) for s, e, label, _ in ents]
    assert split.correct.tolist() == right


def test_log_loss_is_the_binary_log_loss(tagger_model, tiny_corpus):
    from tagger import schemes
    from tagger.data import decoded_tags, load_data

    dev = load_data(tiny_corpus)["validation"]
    tokens, gold = list(dev["tokens"]), [schemes.to_iob2(t) for t in decoded_tags(dev)]
    split = DecodedSplit.of(tagger_model, tokens, gold)
    decoder = tagger_model.model.decoder
    scores = [p for s in split.entities(decoder, 1.0) for *_, p in s]
    clipped = [min(max(p, 1e-6), 1 - 1e-6) for p in scores]
    expected = -sum(
        math.log(p if ok else 1 - p) for p, ok in zip(clipped, split.correct.tolist())
    ) / len(scores)
    assert split.log_loss(decoder, 1.0) == pytest.approx(expected, rel=1e-4)


def test_fit_prefers_the_temperature_that_fits(tagger_model, tiny_corpus):
    from tagger import schemes
    from tagger.data import decoded_tags, load_data

    dev = load_data(tiny_corpus)["validation"]
    tokens, gold = list(dev["tokens"]), [schemes.to_iob2(t) for t in decoded_tags(dev)]
    t = fit_temperature(tagger_model, tokens, gold)
    assert 0.25 <= t <= 8.0
    split = DecodedSplit.of(tagger_model, tokens, gold)
    if split.correct.all():  # every entity right: the sharper the better
        assert t == pytest.approx(0.25)
    else:
        decoder = tagger_model.model.decoder
        loss = split.log_loss(decoder, t)
        assert loss <= min(split.log_loss(decoder, x) for x in (0.3, 1.0, 3.0, 7.0))


def test_training_calibrates_and_calibrate_refits_the_same(trained_model, tmp_path):
    trained = Tagger.load(trained_model)
    fitted = trained.metrics["calibration"]
    assert trained.temperature == fitted["temperature"]
    assert set(fitted) >= {"fitted_on", "validation (other half)", "test"}
    folder = tmp_path / "model"
    shutil.copytree(trained_model, folder)
    assert calibrate(folder)["temperature"] == pytest.approx(trained.temperature)


def test_calibrate_false_leaves_the_scores_raw(tiny_corpus, tmp_path):
    from conftest import tiny_config

    from tagger.training import train

    config = tiny_config(data=str(tiny_corpus), output=str(tmp_path / "m"), max_epochs=2)
    folder = train(replace(config, calibrate=False), progress=False)
    model = Tagger.load(folder)
    assert model.temperature == 1.0
    assert "calibration" not in model.metrics


def test_calibrate_records_the_temperature_and_keeps_the_tags(trained_model, tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(trained_model, folder)
    header = json.loads((folder / "config.json").read_text())
    header["calibration_temperature"] = 1.0  # as a model trained with calibrate = false
    (folder / "config.json").write_text(json.dumps(header))
    before = Tagger.load(folder)
    report = calibrate(folder)
    after = Tagger.load(folder)
    assert after.temperature == report["temperature"] != 1.0
    header = json.loads((folder / "config.json").read_text())
    assert header["calibration_temperature"] == report["temperature"]
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["calibration"]["temperature"] == report["temperature"]
    assert set(report) >= {"fitted_on", "validation (other half)", "test"}
    sentences = [["Angela", "Merkel", "visited", "Paris", "."], ["Globex", "rose", "."]]
    assert after.predict(sentences) == before.predict(sentences)
    a, b = before.predict_spans(sentences), after.predict_spans(sentences)
    assert [[(e["start"], e["end"], e["label"]) for e in s] for s in a] == [
        [(e["start"], e["end"], e["label"]) for e in s] for s in b
    ]
    assert [e["score"] for s in a for e in s] != [e["score"] for s in b for e in s]
    assert (folder / "training.png").is_file() == (trained_model / "training.png").is_file()


@pytest.mark.parametrize("value", [0, -1, 1e9, "2", None, float("nan")])
def test_a_bad_temperature_in_config_json_is_one_line(trained_model, tmp_path, value):
    folder = tmp_path / "model"
    shutil.copytree(trained_model, folder)
    header = json.loads((folder / "config.json").read_text())
    header["calibration_temperature"] = value
    (folder / "config.json").write_text(json.dumps(header))
    with pytest.raises(TaggerError, match="calibration_temperature"):
        Tagger.load(folder)


def test_cli_calibrate_then_evaluate(trained_model, tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(trained_model, folder)
    runner = CliRunner()
    result = runner.invoke(app, ["calibrate", str(folder)])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("temperature ")
    assert "validation (other half), before:" in result.output
    assert "expected calibration error:" in result.output
    shown = runner.invoke(app, ["evaluate", str(folder)])
    t = Tagger.load(folder).temperature
    assert f"confidence of the predicted entities (temperature {t:.3g})" in shown.output
