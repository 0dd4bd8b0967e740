"""The training loop: reproducibility, early stopping, refusals, what it writes."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
from conftest import conll_text, make_sentences, tiny_config, write_corpus
from safetensors.torch import load_file

from tagger import schemes
from tagger.config import REFERENCE_SENTENCES, TrainConfig
from tagger.data import decoded_tags, load_data
from tagger.errors import TaggerError
from tagger.training import fingerprint, train


def metrics_of(path) -> dict:
    return json.loads((path / "metrics.json").read_text())


def test_same_seed_same_model(tiny_corpus, tmp_path):
    config = tiny_config(data=str(tiny_corpus), max_epochs=2, dropout=0.3, word_dropout=0.1)
    a = train(config, output=str(tmp_path / "a"), progress=False)
    b = train(config, output=str(tmp_path / "b"), progress=False)
    c = train(config, output=str(tmp_path / "c"), seed=14, progress=False)
    weights = [(p / "model.safetensors").read_bytes() for p in (a, b, c)]
    assert weights[0] == weights[1]
    assert weights[0] != weights[2]

    def strip(m):
        return [
            {k: v for k, v in e.items() if k not in ("seconds", "tokens_per_s")}
            for e in m["epochs"]
        ]

    assert strip(metrics_of(a)) == strip(metrics_of(b))
    assert metrics_of(a)["dev"] == metrics_of(b)["dev"]
    assert metrics_of(a)["test"] == metrics_of(b)["test"]


def test_metrics_and_overrides(tiny_corpus, tmp_path):
    path = train(
        tiny_config(data=str(tiny_corpus), max_epochs=3, output=str(tmp_path / "x")),
        max_epochs=2,
        cell="gru",
        progress=False,
    )
    metrics = metrics_of(path)
    assert [e["epoch"] for e in metrics["epochs"]] == [1, 2]
    assert metrics["best_epoch"] in (1, 2)
    best = metrics["epochs"][metrics["best_epoch"] - 1]
    assert metrics["dev_f1"] == best["dev_f1"] == metrics["dev"]["f1"]
    assert best["dev_f1"] == max(e["dev_f1"] for e in metrics["epochs"])
    assert metrics["test_f1"] == metrics["test"]["f1"]
    assert metrics["interrupted"] is False and metrics["parameters"] > 0
    # lr decays as lr / (1 + decay * epoch) after each epoch; the decay was left unset,
    # so it is scaled to the corpus: 60 sentences, 8 updates an epoch at batch 8.
    header = json.loads((path / "config.json").read_text())
    decay = header["config"]["lr_decay"]
    assert decay == pytest.approx(0.05 * 8 / math.ceil(REFERENCE_SENTENCES / 8), abs=1e-6)
    assert metrics["epochs"][0]["lr"] == pytest.approx(0.02 / (1 + decay))
    assert metrics["epochs"][1]["lr"] == pytest.approx(0.02 / (1 + 2 * decay))
    assert header["config"]["max_epochs"] == 2 and header["config"]["cell"] == "gru"
    data = load_data(tiny_corpus)
    assert header["data"]["fingerprint"] == fingerprint(
        data["train"]["tokens"], decoded_tags(data["train"])
    )
    assert header["data"]["source"] == str(tiny_corpus)


def test_training_learns(trained_model):
    metrics = metrics_of(trained_model)
    assert metrics["dev_f1"] > 0.9 and metrics["test_f1"] > 0.9
    losses = [e["loss"] for e in metrics["epochs"]]
    assert losses[-1] < losses[0] / 2


def test_early_stopping(tmp_path):
    """Dev has no mentions, so dev F1 is 0 every epoch: epoch 1 is best, epoch 2 stale."""
    folder = tmp_path / "corpus"
    write_corpus(folder, n_train=20, n_dev=1, n_test=1)
    (folder / "dev.txt").write_text(conll_text([(["Nothing", "happened", "."], ["O", "O", "O"])]))
    path = train(
        tiny_config(data=str(folder), output=str(tmp_path / "m"), max_epochs=6, patience=2),
        progress=False,
    )
    metrics = metrics_of(path)
    assert len(metrics["epochs"]) == 3 < 6
    assert metrics["best_epoch"] == 1
    assert all(e["dev_f1"] == 0.0 for e in metrics["epochs"])
    assert "calibration" not in metrics  # one dev sentence: nothing to fit and measure on


def test_missing_validation_split(tmp_path):
    folder = tmp_path / "corpus"
    folder.mkdir()
    (folder / "train.txt").write_text(conll_text(make_sentences(5, 0)))
    out = tmp_path / "m"
    with pytest.raises(TaggerError) as err:
        train(tiny_config(data=str(folder), output=str(out)), progress=False)
    assert str(err.value) == (
        "the data has no validation split, needed for early stopping: give --dev PATH "
        "(or a folder with dev.txt), or carve one out with --dev-fraction 0.1"
    )
    assert not out.exists()


def test_existing_output_refused_before_anything_else(tmp_path):
    out = tmp_path / "m"
    out.mkdir()
    # The data does not exist either: the output check must come first.
    with pytest.raises(TaggerError) as err:
        train(tiny_config(data=str(tmp_path / "no-such-data"), output=str(out)), progress=False)
    assert str(err.value) == f"{out} already exists; pass --overwrite to replace it"


@pytest.mark.parametrize("overwrite", [False, True])
def test_a_folder_of_other_files_is_never_replaced(tmp_path, overwrite):
    out = tmp_path / "m"
    out.mkdir()
    (out / "keep").write_text("x")
    with pytest.raises(TaggerError) as err:
        train(tiny_config(data=str(tmp_path / "no-data"), output=str(out), overwrite=overwrite))
    assert str(err.value) == (
        f"{out} is a folder of other files (keep), not a tagger model folder; tagger "
        "replaces only what it wrote itself, even with --overwrite: choose another --output"
    )
    assert [p.name for p in out.iterdir()] == ["keep"]


def test_overwrite(tiny_corpus, trained_model, tmp_path):
    out = tmp_path / "m"
    shutil.copytree(trained_model, out)
    before = (out / "model.safetensors").read_bytes()
    train(
        tiny_config(data=str(tiny_corpus), output=str(out), max_epochs=1, overwrite=True),
        progress=False,
    )
    assert (out / "model.safetensors").read_bytes() != before
    assert json.loads((out / "metrics.json").read_text())["epochs"][-1]["epoch"] == 1


def test_invalid_config_is_refused(tiny_corpus, tmp_path):
    with pytest.raises(TaggerError) as err:
        train(
            tiny_config(data=str(tiny_corpus), output=str(tmp_path / "m"), cell="transformer"),
            progress=False,
        )
    assert str(err.value) == "config: cell must be one of rnn, lstm, gru, not 'transformer'"


def test_bioes_crf_training(tiny_corpus, tmp_path):
    from tagger.predict import Tagger

    path = train(
        tiny_config(
            data=str(tiny_corpus),
            output=str(tmp_path / "m"),
            scheme="BIOES",
            decoder="crf",
            cell="rnn",
            char_encoder="lstm",
            max_epochs=1,
        ),
        progress=False,
    )
    model = Tagger.load(path)
    assert any(label.startswith("S-") for label in model.vocab.labels)
    tags = model.predict([["Angela", "Merkel", "visited", "Paris", "."]])[0]
    assert schemes.to_iob2(tags) == tags  # predictions come back as IOB2


def test_progress_output(tiny_corpus, tmp_path, capsys):
    train(
        tiny_config(data=str(tiny_corpus), output=str(tmp_path / "m"), max_epochs=1), progress=True
    )
    out = capsys.readouterr().out
    assert "epoch   1/1" in out and "model saved to" in out
    train(
        tiny_config(data=str(tiny_corpus), output=str(tmp_path / "n"), max_epochs=1), progress=False
    )
    assert capsys.readouterr().out == ""


def test_resolve_device():
    import torch

    from tagger.runtime import resolve_device

    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(TaggerError) as err:
        resolve_device("banana")
    assert str(err.value) == "unknown device 'banana'; use auto, cpu, cuda or cuda:N"
    if not torch.cuda.is_available():
        with pytest.raises(TaggerError) as err:
            resolve_device("cuda:0")
        assert str(err.value) == "device 'cuda:0' asked for, but CUDA is not available here"


def test_unknown_device_is_refused_before_training(tiny_corpus, tmp_path):
    with pytest.raises(TaggerError, match="unknown device 'tpu'"):
        train(
            tiny_config(data=str(tiny_corpus), output=str(tmp_path / "m"), device="tpu"),
            progress=False,
        )
    assert not (tmp_path / "m").exists()


def test_same_seed_same_model_with_two_threads(tiny_corpus, tmp_path):
    """Multi-threaded CPU kernels must not make runs irreproducible (the default uses one
    thread per core). Wide enough layers that the backward passes really run in parallel."""
    import torch

    config = tiny_config(
        data=str(tiny_corpus),
        max_epochs=1,
        threads=2,
        char_hidden=256,
        hidden_size=64,
        batch_size=32,
        word_dropout=0.1,
    )
    try:
        paths = [train(config, output=str(tmp_path / n), progress=False) for n in "ab"]
    finally:
        torch.set_num_threads(1)
    a, b = (load_file(p / "model.safetensors") for p in paths)
    assert [k for k in a if not torch.equal(a[k], b[k])] == []


def _cpu_runs_bf16_lstm() -> bool:
    """Whether oneDNN can run an LSTM under CPU bf16 autocast here (it needs AVX-512
    with BF16 or AMX; capped at AVX2 the primitive cannot be created)."""
    import torch

    lstm = torch.nn.LSTM(4, 4, batch_first=True)
    try:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            lstm(torch.zeros(1, 2, 4))
    except RuntimeError:
        return False
    return True


def test_bf16_training(tiny_corpus, tmp_path, monkeypatch):
    """``precision="bf16"`` (``train --precision bf16``): the steps and dev scoring run
    under CPU bf16 autocast, the CRF still gets fp32 emissions, the model learns, and
    the config records it; ``auto`` stays fp32 on a CPU."""
    import torch

    import tagger.runtime
    import tagger.trainer
    from tagger.batching import encode, make_batch
    from tagger.predict import Tagger
    from tagger.training import build

    if not _cpu_runs_bf16_lstm():
        pytest.skip("this CPU (or ONEDNN_MAX_CPU_ISA) has no bf16 LSTM kernel for autocast")
    seen = []
    real = tagger.runtime.precision_autocast

    def spy(mode, device):
        seen.append(mode)
        return real(mode, device)

    monkeypatch.setattr(tagger.trainer, "precision_autocast", spy)
    monkeypatch.setattr(tagger.predict, "precision_autocast", spy)
    assert tagger.trainer.TrainingRun(build(tiny_config(data=str(tiny_corpus)))).precision == "fp32"
    config = tiny_config(
        data=str(tiny_corpus), max_epochs=8, precision="bf16", output=str(tmp_path / "m")
    )
    path = train(config, progress=False)
    assert seen and set(seen) == {"bf16"}  # every step and every dev scoring
    assert metrics_of(path)["dev_f1"] > 0.9
    saved = json.loads((path / "config.json").read_text())["config"]
    assert saved["precision"] == "bf16"
    tagger_model = Tagger.load(path, device="cpu", precision="bf16")
    enc = encode(tagger_model.vocab, [["John", "Smith", "visited", "Paris", "."]])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        emissions = tagger_model.model.emissions(make_batch(enc, np.arange(1)))
    assert emissions.dtype == torch.float32


def test_bf16_training_where_it_cannot_run(tiny_corpus, tmp_path, monkeypatch):
    """Asked for on a CPU without bf16 kernels: one error line, nothing written."""
    import tagger.runtime

    monkeypatch.setattr(tagger.runtime, "cpu_bf16_speedup", lambda: None)
    config = tiny_config(data=str(tiny_corpus), precision="bf16", output=str(tmp_path / "m"))
    with pytest.raises(TaggerError, match="precision bf16 asked for, but this CPU has no bf16"):
        train(config, progress=False)
    assert not (tmp_path / "m").exists()


def test_unk_replace_follows_training_counts(tiny_corpus):
    """Each training word's replacement rate is word_dropout plus a/(a+count) on top."""
    from collections import Counter

    from tagger.training import build

    setup = build(tiny_config(data=str(tiny_corpus), word_dropout=0.1, unk_replace=2.0))
    vocab, emb = setup.vocab, setup.model.embedder
    counts = Counter(vocab.normalize(t) for toks in setup.data["train"]["tokens"] for t in toks)
    for word, n in list(counts.items())[:20]:
        expected = 1 - 0.9 * (1 - 2 / (2 + n))
        assert emb.drop_prob[vocab.word_id(word)].item() == pytest.approx(expected), word
    assert emb.drop_prob[1].item() == pytest.approx(0.1)  # UNK itself: never counted
    assert emb.drops_words


