"""The training run as an object: the early-stopping record, snapshots that restore the
same run, and the one function that writes a final model folder."""

from __future__ import annotations

import json

import pytest
from conftest import tiny_config

from tagger.checkpoint import load_checkpoint, save_checkpoint
from tagger.predict import Tagger
from tagger.trainer import EarlyStopping, TrainingRun
from tagger.training import build, train


def test_early_stopping_records_the_best_epoch_and_stops_after_patience():
    stopping = EarlyStopping(patience=2)
    assert [stopping.record(e, f1) for e, f1 in enumerate([0.5, 0.7, 0.7, 0.6], 1)] == [
        True,
        True,
        False,
        False,
    ]
    assert (stopping.best_epoch, stopping.best_f1, stopping.stale) == (2, 0.7, 2)
    assert stopping.should_stop
    assert stopping.record(5, 0.8) and not stopping.should_stop and stopping.best_epoch == 5


def test_a_snapshot_restores_the_same_run(tiny_corpus, tmp_path):
    """Two epochs straight, or one epoch, a snapshot through disk, a fresh run restored
    from it and the second epoch: the same log and the same dev scores."""
    config = tiny_config(data=str(tiny_corpus), dropout=0.3, word_dropout=0.1)
    straight = TrainingRun(build(config))
    for epoch in (1, 2):
        straight.epoch(epoch, progress=False)

    first = TrainingRun(build(config))
    first.epoch(1, progress=False)
    save_checkpoint(tmp_path / "ckpt", first.snapshot(1, seconds=1.0))
    again = TrainingRun(build(config))
    again.restore(load_checkpoint(tmp_path / "ckpt"))
    again.epoch(2, progress=False)

    strip = ("seconds", "tokens_per_s")
    log = [{k: v for k, v in e.items() if k not in strip} for e in again.epochs]
    assert log == [{k: v for k, v in e.items() if k not in strip} for e in straight.epochs]
    assert again.score("test") == straight.score("test")
    assert again.seconds_before == 1.0 and again.stopping == straight.stopping


def test_an_ensemble_with_vectors_saves_the_word_size_of_the_vectors(tiny_corpus, tmp_path):
    """The ensemble's config takes the vectors' dimension, as its members' do, so the
    saved folder loads (it used to keep the config's word_dim and fail to load)."""
    words = ["john", "smith", "paris", "berlin", "visited", "the", "."]
    vectors = tmp_path / "vectors.txt"
    vectors.write_text("".join(f"{w} {i / 10} 0.5 -0.5 1.0 {i}\n" for i, w in enumerate(words)))
    out = tmp_path / "ens"
    config = tiny_config(
        data=str(tiny_corpus), embeddings=str(vectors), ensemble=2, max_epochs=1, word_dim=16
    )
    train(config, output=str(out), progress=False)
    tagger = Tagger.load(out)
    assert tagger.config.word_dim == 5 and tagger.config.ensemble == 2
    metrics = json.loads((out / "metrics.json").read_text())
    assert list(metrics)[:3] == ["best_epoch", "dev_f1", "test_f1"]
    assert metrics["best_epoch"] is None and len(metrics["members"]) == 2


@pytest.mark.parametrize("key", ["best_epoch", "seconds", "interrupted", "epochs"])
def test_metrics_of_a_single_model_keep_their_keys(trained_model, key):
    metrics = json.loads((trained_model / "metrics.json").read_text())
    assert key in metrics and list(metrics)[0] == "best_epoch"
