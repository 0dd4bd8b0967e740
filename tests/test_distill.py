"""Distillation: differentiable marginals, the student's loss, and a real student trained
from a real teacher (a tiny model), with unlabeled text and the one-line refusals."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from conftest import make_sentences, tiny_config

from tagger.batching import encode, make_batch
from tagger.config import TrainConfig
from tagger.crf import CRF
from tagger.data import decoded_tags, load_data
from tagger.distill import Distilling, Teacher, distillation_split
from tagger.errors import TaggerError
from tagger.predict import Tagger
from tagger.training import train

LABELS = ["O", "B-PER", "I-PER", "E-PER", "S-PER"]


def test_log_marginals_are_the_marginals_and_have_gradients():
    torch.manual_seed(0)
    crf = CRF(LABELS, "BIOES").double()
    with torch.no_grad():
        for p in crf.parameters():
            p.normal_()
    emissions = torch.randn(3, 6, len(LABELS), dtype=torch.float64, requires_grad=True)
    mask = torch.tensor([[1] * 6, [1] * 4 + [0] * 2, [1] + [0] * 5], dtype=torch.bool)
    for t in (1.0, 2.0):
        got = crf.log_marginals(emissions, mask, t).exp() * mask.unsqueeze(2)
        assert torch.allclose(got, crf.marginals(emissions.detach(), mask, t), atol=1e-10)
    assert torch.autograd.gradcheck(lambda e: crf.log_marginals(e, mask, 1.5), (emissions,))


def teacher_batch(model: Tagger, tokens, tags, weight: float, temperature: float):
    teacher = Teacher(model.path, model.vocab.labels, torch.device("cpu"))
    enc = distillation_split(teacher, model.vocab, tokens, tags, [], temperature)
    return Distilling(model.model, weight, temperature), make_batch(enc, np.arange(len(enc)))


@pytest.fixture
def teacher(trained_model):
    model = Tagger.load(trained_model, device="cpu")
    model.path = trained_model
    return model


@pytest.fixture
def dev(tiny_corpus):
    dev = load_data(tiny_corpus)["validation"]
    return list(dev["tokens"]), decoded_tags(dev)


@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_a_model_does_not_diverge_from_itself(teacher, dev, temperature):
    loss, batch = teacher_batch(teacher, *dev, weight=1.0, temperature=temperature)
    loss.eval()
    with torch.no_grad():
        assert float(loss(batch)) == pytest.approx(0.0, abs=1e-4)


def test_weight_0_is_the_ordinary_loss_and_1_ignores_gold(teacher, dev):
    tokens, tags = dev
    loss, batch = teacher_batch(teacher, tokens, tags, weight=0.0, temperature=1.0)
    loss.eval()
    with torch.no_grad():
        assert float(loss(batch)) == pytest.approx(float(teacher.model.loss(batch)), rel=1e-5)
        wrong = [["B-PER"] + ["I-PER"] * (len(t) - 1) for t in tokens]
        loss, bad = teacher_batch(teacher, tokens, wrong, weight=1.0, temperature=1.0)
        loss.eval()
        assert float(loss(bad)) == pytest.approx(0.0, abs=1e-4)  # gold not used


def test_unlabeled_sentences_have_no_gold_term(teacher, dev):
    tokens, tags = dev
    teacher_of = Teacher(teacher.path, teacher.vocab.labels, torch.device("cpu"))
    enc = distillation_split(teacher_of, teacher.vocab, tokens[:3], tags[:3], tokens[3:6], 1.0)
    assert enc.unlabeled.tolist() == [False] * 3 + [True] * 3
    batch = make_batch(enc, np.arange(len(enc)))
    assert batch.labeled.tolist() == [True] * 3 + [False] * 3
    loss = Distilling(teacher.model, 0.0, 1.0).eval()
    with torch.no_grad():  # weight 0: only the labeled half counts, averaged over all six
        labeled = make_batch(encode(teacher.vocab, tokens[:3], tags[:3]), np.arange(3))
        assert float(loss(batch)) == pytest.approx(float(teacher.model.loss(labeled)) / 2, rel=1e-5)


def test_a_student_learns_from_its_teacher_and_unlabeled_text(
    trained_model, tiny_corpus, tmp_path, capsys
):
    dev_text = (tiny_corpus / "dev.txt").read_text().split("\n\n")[1]  # after -DOCSTART-
    in_dev = " ".join(line.split()[0] for line in dev_text.splitlines() if line.strip())
    raw = [" ".join(tokens) for tokens, _ in make_sentences(30, 7)]
    text = tmp_path / "raw.txt"
    text.write_text("\n".join([*raw, in_dev]) + "\n", encoding="utf-8")
    config = tiny_config(
        data=str(tiny_corpus),
        output=str(tmp_path / "student"),
        max_epochs=6,
        teacher=str(trained_model),
        unlabeled=str(text),
        distill_weight=0.7,
        distill_temperature=2.0,
    )
    folder = train(config, progress=True)
    printed = capsys.readouterr().out
    assert f"distilling {trained_model} (weight 0.7, temperature 2)" in printed
    metrics = json.loads((folder / "metrics.json").read_text())
    record = metrics["distilled"]
    assert record["teacher"] == str(trained_model)
    assert record["unlabeled_left_out"] >= 1  # the dev sentence (and repeats of others)
    assert record["unlabeled_sentences"] + record["unlabeled_left_out"] == len(raw) + 1
    teacher = json.loads((trained_model / "metrics.json").read_text())
    assert record["teacher_test_f1"] == teacher["test_f1"]
    assert metrics["test_f1"] >= teacher["test_f1"] - 0.15
    student = Tagger.load(folder)
    assert student.config.teacher == str(trained_model)  # an ordinary model folder


def test_teacher_with_other_labels_is_one_line(trained_model, tiny_corpus, tmp_path):
    config = tiny_config(
        data=str(tiny_corpus), output=str(tmp_path / "s"), scheme="IOB2", teacher=str(trained_model)
    )
    with pytest.raises(TaggerError) as err:
        train(config, progress=False)
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"{trained_model}: the teacher's labels")


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"unlabeled": "raw.txt"}, "unlabeled needs teacher"),
        ({"teacher": "m", "replay": "r", "init_from": "m0"}, "teacher and replay cannot"),
        ({"teacher": "m", "distill_weight": 1.5}, "distill_weight must be from 0 to 1"),
        ({"teacher": "m", "distill_temperature": 0}, "distill_temperature must be from 0.05"),
    ],
)
def test_config_refusals(fields, message):
    with pytest.raises(TaggerError, match=message):
        replace(TrainConfig(), **fields).validate()


def test_missing_unlabeled_file_is_one_line(trained_model, tiny_corpus, tmp_path):
    missing = tmp_path / "nope.txt"
    config = tiny_config(
        data=str(tiny_corpus),
        output=str(tmp_path / "s"),
        teacher=str(trained_model),
        unlabeled=str(missing),
    )
    with pytest.raises(TaggerError) as err:
        train(config, progress=False)
    assert str(missing) in str(err.value) and "\n" not in str(err.value)
