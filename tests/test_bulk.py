"""Sharded bulk tagging: shards concatenate to the single-worker output, the manifest
says what is done, and a lost shard is rerun alone."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace

import pytest
from conftest import REPO
from typer.testing import CliRunner

from tagger import bulk
from tagger.cli import app
from tagger.errors import TaggerError


def job(tiny_corpus, trained_model, out, workers, **kw):
    return bulk.Job(
        source=str(tiny_corpus),
        output_dir=str(out),
        model=str(trained_model),
        workers=workers,
        split="train",
        device="cpu",
        threads=1,
        **kw,
    )


@pytest.fixture(scope="module")
def single(tiny_corpus, trained_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("bulk") / "one"
    bulk.run(job(tiny_corpus, trained_model, out, 1))
    return out


def test_one_worker_tags_every_row(single, tiny_corpus, tagger_model):
    from tagger.data import load_data

    records = [json.loads(line) for line in bulk.concatenate(single)]
    train = load_data(tiny_corpus)["train"]
    assert [r["id"] for r in records] == list(range(len(train)))
    assert [r["tokens"] for r in records] == train["tokens"]
    assert [r["tags"] for r in records] == tagger_model.predict(train["tokens"])
    # The records of `tagger predict --pretokenized`: entities with their scores.
    spans = tagger_model.predict_spans(train["tokens"])
    assert [
        [(e["start"], e["end"], e["label"], e["score"]) for e in r["entities"]] for r in records
    ] == [[(s["start"], s["end"], s["label"], s["score"]) for s in found] for found in spans]
    assert any(r["entities"] for r in records)
    manifest = json.loads((single / "manifest.json").read_text())
    assert manifest["complete"] and manifest["missing"] == []
    assert manifest["min_confidence"] == 0.0
    assert manifest["records"] == len(train) and manifest["workers"] == 1
    assert manifest["shards"][0]["inputs"] == {"rows": [0, len(train)]}


def test_two_worker_processes_write_what_one_writes(single, tiny_corpus, trained_model, tmp_path):
    out = tmp_path / "two"
    manifest = bulk.run(job(tiny_corpus, trained_model, out, 2))
    assert manifest["complete"] and len(manifest["shards"]) == 2
    assert sorted(p.name for p in out.iterdir()) == [
        ".manifest.lock",
        "manifest.json",
        "shard-00000-of-00002.jsonl",
        "shard-00000-of-00002.jsonl.json",
        "shard-00001-of-00002.jsonl",
        "shard-00001-of-00002.jsonl.json",
    ]
    assert list(bulk.concatenate(out)) == list(bulk.concatenate(single))
    first, second = (s["inputs"]["rows"] for s in manifest["shards"])
    assert first[0] == 0 and first[1] == second[0] and second[1] == manifest["records"]


def test_a_lost_shard_is_rerun_alone(single, tiny_corpus, trained_model, tmp_path):
    out = tmp_path / "two"
    two = job(tiny_corpus, trained_model, out, 2)
    bulk.run(two)
    kept = (out / "shard-00000-of-00002.jsonl").stat().st_mtime_ns
    # A worker that crashed leaves no output and no receipt.
    for name in ("shard-00001-of-00002.jsonl", "shard-00001-of-00002.jsonl.json"):
        (out / name).unlink()
    manifest = bulk.write_manifest(two)
    assert not manifest["complete"] and manifest["missing"] == [1]
    with pytest.raises(TaggerError, match=r"shards \[1\] are missing"):
        list(bulk.concatenate(out))
    manifest = bulk.run(two, shards=[1])
    assert manifest["complete"]
    assert (out / "shard-00000-of-00002.jsonl").stat().st_mtime_ns == kept  # not redone
    assert list(bulk.concatenate(out)) == list(bulk.concatenate(single))


def test_folder_of_text_files(tmp_path, trained_model, tagger_model):
    src = tmp_path / "texts"
    (src / "sub").mkdir(parents=True)
    (src / "a.txt").write_text("John Smith visited Paris .\n\nGlobex opened an office .\n")
    (src / "sub" / "b.txt").write_text("Mary Jones works for Initech in Oslo .\n")
    (src / "c.txt").write_text("Nothing happened today .\n")
    outs = {}
    for workers in (1, 2):
        out = tmp_path / f"out{workers}"
        j = bulk.Job(str(src), str(out), str(trained_model), workers, device="cpu", threads=1)
        manifest = bulk.run(j)
        assert manifest["complete"]
        outs[workers] = list(bulk.concatenate(out))
    assert outs[1] == outs[2]
    records = [json.loads(line) for line in outs[1]]
    assert [(r["file"], r["line"]) for r in records] == [
        ("a.txt", 1),
        ("a.txt", 2),
        ("a.txt", 3),
        ("c.txt", 1),
        ("sub/b.txt", 1),
    ]
    assert records[0]["text"] == "John Smith visited Paris ."
    assert {e["text"] for e in records[0]["entities"]} == {"John Smith", "Paris"}
    assert records[0]["entities"] == tagger_model.predict_text(records[0]["text"])


def test_min_confidence_in_shards_and_manifest(single, tiny_corpus, trained_model, tmp_path):
    records = [json.loads(line) for line in bulk.concatenate(single)]
    scores = sorted({e["score"] for r in records for e in r["entities"]})
    middle = len(scores) // 2
    cut = (scores[middle - 1] + scores[middle]) / 2  # between two rounded scores
    out = tmp_path / "cut"
    manifest = bulk.run(job(tiny_corpus, trained_model, out, 1, min_confidence=cut))
    assert manifest["min_confidence"] == cut
    kept = [json.loads(line) for line in bulk.concatenate(out)]
    assert [r["entities"] for r in kept] == [
        [e for e in r["entities"] if e["score"] >= cut] for r in records
    ]
    with pytest.raises(TaggerError, match=rf"another job \(min_confidence {cut!r}\)"):
        bulk.run(job(tiny_corpus, trained_model, out, 1))
    with pytest.raises(TaggerError, match="^--min-confidence must be between 0 and 1, not 2$"):
        bulk.run(job(tiny_corpus, trained_model, tmp_path / "bad", 1, min_confidence=2))


def test_bulk_cli_and_its_errors(tiny_corpus, trained_model, tmp_path):
    out = tmp_path / "cli"
    args = ["predict", str(tiny_corpus), "-m", str(trained_model), "--device", "cpu"]
    result = CliRunner().invoke(app, [*args, "--output-dir", str(out), "--split", "test"])
    assert result.exit_code == 0, result.output
    assert "1/1 shards" in result.output and "(complete)" in result.output
    bad = CliRunner().invoke(app, [*args, "--output-dir", str(out), "--split", "nope"])
    assert bad.exit_code == 1  # checked before the data is read: another job's folder
    assert "holds the shards of another job (split 'test')" in bad.output
    other = tmp_path / "other"
    bad = CliRunner().invoke(app, [*args, "--output-dir", str(other), "--split", "nope"])
    assert bad.exit_code == 1
    assert "has no split 'nope' (it has train, validation, test)" in bad.output
    bad = CliRunner().invoke(app, [*args, "--output-dir", str(out), "--workers", "0"])
    assert bad.exit_code == 1 and "--workers must be at least 1, not 0" in bad.output
    bad = CliRunner().invoke(
        app, [*args, "--output-dir", str(out), "--split", "test", "--workers", "2", "--shard", "2"]
    )
    assert bad.exit_code == 1 and "--shard 2 is not in 0..1" in bad.output
    bad = CliRunner().invoke(app, [*args, "--workers", "2"])
    assert bad.exit_code == 1 and "need --output-dir" in bad.output
    bad = CliRunner().invoke(app, [*args, "--output-dir", str(out), "--format", "conll"])
    assert bad.exit_code == 1 and "--output-dir writes JSON-lines shards" in bad.output
    bad = CliRunner().invoke(app, [*args, "--output-dir", str(out), "--no-scores"])
    assert bad.exit_code == 1 and "shards always carry scores: drop --no-scores" in bad.output
    bad = CliRunner().invoke(app, [*args, "--output-dir", str(out), "--min-confidence", "-1"])
    assert bad.exit_code == 1
    assert "--min-confidence must be between 0 and 1, not -1.0" in bad.output


def test_bulk_under_torchrun_ranks_are_workers(single, tiny_corpus, trained_model, tmp_path):
    out = tmp_path / "ranks"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command += ["--nproc-per-node=2", "-m", "tagger", "predict", str(tiny_corpus)]
    command += ["-m", str(trained_model), "--device", "cpu", "--split", "train"]
    command += ["--output-dir", str(out)]
    proc = subprocess.run(command, capture_output=True, text=True, cwd=REPO, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert list(bulk.concatenate(out)) == list(bulk.concatenate(single))


def test_parquet_shards_hold_the_json_records(single, tiny_corpus, trained_model, tmp_path):
    """``shard_format="parquet"``: each shard is a Parquet file of the same records, typed
    the same in every shard; read back, the rows are the JSON-lines records, and a
    manifest of JSON-lines shards is another job's."""
    import pyarrow.parquet as pq

    out = tmp_path / "parquet"
    manifest = bulk.run(job(tiny_corpus, trained_model, out, 2, shard_format="parquet"))
    assert manifest["complete"] and manifest["shard_format"] == "parquet"
    files = [out / s["file"] for s in manifest["shards"]]
    assert [f.name for f in files] == [
        "shard-00000-of-00002.parquet",
        "shard-00001-of-00002.parquet",
    ]
    tables = [pq.read_table(f) for f in files]
    assert tables[0].schema == tables[1].schema
    assert tables[0].column_names == ["id", "tokens", "tags", "entities"]
    rows = [row for table in tables for row in table.to_pylist()]
    assert rows == [json.loads(line) for line in bulk.concatenate(single)]
    assert list(bulk.concatenate(out)) == list(bulk.concatenate(single))
    assert sum(s["records"] for s in manifest["shards"]) == len(rows)
    with pytest.raises(TaggerError, match="another job .*shard_format 'parquet'"):
        bulk.run(job(tiny_corpus, trained_model, out, 2))


