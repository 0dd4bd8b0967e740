"""Low-precision inference (``--precision auto|fp32|bf16``): one decision in
``tagger.runtime.resolve_precision``, taken by every path that loads a model.

The suite pins ``auto`` to fp32 (``TAGGER_PRECISION`` in conftest); the tests of ``auto``
itself unset it. bf16 checks skip where this CPU cannot run bf16 at all."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from conftest import REPO, make_sentences
from typer.testing import CliRunner

import tagger.runtime
from tagger.cli import app
from tagger.errors import TaggerError
from tagger.predict import Tagger
from tagger.runtime import (
    BF16_SPEEDUP,
    PRECISION_ENV,
    cpu_bf16_speedup,
    resolve_precision,
    training_precision,
)

CPU = torch.device("cpu")
needs_bf16 = pytest.mark.skipif(
    cpu_bf16_speedup() is None,
    reason="this CPU (or ONEDNN_MAX_CPU_ISA) has no oneDNN bf16 LSTM kernel",
)
TEXT = "Angela Merkel visited Paris on Monday . John Smith works for Acme Corp in Oslo ."


@pytest.fixture
def unpinned(monkeypatch):
    """``auto`` decided by the probe, as outside the test suite."""
    monkeypatch.delenv(PRECISION_ENV, raising=False)


def no_bf16(monkeypatch) -> None:
    """A CPU on which the probe's bf16 run fails (no oneDNN kernel)."""
    monkeypatch.setattr(tagger.runtime, "cpu_bf16_speedup", lambda: None)


def subprocess_env(**extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k != PRECISION_ENV}
    return {**env, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), **extra}


# ------------------------------------------------------------------ the decision


def test_auto_follows_the_probe(monkeypatch, unpinned):
    for speedup, mode, reason in (
        (1.6, "bf16", "auto: bf16 1.6x faster than fp32 here"),
        (BF16_SPEEDUP, "bf16", "auto: bf16 1.2x faster than fp32 here"),
        (1.1, "fp32", "auto: no fast bf16 on this CPU (bf16 ran at 1.1x fp32)"),
        (0.4, "fp32", "auto: no fast bf16 on this CPU (bf16 ran at 0.4x fp32)"),
        (None, "fp32", "auto: this CPU has no bf16 LSTM kernel"),
    ):
        monkeypatch.setattr(tagger.runtime, "cpu_bf16_speedup", lambda s=speedup: s)
        found, why = resolve_precision("auto", CPU)
        assert found == mode and why.startswith(reason)
    assert resolve_precision("fp32", CPU) == ("fp32", "asked for")


def test_auto_resolves_on_this_cpu(unpinned):
    mode, reason = resolve_precision("auto", CPU)
    speedup = cpu_bf16_speedup()
    assert mode == ("bf16" if speedup is not None and speedup >= BF16_SPEEDUP else "fp32")
    assert reason.startswith("auto: ")


def test_the_environment_pins_auto(monkeypatch):
    monkeypatch.setenv(PRECISION_ENV, "fp32")
    assert resolve_precision("auto", CPU) == ("fp32", f"auto: {PRECISION_ENV}=fp32")
    assert resolve_precision("fp32", CPU)[0] == "fp32"
    monkeypatch.setenv(PRECISION_ENV, "fast")
    with pytest.raises(TaggerError, match="TAGGER_PRECISION='fast': use fp32 or bf16"):
        resolve_precision("auto", CPU)


def test_bf16_where_it_cannot_run_and_unknown_names_are_errors(monkeypatch):
    no_bf16(monkeypatch)
    with pytest.raises(TaggerError, match="precision bf16 asked for, but this CPU has no bf16"):
        resolve_precision("bf16", CPU)
    with pytest.raises(TaggerError, match="unknown precision 'fp16'; use auto, fp32, bf16"):
        resolve_precision("fp16", CPU)


def test_the_probe_leaves_threads_and_random_state_alone():
    threads, state = torch.get_num_threads(), torch.random.get_rng_state()
    speedup = cpu_bf16_speedup.__wrapped__()  # uncached: run it again
    assert speedup is None or speedup > 0
    assert torch.get_num_threads() == threads
    assert torch.equal(torch.random.get_rng_state(), state)


def test_a_tagger_made_in_code_predicts_as_in_training(tagger_model, unpinned):
    """The scorer training builds never probes: fp32 on a CPU, as the run trained."""
    made = Tagger(tagger_model.model, tagger_model.config, tagger_model.vocab)
    assert made.precision == training_precision(CPU) == "fp32"
    assert made.precision_reason == "as in training"


