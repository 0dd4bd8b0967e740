"""Bulk tagging on Ray Data and Spark: the records equal ``tagger predict --format
jsonl``, ``--engine ray|spark`` writes the shards the local engine writes, and a worker
killed mid-job is retried by the engine with the output still complete and the same.

Both engines run here on this machine: started by ``tagger predict`` in a subprocess, and
in this process for the API and the killed workers (``ray.init(num_cpus=2)``, Spark
``local[2,4]``: a failed task is tried up to 4 times), one engine at a time. A test skips,
saying why, only where its engine cannot start: ray or pyspark not installed (the
``ray``/``spark`` extras), or no Java."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tagger import bulk
from tagger.cli import app
from tagger.errors import TaggerError

# Lines of text with what tagger predict must keep as it is: an empty line, a line of
# spaces, U+2028 and U+0085 (str.splitlines breaks lines there; only \n ends one).
EXTRA_LINES = ["", "   ", "Paris\u2028Berlin and Globex .", "Nothing\x85 happened in Oslo ."]


def _sentences(corpus: Path, split: str = "train.txt") -> list[list[str]]:
    from tagger.data import read_conll

    return [sentence.tokens for sentence in read_conll(corpus / split)]


@pytest.fixture(scope="module")
def texts(tiny_corpus, tmp_path_factory) -> Path:
    """A folder of two text files: detokenized sentences of the tiny corpus and the
    awkward lines above."""
    folder = tmp_path_factory.mktemp("engines") / "texts"
    folder.mkdir()
    lines = [" ".join(tokens) for tokens in _sentences(tiny_corpus)]
    (folder / "a.txt").write_text("\n".join(lines[:30] + EXTRA_LINES) + "\n", encoding="utf-8")
    (folder / "b.txt").write_text("\n".join(lines[30:]) + "\n", encoding="utf-8")
    return folder


def _predict_jsonl(model: Path, lines: list[str], tmp: Path, *options: str) -> list[dict]:
    """The records of single-process ``tagger predict --format jsonl``."""
    source, out = tmp / "in.txt", tmp / "out.jsonl"
    source.write_text("\n".join(lines) + "\n", encoding="utf-8")
    args = ["predict", str(source), "-m", str(model), "--device", "cpu", "-o", str(out)]
    result = CliRunner().invoke(app, [*args, "--format", "jsonl", "--overwrite", *options])
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in out.read_text(encoding="utf-8").split("\n")[:-1]]


def _same_records(got: list[dict], want: list[dict]) -> None:
    """Same texts or tokens, tags, entities with offsets and labels; scores to 6 places."""

    def plain(record: dict) -> dict:
        entities = [{**e, "score": round(e["score"], 6)} for e in record["entities"]]
        return {**record, "entities": entities}

    assert [plain(r) for r in got] == [plain(r) for r in want]
    assert any(r["entities"] for r in want)


def _local_run(
    source, model, out, workers: int, split: str | None = None, shard_format: str = "jsonl"
) -> Path:
    job = bulk.Job(
        str(source), str(out), str(model), workers, split, device="cpu", threads=1,
        shard_format=shard_format,
    )  # fmt: skip
    assert bulk.run(job)["complete"]
    return out


def _command(*args: str) -> None:
    """``tagger predict ARGS`` in a new process: the engine starts its own cluster."""
    command = [sys.executable, "-m", "tagger", "predict", *args, "--device", "cpu"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert "(complete)" in proc.stderr


def _same_folders(got: Path, want: Path) -> None:
    """The same files, byte for byte, and the same receipts but for the seconds taken."""
    names = sorted(p.name for p in want.iterdir())
    assert sorted(p.name for p in got.iterdir()) == names
    for name in names:
        if name.endswith(".jsonl"):
            assert (got / name).read_bytes() == (want / name).read_bytes(), name
    for manifest in (got, want):
        assert json.loads((manifest / "manifest.json").read_text())["complete"]
    strip = lambda m: [{**s, "seconds": 0} for s in m["shards"]]  # noqa: E731
    manifests = [json.loads((d / "manifest.json").read_text()) for d in (got, want)]
    assert strip(manifests[0]) == strip(manifests[1])


def _crash_once(tmp_path: Path):
    """A marker file and ``claim()``: True for the one process that removes the marker
    (it then kills itself). ``claim`` is a closure, so Ray and Spark pickle it by value:
    their workers cannot import this test module."""
    marker = tmp_path / "crash-once"
    marker.write_text("")

    def claim() -> bool:
        try:
            os.unlink(marker)
        except FileNotFoundError:
            return False
        return True

    return marker, claim


# ------------------------------------------------------------------- no cluster needed


def test_missing_package_is_one_error_line(monkeypatch, texts, trained_model, tmp_path):
    for engine, package in (("ray", "ray"), ("spark", "pyspark")):
        monkeypatch.setitem(sys.modules, package, None)  # import fails as if not installed
        monkeypatch.delitem(sys.modules, f"tagger.{engine}", raising=False)
        args = ["predict", str(texts), "-m", str(trained_model), "--engine", engine]
        result = CliRunner().invoke(app, [*args, "--output-dir", str(tmp_path / engine)])
        assert result.exit_code == 1
        assert result.output == (
            f"error: --engine {engine} needs the {package} package: pip install "
            f"'tagger[{engine}]'\n"
        )
        assert not (tmp_path / engine).exists()


def test_engine_options_need_bulk_mode(texts, trained_model, tmp_path):
    args = ["predict", str(texts / "a.txt"), "-m", str(trained_model)]
    bad = CliRunner().invoke(app, [*args, "--engine", "ray"])
    assert bad.exit_code == 1 and "--engine and --address need --output-dir" in bad.output
    args = ["predict", str(texts), "-m", str(trained_model), "--output-dir", str(tmp_path / "o")]
    bad = CliRunner().invoke(app, [*args, "--address", "auto"])
    assert bad.exit_code == 1
    assert "--address names a cluster: give --engine ray or --engine spark" in bad.output


def test_a_cluster_that_loses_a_row_leaves_its_shard_missing(
    monkeypatch, tiny_corpus, trained_model, tmp_path
):
    """Every record is checked against the row due: a lost row stops its shard (no
    file, no receipt) and the manifest says which shards are missing."""
    out = tmp_path / "lossy"
    job = bulk.Job(str(tiny_corpus), str(out), str(trained_model), 2, "test", device="cpu")

    def lossy(job, table):
        from tagger.predict import Tagger

        records = bulk.arrow_records(Tagger.load(job.model, device="cpu"), table).to_pylist()
        del records[-3]  # a row of the second shard
        yield from records

    fake = type(sys)("fake_engine")
    fake.cluster, fake.job_records = lambda job: contextlib.nullcontext(), lossy
    monkeypatch.setattr(bulk, "engine_module", lambda engine: fake)
    with pytest.raises(TaggerError, match=r"1 of 2 shards failed \(shard 1: the cluster returned"):
        bulk.run(job)
    manifest = json.loads((out / "manifest.json").read_text())
    assert not manifest["complete"] and manifest["missing"] == [1]
    assert sorted(p.name for p in out.glob("shard-*")) == [
        "shard-00000-of-00002.jsonl",
        "shard-00000-of-00002.jsonl.json",
    ]


# ------------------------------------------------------------------------------ Ray


def _need_ray() -> None:
    pytest.importorskip("ray", reason="ray is not installed (pip install 'tagger[ray]')")
    pytest.importorskip("ray.data", reason="Ray Data is not installed (ray[data])")


def test_ray_command_writes_the_local_shards(trained_model, texts, tmp_path):
    """``--engine ray`` starts a local Ray (2 actors) and writes, byte for byte, the
    shards, receipts and manifest of ``--engine local``."""
    _need_ray()
    want = _local_run(texts, trained_model, tmp_path / "local", 2)
    got = tmp_path / "ray"
    _command(str(texts), "-m", str(trained_model), "--output-dir", str(got), "--engine", "ray",
             "--workers", "2")  # fmt: skip
    _same_folders(got, want)


@pytest.fixture(scope="class")
def ray_cluster():
    """A local Ray cluster of 2 CPUs while the class's tests run (then Spark's start)."""
    _need_ray()
    import ray

    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    yield
    ray.shutdown()


@pytest.mark.usefixtures("ray_cluster")
class TestRay:
    def test_records_equal_tagger_predict(self, trained_model, tiny_corpus, texts, tmp_path):
        import ray.data

        from tagger.ray import TaggerBatch, tag_dataset

        lines = (texts / "a.txt").read_text(encoding="utf-8").split("\n")[:-1]
        rows = [{"id": i, "text": line} for i, line in enumerate(lines)]
        ds = ray.data.from_items(rows, override_num_blocks=4)
        got = tag_dataset(ds, str(trained_model), concurrency=2, device="cpu").take_all()
        got = sorted(got, key=lambda r: r["id"])
        assert [r["id"] for r in got] == list(range(len(lines)))
        want = _predict_jsonl(trained_model, lines, tmp_path)
        _same_records([{"text": r["text"], "entities": r["entities"]} for r in got], want)

        # Token lists, in Ray's default batch format (a dict of numpy arrays).
        sentences = _sentences(tiny_corpus, "test.txt")
        ds = ray.data.from_items([{"tokens": s} for s in sentences])
        options = {"model_dir": str(trained_model), "device": "cpu"}
        one = ray.data.ActorPoolStrategy(size=1)
        got = ds.map_batches(TaggerBatch, fn_constructor_kwargs=options, compute=one).take_all()
        conll = ["\n".join(s) + "\n" for s in sentences]
        want = _predict_jsonl(trained_model, conll, tmp_path, "--pretokenized")
        _same_records([r | {k: list(r[k]) for k in ("tokens", "tags")} for r in got], want)

    def test_actor_killed_mid_job_is_retried(
        self, monkeypatch, trained_model, tiny_corpus, tmp_path
    ):
        import tagger.ray

        marker, claim = _crash_once(tmp_path)

        class CrashOnce(tagger.ray.TaggerBatch):  # defined here: pickled by value
            calls = 0

            def __call__(self, batch):
                self.calls += 1
                if self.calls == 2 and claim():
                    os._exit(1)  # the actor dies on its second batch
                return super().__call__(batch)

        monkeypatch.setattr(tagger.ray, "TaggerBatch", CrashOnce)
        monkeypatch.setattr(tagger.ray, "BLOCK_ROWS", 8)  # 8 blocks of the 60 sentences
        want = _local_run(tiny_corpus, trained_model, tmp_path / "local", 2, "train")
        got = tmp_path / "ray"
        job = bulk.Job(
            str(tiny_corpus), str(got), str(trained_model), 2, "train", device="cpu", engine="ray"
        )
        assert bulk.run(job)["complete"]
        assert not marker.exists()  # an actor did die
        _same_folders(got, want)


# ---------------------------------------------------------------------------- Spark


def _need_spark() -> None:
    pytest.importorskip("pyspark", reason="pyspark is not installed (pip install 'tagger[spark]')")
    if not (os.environ.get("JAVA_HOME") or shutil.which("java")):
        pytest.skip("Spark needs Java: no java on PATH and no JAVA_HOME")


def test_spark_command_writes_the_local_shards(trained_model, tiny_corpus, tmp_path):
    """``--engine spark`` starts Spark ``local[2,4]`` and writes, byte for byte, the
    shards, receipts and manifest of ``--engine local``: here Parquet shards."""
    _need_spark()
    want = _local_run(tiny_corpus, trained_model, tmp_path / "local", 2, "train", "parquet")
    got = tmp_path / "spark"
    _command(str(tiny_corpus), "-m", str(trained_model), "--split", "train", "--output-dir",
             str(got), "--engine", "spark", "--workers", "2",
             "--shard-format", "parquet")  # fmt: skip
    assert sorted(p.name for p in got.glob("*.parquet")) == [
        "shard-00000-of-00002.parquet",
        "shard-00001-of-00002.parquet",
    ]
    _same_folders(got, want)


@pytest.fixture(scope="class")
def spark():
    """A local Spark session, ``local[2,4]``: 2 threads, a failed task tried up to 4 times."""
    _need_spark()
    from pyspark.sql import SparkSession

    from tagger.spark import _no_pandas_warning

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)  # workers import this tagger
    builder = SparkSession.builder.master("local[2,4]").config("spark.ui.enabled", "false")
    with _no_pandas_warning():
        session = builder.getOrCreate()
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


class TestSpark:
    def test_records_equal_tagger_predict(self, spark, trained_model, tiny_corpus, texts, tmp_path):
        from tagger.spark import tag_dataframe

        lines = (texts / "a.txt").read_text(encoding="utf-8").split("\n")[:-1]
        df = spark.createDataFrame(list(enumerate(lines)), "id long, text string")
        rows = tag_dataframe(df, str(trained_model), device="cpu").orderBy("id").collect()
        got = [r.asDict(recursive=True) for r in rows]
        assert [r["id"] for r in got] == list(range(len(lines)))
        want = _predict_jsonl(trained_model, lines, tmp_path)
        _same_records([{"text": r["text"], "entities": r["entities"]} for r in got], want)

        sentences = _sentences(tiny_corpus, "test.txt")
        df = spark.createDataFrame([(s,) for s in sentences], "tokens array<string>")
        got = [r.asDict(recursive=True) for r in tag_dataframe(df, str(trained_model)).collect()]
        conll = ["\n".join(s) + "\n" for s in sentences]
        _same_records(got, _predict_jsonl(trained_model, conll, tmp_path, "--pretokenized"))

    def test_task_killed_mid_job_is_retried(
        self, spark, monkeypatch, trained_model, texts, tmp_path
    ):
        import tagger.spark

        marker, claim = _crash_once(tmp_path)
        tag_batches = tagger.spark.tag_batches

        def dies_once(batches, **options):  # defined here: pickled by value
            if claim():
                os._exit(1)  # the Python worker dies: Spark fails the task and retries it
            yield from tag_batches(batches, **options)

        monkeypatch.setattr(tagger.spark, "tag_batches", dies_once)
        monkeypatch.setattr(tagger.spark, "BLOCK_ROWS", 8)  # 8 partitions of the 64 lines
        want = _local_run(texts, trained_model, tmp_path / "local", 2)
        got = tmp_path / "spark"
        job = bulk.Job(str(texts), str(got), str(trained_model), 2, device="cpu", engine="spark")
        assert bulk.run(job)["complete"]
        assert not marker.exists()  # a worker did die
        _same_folders(got, want)