def test_parquet_shards_of_text_files(tmp_path, trained_model):
    """Text files in Parquet shards: ``file``, ``line``, ``text``, ``entities``; a text
    with a line separator other than newline stays one record, and a shard of an empty
    file is a valid Parquet file with the same schema."""
    import pyarrow.parquet as pq

    src = tmp_path / "texts"
    src.mkdir()
    (src / "a.txt").write_text("John Smith visited Paris .\nA\u2028B in Oslo .\n", encoding="utf-8")
    (src / "b.txt").write_text("", encoding="utf-8")
    out = tmp_path / "out"
    shards = {}
    for fmt in ("jsonl", "parquet"):
        j = bulk.Job(str(src), str(out / fmt), str(trained_model), 2, device="cpu", threads=1)
        manifest = bulk.run(replace(j, shard_format=fmt))
        assert manifest["complete"] and manifest["records"] == 2
        shards[fmt] = list(bulk.concatenate(out / fmt))
    assert shards["parquet"] == shards["jsonl"]
    first, empty = (
        pq.read_table(out / "parquet" / f"shard-0000{k}-of-00002.parquet") for k in (0, 1)
    )
    assert first.column_names == ["file", "line", "text", "entities"]
    assert empty.num_rows == 0 and empty.schema == first.schema
    assert first.column("text").to_pylist()[1] == "A\u2028B in Oslo ."


def test_shard_format_is_checked(tiny_corpus, trained_model, tmp_path):
    with pytest.raises(TaggerError, match="unknown --shard-format 'csv'; use jsonl, parquet"):
        bulk.run(job(tiny_corpus, trained_model, tmp_path / "x", 1, shard_format="csv"))
    result = CliRunner().invoke(
        app, ["predict", str(tiny_corpus), "-m", str(trained_model), "--shard-format", "parquet"]
    )
    assert result.exit_code == 1 and "--shard-format needs --output-dir" in result.output