# ------------------------------------------------------------------ bf16 itself


@needs_bf16
def test_bf16_tags_like_fp32(trained_model, tiny_corpus):
    from tagger.evaluation import evaluate

    full = Tagger.load(trained_model, device="cpu", precision="fp32")
    half = Tagger.load(trained_model, device="cpu", precision="bf16")
    assert (full.precision, half.precision) == ("fp32", "bf16")
    sentences = [tokens for tokens, _ in make_sentences(200, seed=5)]
    a = full.tag(sentences, token_scores=True)
    b = half.tag(sentences, token_scores=True)
    pairs = [(x, y) for s, t in zip(a.tags, b.tags) for x, y in zip(s, t)]
    assert np.mean([x == y for x, y in pairs]) >= 0.95
    for found in (a, b):
        scores = [p for ents in found.entities for *_, p in ents]
        probs = np.concatenate(found.probs)
        assert scores and all(0.0 <= p <= 1.0 for p in scores)
        assert ((probs >= 0) & (probs <= 1)).all()
    f1 = [evaluate(t, str(tiny_corpus), split="test")["f1"] for t in (full, half)]
    assert abs(f1[0] - f1[1]) <= 0.05


@needs_bf16
def test_bf16_emissions_reach_the_crf_in_fp32(tagger_model):
    from tagger.batching import encode, make_batch
    from tagger.runtime import precision_autocast

    model = tagger_model.model
    batch = make_batch(encode(tagger_model.vocab, [TEXT.split()]), np.arange(1))
    with torch.inference_mode():
        with precision_autocast("bf16", CPU):
            emissions = model.emissions(batch)
            inside = model.decoder.marginals(emissions, batch.mask)
            best = model.decoder.decode(emissions, batch.mask)
        assert emissions.dtype == inside.dtype == torch.float32
        # the CRF computes as it does outside autocast: in fp32 (and float64)
        assert torch.equal(inside, model.decoder.marginals(emissions, batch.mask))
        assert torch.equal(best, model.decoder.decode(emissions, batch.mask))


# ------------------------------------------------------------------ the command


def run_predict(model, *flags: str, **env: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "tagger", "predict", "-", "--model", str(model), *flags]
    return subprocess.run(
        command,
        input=TEXT + "\n",
        capture_output=True,
        text=True,
        cwd=REPO,
        env=subprocess_env(**env),
        timeout=120,
    )


def test_verbose_says_which_precision_runs_and_why(trained_model):
    done = run_predict(trained_model, "--verbose")
    assert done.returncode == 0, done.stderr
    (line,) = done.stderr.splitlines()
    assert line.startswith(("precision: fp32 (auto: ", "precision: bf16 (auto: "))
    assert json.loads(done.stdout)["entities"]


def test_auto_is_fp32_where_onednn_is_capped_at_avx2(trained_model):
    capped = {"ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"}
    done = run_predict(trained_model, "--verbose", **capped)
    assert done.returncode == 0, done.stderr
    assert done.stderr.splitlines() == [
        "precision: fp32 (auto: this CPU has no bf16 LSTM kernel "
        "(oneDNN needs AVX-512 BF16 or AMX))"
    ]
    refused = run_predict(trained_model, "--precision", "bf16", **capped)
    assert refused.returncode == 1 and refused.stdout == ""
    assert refused.stderr.splitlines() == [
        "error: precision bf16 asked for, but this CPU has no bf16 LSTM kernel "
        "(oneDNN needs AVX-512 BF16 or AMX); use auto or fp32"
    ]


def test_precision_bf16_where_the_cpu_cannot_is_one_error_line(
    trained_model, tiny_corpus, tmp_path, monkeypatch
):
    no_bf16(monkeypatch)
    source = tmp_path / "in.txt"
    source.write_text(TEXT + "\n", encoding="utf-8")
    runner = CliRunner()
    for args in (
        ["predict", str(source), "--model", str(trained_model), "--precision", "bf16"],
        ["evaluate", str(trained_model), "--data", str(tiny_corpus), "--precision", "bf16"],
    ):
        result = runner.invoke(app, args)
        assert result.exit_code == 1, result.output
        assert result.stdout == ""
        (line,) = result.stderr.splitlines()
        assert line.startswith("error: precision bf16 asked for, but this CPU has no bf16")