@pytest.mark.parametrize(
    ("sentences", "batch_size", "expected"),
    [
        (14041, None, (64, 30, 5, 0.05)),  # CoNLL-2003, where the defaults were tuned
        (60000, None, (64, 30, 5, 0.05)),  # larger: kept
        (9999, None, (32, 43, 8, 0.035649)),  # 313 updates against CoNLL-2003's 439
        (10000, None, (64, 43, 8, 0.035682)),  # 157 against 220
        (3000, None, (32, 141, 24, 0.010706)),  # 94 updates an epoch: 4.67 x the epochs
        (3000, 64, (64, 141, 24, 0.010682)),  # 47 against 220: the same epochs
        (3000, 10, (10, 141, 24, 0.010676)),  # 300 against 1,405
    ],
)
def test_the_schedule_scales_with_the_updates_per_epoch(sentences, batch_size, expected):
    config, line = TrainConfig(batch_size=batch_size).scheduled(sentences)
    assert (config.batch_size, config.max_epochs, config.patience, config.lr_decay) == expected
    assert line.startswith("schedule: ")
    assert ("batch_size" in line) == (batch_size is None) and "max_epochs" in line
    given = TrainConfig(batch_size=32, max_epochs=3, patience=2, lr_decay=0.1)
    assert given.scheduled(3000) == (given, "")
    some, line = TrainConfig(batch_size=32, max_epochs=3).scheduled(3000)
    assert (some.max_epochs, some.patience) == (3, 24) and "max_epochs" not in line
