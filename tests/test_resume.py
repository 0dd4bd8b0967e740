"""Resumable training: a run killed mid-epoch and resumed ends with the same weights as a
straight run; checkpoints are written atomically, checked on load and cleaned up."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from dataclasses import replace

import pytest
from conftest import REPO, default_sigint, tiny_config, write_corpus
from safetensors.torch import load_file

from tagger.checkpoint import META, STATE, checkpoint_dir, load_checkpoint
from tagger.errors import TaggerError
from tagger.training import train

# Runs `tagger train --config CONFIG -q` in a fresh interpreter, with the batch iterator
# wrapped so the process sends itself SIGNAL at the 4th batch of epoch 2: a real signal,
# delivered mid-epoch, to a real training process. (ARGV[3]: the epoch, default 2.)
KILLER = """
import os, signal, sys
import tagger.trainer as training
from tagger.cli import app

real = training.rank_batches
epochs = [0]

def rank_batches(*args, **kwargs):
    epochs[0] += 1
    for i, batch in enumerate(real(*args, **kwargs)):
        if epochs[0] == int(sys.argv[3]) and i == 3:
            os.kill(os.getpid(), getattr(signal, sys.argv[2]))
        yield batch

training.rank_batches = rank_batches
app(["train", "--config", sys.argv[1], "-q"])
"""


def run_killed(config_file, signal_name: str, epoch: int = 2) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-c", KILLER, str(config_file), signal_name, str(epoch)],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=300,
        preexec_fn=default_sigint,
    )


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_corpus(tmp_path_factory.mktemp("resume_corpus"))


def config_for(corpus, output, **overrides):
    # Dropout, word dropout and EMA on: the RNG and averaging states must all carry over.
    values = dict(max_epochs=4, dropout=0.3, word_dropout=0.1)
    return tiny_config(data=str(corpus), output=str(output), **{**values, **overrides})


@pytest.fixture(scope="module")
def straight(corpus, tmp_path_factory):
    """The uninterrupted run every resumed run must equal."""
    out = tmp_path_factory.mktemp("straight") / "model"
    return train(config_for(corpus, out), progress=False)


def write_config(config, path):
    path.write_text(json.dumps(config.to_dict()))
    return path


def assert_same_run(resumed, straight):
    a, b = load_file(resumed / "model.safetensors"), load_file(straight / "model.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        assert (a[key] == b[key]).all(), key
    ma = json.loads((resumed / "metrics.json").read_text())
    mb = json.loads((straight / "metrics.json").read_text())
    assert ma["dev"] == mb["dev"] and ma["test"] == mb["test"]
    assert ma["best_epoch"] == mb["best_epoch"] and ma["interrupted"] is False
    strip = ("seconds", "tokens_per_s")
    assert [{k: v for k, v in e.items() if k not in strip} for e in ma["epochs"]] == [
        {k: v for k, v in e.items() if k not in strip} for e in mb["epochs"]
    ]


@pytest.mark.parametrize("signal_name", ["SIGINT", "SIGKILL"])
def test_killed_mid_epoch_then_resumed_equals_straight_run(corpus, straight, tmp_path, signal_name):
    out = tmp_path / "model"
    proc = run_killed(write_config(config_for(corpus, out), tmp_path / "c.json"), signal_name)
    ckpt = checkpoint_dir(out)
    assert load_checkpoint(ckpt).epoch == 1  # killed in epoch 2: the checkpoint is epoch 1's
    if signal_name == "SIGINT":
        assert proc.returncode == 130, proc.stderr  # the shell's status for Ctrl-C
        assert "Traceback" not in proc.stderr
        assert f"interrupted in epoch 2: the checkpoint after epoch 1 is in {ckpt}" in proc.stderr
        assert f"continue with: tagger train --resume {ckpt}" in proc.stderr
        assert f"the best epoch so far (1) is saved to {out}" in proc.stderr
        # The best epoch so far was saved, marked as interrupted.
        assert json.loads((out / "metrics.json").read_text())["interrupted"] is True
    else:
        assert proc.returncode == -signal.SIGKILL
        assert not out.exists()
    resumed = train(resume=ckpt, progress=False)
    assert resumed == out
    assert_same_run(out, straight)
    assert not ckpt.exists()  # removed once the model is complete
    assert not list(tmp_path.glob(".*tmp*"))  # no temporary folders left behind


def test_resume_through_the_cli(corpus, straight, tmp_path):
    from typer.testing import CliRunner

    from tagger.cli import app

    out = tmp_path / "model"
    run_killed(write_config(config_for(corpus, out), tmp_path / "c.json"), "SIGKILL")
    result = CliRunner().invoke(app, ["train", "--resume", str(checkpoint_dir(out)), "-q"])
    assert result.exit_code == 0, result.output
    assert_same_run(out, straight)
    result = CliRunner().invoke(
        app, ["train", "--resume", str(checkpoint_dir(out)), "--cell", "gru"]
    )
    assert result.exit_code == 1
    assert "is not a training checkpoint" in result.output


def test_resume_may_extend_max_epochs(corpus, tmp_path):
    out = tmp_path / "model"
    run_killed(write_config(config_for(corpus, out, max_epochs=2), tmp_path / "c.json"), "SIGKILL")
    path = train(resume=checkpoint_dir(out), max_epochs=3, progress=False)
    metrics = json.loads((path / "metrics.json").read_text())
    assert [e["epoch"] for e in metrics["epochs"]] == [1, 2, 3]
    assert json.loads((path / "config.json").read_text())["config"]["max_epochs"] == 3


def test_resume_refuses_other_settings(corpus, tmp_path):
    out = tmp_path / "model"
    run_killed(write_config(config_for(corpus, out), tmp_path / "c.json"), "SIGKILL")
    with pytest.raises(TaggerError) as err:
        train(resume=checkpoint_dir(out), cell="gru", progress=False)
    assert str(err.value) == (
        "a resumed run keeps the settings of its checkpoint; only device, max_epochs, "
        "patience, threads may change, not cell"
    )


def test_resume_refuses_changed_data(tmp_path):
    corpus = write_corpus(tmp_path / "corpus")
    out = tmp_path / "model"
    run_killed(write_config(config_for(corpus, out), tmp_path / "c.json"), "SIGKILL")
    write_corpus(corpus, seed=5)  # other sentences
    with pytest.raises(TaggerError) as err:
        train(resume=checkpoint_dir(out), progress=False)
    assert str(err.value) == (
        f"the training data of {corpus} changed since the checkpoint {checkpoint_dir(out)} "
        "was written; start a new run instead"
    )


def test_a_distilling_run_resumes_and_refuses_another_teacher(corpus, trained_model, tmp_path):
    teacher = tmp_path / "teacher"
    shutil.copytree(trained_model, teacher)
    out = tmp_path / "model"
    config = config_for(corpus, out, teacher=str(teacher), distill_weight=0.5)
    run_killed(write_config(config, tmp_path / "c.json"), "SIGKILL")
    ckpt = checkpoint_dir(out)
    shutil.rmtree(teacher)
    train(tiny_config(data=str(corpus), output=str(teacher), seed=99), progress=False)
    with pytest.raises(TaggerError) as err:
        train(resume=ckpt, progress=False)
    assert str(err.value) == (
        f"the teacher {teacher} (or the unlabeled text) changed since the checkpoint {ckpt} "
        "was written; start a new run instead"
    )
    shutil.rmtree(teacher)
    shutil.copytree(trained_model, teacher)
    resumed = train(resume=ckpt, progress=False)
    straight = train(replace(config, output=str(tmp_path / "straight")), progress=False)
    assert_same_run(resumed, straight)


def test_new_run_does_not_replace_a_checkpoint(corpus, tmp_path):
    out = tmp_path / "model"
    config = config_for(corpus, out)
    run_killed(write_config(config, tmp_path / "c.json"), "SIGKILL")
    ckpt = checkpoint_dir(out)
    with pytest.raises(TaggerError) as err:
        train(config, progress=False)
    assert str(err.value) == (
        f"{ckpt} holds the checkpoint of an interrupted run: continue it with "
        f"`tagger train --resume {ckpt}`, or pass --overwrite to start over"
    )
    train(config, overwrite=True, progress=False, max_epochs=1)
    assert (out / "model.safetensors").is_file() and not ckpt.exists()


def test_bad_checkpoints(corpus, tmp_path):
    out = tmp_path / "model"
    run_killed(write_config(config_for(corpus, out), tmp_path / "c.json"), "SIGKILL")
    ckpt = checkpoint_dir(out)
    with pytest.raises(TaggerError) as err:
        train(resume=out, progress=False)  # the model folder, not its checkpoint
    assert str(err.value) == (
        f"{out} is not a training checkpoint (no {META}) (did you mean {ckpt}?)"
    )
    state = (ckpt / STATE).read_bytes()
    (ckpt / STATE).write_bytes(state[: len(state) // 2])
    with pytest.raises(TaggerError) as err:
        train(resume=ckpt, progress=False)
    assert str(err.value) == f"{ckpt / STATE} does not match the checksum in {META}"
    meta = json.loads((ckpt / META).read_text())
    meta["format_version"] = 99
    (ckpt / META).write_text(json.dumps(meta))
    with pytest.raises(TaggerError, match="checkpoint format version 99"):
        train(resume=ckpt, progress=False)


def test_checkpoint_holds_no_pickle(corpus, tmp_path):
    out = tmp_path / "model"
    run_killed(write_config(config_for(corpus, out), tmp_path / "c.json"), "SIGKILL")
    names = sorted(p.name for p in checkpoint_dir(out).iterdir())
    assert names == [META, STATE]
    tensors = load_file(checkpoint_dir(out) / STATE)
    prefixes = {k.split(".")[0] for k in tensors}
    assert prefixes == {"model", "ema", "best", "optimizer", "rng"}


def test_ctrl_c_in_the_first_epoch_saves_nothing(corpus, tmp_path):
    out = tmp_path / "model"
    proc = run_killed(write_config(config_for(corpus, out), tmp_path / "c.json"), "SIGINT", 1)
    assert proc.returncode == 130
    message = "interrupted before the first epoch ended; nothing was saved"
    assert proc.stderr.strip() == message
    assert not out.exists() and not checkpoint_dir(out).exists()