def test_evaluate_verbose_and_fp32(trained_model, tiny_corpus):
    args = ["evaluate", str(trained_model), "--data", str(tiny_corpus), "--json", "-v"]
    result = CliRunner().invoke(app, [*args, "--precision", "fp32"])
    assert result.exit_code == 0, result.output
    assert result.stderr.splitlines() == ["precision: fp32 (asked for)"]
    assert json.loads(result.stdout)["f1"] > 0.5


def test_bulk_verbose_is_refused(trained_model, tiny_corpus, tmp_path):
    result = CliRunner().invoke(
        app,
        ["predict", str(tiny_corpus), "--split", "test", "--output-dir", str(tmp_path / "o")]
        + ["--model", str(trained_model), "--verbose"],
    )
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [
        "error: --output-dir: each worker picks its own precision; drop --verbose"
    ]


# ------------------------------------------------------------------ every other path


@pytest.fixture
def loaded(monkeypatch) -> list[Tagger]:
    """Every ``Tagger`` that ``Tagger.load`` returns from now on."""
    seen: list[Tagger] = []
    load = Tagger.load.__func__

    def recording(cls, *args, **kwargs):
        seen.append(load(cls, *args, **kwargs))
        return seen[-1]

    monkeypatch.setattr(Tagger, "load", classmethod(recording))
    return seen


def test_spacy_config_key(trained_model, tmp_path, monkeypatch):
    import spacy

    from tagger.spacy_component import export_spacy

    nlp = spacy.blank("en")
    nlp.add_pipe("sentencizer")
    component = nlp.add_pipe("tagger_ner", config={"model": str(trained_model)})
    assert component.precision == "auto"
    assert component.tagger.precision_reason == f"auto: {PRECISION_ENV}=fp32"
    with pytest.raises(TaggerError, match="precision must be one of auto, fp32, bf16"):
        nlp.add_pipe("tagger_ner", name="other", config={"precision": "fp16"})
    folder = export_spacy(trained_model, tmp_path / "pipeline")
    assert spacy.load(folder).get_pipe("tagger_ner").tagger.precision == "fp32"
    override = {"components": {"tagger_ner": {"precision": "fp32"}}}
    pinned = spacy.load(folder, config=override).get_pipe("tagger_ner")
    assert (pinned.precision, pinned.tagger.precision_reason) == ("fp32", "asked for")
    no_bf16(monkeypatch)
    bf16 = {"components": {"tagger_ner": {"precision": "bf16"}}}
    with pytest.raises(TaggerError, match="precision bf16 asked for"):
        spacy.load(folder, config=bf16)


def test_bulk_job_passes_it_to_the_workers(
    trained_model, tiny_corpus, tmp_path, monkeypatch, loaded
):
    from tagger import bulk

    def job(precision: str, name: str) -> bulk.Job:
        return bulk.Job(
            source=str(tiny_corpus),
            output_dir=str(tmp_path / name),
            model=str(trained_model),
            workers=1,
            split="test",
            device="cpu",
            precision=precision,
        )

    bulk.run(job("fp32", "a"))
    assert [(t.precision, t.precision_reason) for t in loaded] == [("fp32", "asked for")]
    with pytest.raises(TaggerError, match="unknown --precision 'half'"):
        bulk.run(job("half", "b"))
    no_bf16(monkeypatch)
    with pytest.raises(TaggerError, match="precision bf16 asked for"):
        bulk.run(job("bf16", "c"))
    assert not (tmp_path / "c").exists()  # refused before any work


def test_ray_actors_load_in_it(trained_model):
    pytest.importorskip("ray")
    from tagger.ray import TaggerBatch

    assert TaggerBatch(str(trained_model), precision="fp32").tagger.precision == "fp32"


def test_spark_executors_load_in_it(trained_model):
    pytest.importorskip("pyspark")
    from tagger.spark import cached_tagger

    assert cached_tagger(str(trained_model), "cpu", 1, "fp32").precision == "fp32"
    auto = cached_tagger(str(trained_model), "cpu", 1)
    assert auto.precision_reason == f"auto: {PRECISION_ENV}=fp32"


def test_serve_options_and_model_info(trained_model):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from tagger.serve import Options, create_app

    with pytest.raises(TaggerError, match="--precision must be one of auto, fp32, bf16"):
        Options(precision="fp16").check()
    with TestClient(create_app(trained_model, Options(device="cpu", precision="fp32"))) as client:
        for _ in range(600):  # the model loads in the model thread
            if client.get("/health").status_code == 200:
                break
            time.sleep(0.05)
        info = client.get("/v1/model").json()
    assert (info["precision"], info["precision_reason"]) == ("fp32", "asked for")
    assert info["server"]["options"]["precision"] == "fp32"
