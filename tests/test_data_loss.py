"""Nothing the user had is lost: ``--overwrite`` replaces only what tagger wrote, one run
owns its output (an OS lock), a resumed run writes where the original would have, and a
diverged run saves nothing. The data-loss cases run the real CLI against real folders."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO, tiny_config, write_corpus

from tagger.checkpoint import checkpoint_dir, load_checkpoint
from tagger.errors import TaggerError
from tagger.io import OutputLock, folder_kind
from tagger.model import SequenceTagger
from tagger.training import Diverged, train


def cli(*args, cwd=REPO, timeout=300) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "tagger", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=timeout,
    )


def one_error_line(proc: subprocess.CompletedProcess, status: int = 1) -> str:
    assert proc.returncode == status, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    return lines[0]


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` with its bytes: what must survive unchanged."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@pytest.fixture
def corpus(tmp_path):
    return write_corpus(tmp_path / "corpus", n_train=30, n_dev=8, n_test=8)


def small(corpus, out, *extra):
    """``tagger train`` flags for a one-epoch tiny model."""
    flags = ["--data", corpus, "-o", out, "--max-epochs", "1", "--hidden-size", "8", "-q"]
    return ["train", *flags, *extra]


def test_overwrite_refuses_a_folder_of_models_and_notes(corpus, trained_model, tmp_path):
    models = tmp_path / "models"
    shutil.copytree(trained_model, models / "ner-v1")
    (models / "notes.md").write_text("which model is which")
    before = snapshot(models)
    line = one_error_line(cli(*small(corpus, models, "--overwrite")))
    assert line == (
        f"error: {models.absolute()} is a folder of other files (ner-v1, notes.md), not a "
        "tagger model folder; tagger replaces only what it wrote itself, even with "
        "--overwrite: choose another --output"
    )
    assert snapshot(models) == before


def test_overwrite_refuses_the_training_corpus(corpus):
    before = snapshot(corpus)
    line = one_error_line(cli(*small(corpus, corpus, "--overwrite")))
    assert "is a folder of other files (dev.txt, test.txt, train.txt)" in line
    assert snapshot(corpus) == before


def test_overwrite_refuses_a_model_folder_holding_the_users_files(corpus, trained_model, tmp_path):
    out = tmp_path / "model"
    shutil.copytree(trained_model, out)
    (out / "README.txt").write_text("my notes on this model")
    before = snapshot(out)
    one_error_line(cli(*small(corpus, out, "--overwrite")))
    assert snapshot(out) == before


def test_overwrite_refuses_a_file(corpus, tmp_path):
    out = tmp_path / "model"
    out.write_text("not a model")
    line = one_error_line(cli(*small(corpus, out, "--overwrite")))
    assert "is a file, not a tagger model folder" in line
    assert out.read_text() == "not a model"


def test_overwrite_refuses_a_checkpoint_path_that_is_not_ours(corpus, tmp_path):
    out = tmp_path / "model"
    ckpt = checkpoint_dir(out)
    ckpt.mkdir()
    (ckpt / "data.csv").write_text("1,2,3")
    line = one_error_line(cli(*small(corpus, out, "--overwrite")))
    assert f"{ckpt.absolute()} is a folder of other files (data.csv)" in line
    assert (ckpt / "data.csv").read_text() == "1,2,3"
    assert not out.exists()


def test_overwrite_replaces_a_model_tagger_wrote(corpus, trained_model, tmp_path):
    out = tmp_path / "model"
    shutil.copytree(trained_model, out)
    before = (out / "model.safetensors").read_bytes()
    assert one_error_line(cli(*small(corpus, out))).endswith("pass --overwrite to replace it")
    proc = cli(*small(corpus, out, "--overwrite"))
    assert proc.returncode == 0, proc.stderr
    assert (out / "model.safetensors").read_bytes() != before
    assert folder_kind(out) == "model"


def test_export_spacy_overwrite_refuses_a_file(trained_model, tmp_path):
    target = tmp_path / "pipeline"
    target.write_text("keep me")
    line = one_error_line(cli("export-spacy", trained_model, target, "--overwrite"))
    assert "is a file, not a spaCy pipeline exported by tagger" in line
    assert target.read_text() == "keep me"


HOLDER = """
import sys, time
from pathlib import Path
from tagger.io import OutputLock
lock = OutputLock(Path(sys.argv[1])).acquire()
print("locked", flush=True)
time.sleep(600)
"""


def test_a_second_run_on_the_same_output_is_refused_at_start(corpus, tmp_path):
    out = tmp_path / "model"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(out)], stdout=subprocess.PIPE, text=True, cwd=REPO
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        started = time.perf_counter()
        line = one_error_line(cli(*small(corpus, out)))
        assert line.startswith(f"error: {out} is in use by another training run")
        assert time.perf_counter() - started < 60  # refused at start, not after training
        assert not out.exists() and not checkpoint_dir(out).exists()
        # The lock dies with its process: a kill -9 never blocks the next run.
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
        proc = cli(*small(corpus, out))
        assert proc.returncode == 0, proc.stderr
    finally:
        holder.kill()
        holder.wait()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corpus", "model"]  # no lock left


def test_lock_is_exclusive_within_a_process_too(tmp_path):
    with OutputLock(tmp_path / "m"), pytest.raises(TaggerError, match="is in use by another"):
        OutputLock(tmp_path / "m").acquire()
    with OutputLock(tmp_path / "m"):  # released: free again
        pass


def test_output_that_appears_during_an_interrupted_run_is_not_replaced(
    corpus, trained_model, tmp_path, monkeypatch
):
    """Ctrl-C saves the best epoch only where the run was allowed to write at its start:
    a finished model that appeared meanwhile is kept, and the checkpoint too."""
    out = tmp_path / "model"
    calls = []
    real = SequenceTagger.loss

    def loss(self, batch):
        calls.append(1)
        if len(calls) == 6:  # in epoch 2: someone else's model lands on our output
            shutil.copytree(trained_model, out)
            raise KeyboardInterrupt
        return real(self, batch)

    monkeypatch.setattr(SequenceTagger, "loss", loss)
    before = None
    with pytest.raises(TaggerError, match="already exists; pass --overwrite"):
        train(tiny_config(data=str(corpus), output=str(out), max_epochs=3), progress=False)
    before = snapshot(trained_model)
    assert snapshot(out) == before
    assert load_checkpoint(checkpoint_dir(out)).epoch == 1


def test_resume_from_another_directory_writes_where_the_run_would_have(corpus, tmp_path):
    work, elsewhere = tmp_path / "work", tmp_path / "elsewhere"
    work.mkdir()
    elsewhere.mkdir()
    shutil.copytree(corpus, work / "corpus")
    killer = (
        "import os, signal, sys\n"
        "import tagger.trainer as t\n"
        "real = t.rank_batches\n"
        "count = [0]\n"
        "def rank_batches(*a, **k):\n"
        "    count[0] += 1\n"
        "    for i, b in enumerate(real(*a, **k)):\n"
        "        if count[0] == 2 and i == 0:\n"
        "            os.kill(os.getpid(), signal.SIGKILL)\n"
        "        yield b\n"
        "t.rank_batches = rank_batches\n"
        "from tagger.cli import app\n"
        "app(sys.argv[1:])\n"
    )
    args = ["train", "--data", "corpus", "-o", "models/m", "--max-epochs", "3", "-q"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    killed = subprocess.run(
        [sys.executable, "-c", killer, *args], cwd=work, env=env, timeout=300, capture_output=True
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    ckpt = work / "models" / "m.checkpoint"
    saved = load_checkpoint(ckpt)
    assert saved.config.output == str(work / "models" / "m")  # absolute paths recorded
    assert saved.config.data == str(work / "corpus")
    proc = cli("train", "--resume", ckpt, "-q", cwd=elsewhere)
    assert proc.returncode == 0, proc.stderr
    assert folder_kind(work / "models" / "m") == "model"
    metrics = json.loads((work / "models" / "m" / "metrics.json").read_text())
    assert [e["epoch"] for e in metrics["epochs"]] == [1, 2, 3] and not metrics["interrupted"]
    assert not ckpt.exists()
    assert list(elsewhere.iterdir()) == []


def test_a_diverged_run_saves_no_model_and_keeps_the_last_finite_checkpoint(
    corpus, tmp_path, monkeypatch
):
    out = tmp_path / "model"
    calls = []
    real = SequenceTagger.loss

    def loss(self, batch):  # the loss turns NaN in epoch 2 (4 batches per epoch)
        calls.append(1)
        value = real(self, batch)
        return value * float("nan") if len(calls) > 5 else value

    monkeypatch.setattr(SequenceTagger, "loss", loss)
    with pytest.raises(Diverged) as err:
        train(tiny_config(data=str(corpus), output=str(out), max_epochs=3), progress=False)
    assert str(err.value) == (
        "training diverged in epoch 2: the loss became nan: no model was saved; the "
        f"checkpoint after epoch 1 is kept in {checkpoint_dir(out)}; try a lower learning "
        "rate (--lr, now 0.02)"
    )
    assert not out.exists()
    assert load_checkpoint(checkpoint_dir(out)).epoch == 1


def test_a_huge_learning_rate_stops_with_one_line(corpus, tmp_path):
    """A real divergence through the CLI (no patching): exit 1, one line, no model."""
    out = tmp_path / "model"
    proc = cli(*small(corpus, out, "--lr", "1e30", "--max-epochs", "3"))
    line = one_error_line(proc)
    assert line.startswith("error: training diverged in epoch ") and "try a lower" in line
    assert not out.exists()


def test_non_finite_weights_are_never_saved(tagger_model, tmp_path):
    import torch

    state = tagger_model.model.state_dict()
    key = next(k for k, v in state.items() if v.is_floating_point())
    saved = state[key].clone()
    try:
        with torch.no_grad():
            state[key].view(-1)[0] = float("inf")
        with pytest.raises(TaggerError, match="refusing to save a model with non-finite"):
            tagger_model.save(tmp_path / "m")
    finally:
        with torch.no_grad():
            state[key].copy_(saved)
    assert not (tmp_path / "m").exists()


# ------------------------------------------------------------------ other outputs


def test_predict_never_replaces_an_existing_file_unless_asked(trained_model, tmp_path):
    text = tmp_path / "in.txt"
    text.write_text("Angela Merkel visited Paris.\n")
    for flag in ("-o", "--html"):
        target = tmp_path / f"train{flag}.txt"
        target.write_text("my corpus")
        line = one_error_line(cli("predict", text, "-m", trained_model, flag, target))
        assert line == f"error: {target} already exists; pass --overwrite to replace it"
        assert target.read_text() == "my corpus"
        proc = cli("predict", text, "-m", trained_model, flag, target, "--overwrite")
        assert proc.returncode == 0, proc.stderr
        assert target.read_text() != "my corpus"


def test_plot_replaces_only_its_own_picture_unless_asked(trained_model, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(trained_model, model)
    proc = cli("plot", model)  # MODEL/training.png is tagger's to redraw
    assert proc.returncode == 0, proc.stderr
    corpus = tmp_path / "train.txt"
    corpus.write_text("my corpus")
    line = one_error_line(cli("plot", model, "-o", corpus))
    assert line.endswith("already exists; pass --overwrite to replace it")
    assert corpus.read_text() == "my corpus"
    line = one_error_line(cli("plot", model, "-o", "-"))
    assert line == "error: tagger plot writes a PNG file: give --output a file name, not -"


def test_bulk_output_dir_keeps_files_it_did_not_write(trained_model, tmp_path):
    texts = tmp_path / "texts"
    texts.mkdir()
    (texts / "a.txt").write_text("Angela Merkel visited Paris.\n")
    out = tmp_path / "out"
    out.mkdir()
    (out / "manifest.json").write_text('{"my": "own manifest"}')
    (out / "notes.txt").write_text("mine")
    line = one_error_line(cli("predict", texts, "-m", trained_model, "--output-dir", out))
    assert "holds files a bulk job did not write (notes.txt)" in line
    assert (out / "manifest.json").read_text() == '{"my": "own manifest"}'


def test_bulk_output_dir_of_another_job_needs_overwrite(trained_model, tmp_path):
    texts = tmp_path / "texts"
    texts.mkdir()
    (texts / "a.txt").write_text("Angela Merkel visited Paris.\n")
    (texts / "b.txt").write_text("Wei Chen works for Globex.\n")
    out = tmp_path / "out"
    assert cli("predict", texts, "-m", trained_model, "--output-dir", out).returncode == 0
    again = cli("predict", texts, "-m", trained_model, "--output-dir", out)  # the same job
    assert again.returncode == 0, again.stderr
    two = ("predict", texts, "-m", trained_model, "--output-dir", out, "--workers", "2")
    line = one_error_line(cli(*two))
    assert "holds the shards of another job (workers 1); pass --overwrite" in line
    proc = cli(*two, "--overwrite")
    assert proc.returncode == 0, proc.stderr
    names = sorted(p.name for p in out.iterdir() if not p.name.startswith("."))
    assert names == [
        "manifest.json",
        "shard-00000-of-00002.jsonl",
        "shard-00000-of-00002.jsonl.json",
        "shard-00001-of-00002.jsonl",
        "shard-00001-of-00002.jsonl.json",
    ]


def test_the_root_folder_is_no_output(corpus):
    line = one_error_line(cli(*small(corpus, "/", "--overwrite")))
    assert line == "error: / cannot be an output folder; choose another --output"


def test_the_refusal_names_the_users_files_first(corpus, trained_model, tmp_path):
    out = tmp_path / "model"
    shutil.copytree(trained_model, out)
    (out / "zz-notes.md").write_text("mine")
    line = one_error_line(cli(*small(corpus, out, "--overwrite")))
    assert "is a folder of other files (zz-notes.md, config.json, epochs.jsonl, ...)" in line
    link = tmp_path / "link"
    link.symlink_to(out)
    line = one_error_line(cli(*small(corpus, link, "--overwrite")))
    assert "is a symbolic link, not a tagger model folder" in line
