"""Bulk tagging in shards: one output file per worker, and a manifest of them all.

The input is a dataset split (a hub id or a CoNLL folder, as for training; its ``tokens``
are tagged) or a folder of raw text files (tagged line by line, like ``tagger predict``).
It is cut into contiguous shards with ``datasets.distributed.split_dataset_by_node``;
worker k tags shard k and writes ``shard-0000k-of-0000N.jsonl`` (or ``.parquet``: the
same records as Arrow rows, typed by ``record_types``) atomically, then a small ``.json``
receipt. Every worker then rebuilds ``manifest.json`` from the receipts it
finds, under a file lock, so the manifest says which shards are done and which are
missing. A crashed worker's shard is rerun alone with ``--shard k``. Concatenating the
shards in order gives exactly what a single worker writes.

Workers are local processes (``--workers N``) or, under torchrun, the ranks themselves.
With ``--engine ray`` or ``--engine spark`` the rows are tagged on a Ray or Spark cluster
instead (``tagger.ray``, ``tagger.spark``: N actors or partitions' tasks, retried by the
engine when one dies) and stream back, in order, to this process, which writes the same
shards, receipts and manifest: a shard is written only once all its rows came back, each
checked against the row it is for.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from itertools import islice
from pathlib import Path

from tagger.errors import TaggerError

MANIFEST, LOCK = "manifest.json", ".manifest.lock"
MANIFEST_VERSION = 1
ENGINES = ("local", "ray", "spark")  # where the rows are tagged: processes here, or a cluster
SHARD_FORMATS = ("jsonl", "parquet")
# Rows per Ray block or Spark partition of a cluster job: what the workers share out,
# and what is tagged again when one dies.
BLOCK_ROWS = 2000


@dataclass(frozen=True)
class Job:
    """What to tag and where; the same for every worker (it is sent to each)."""

    source: str
    output_dir: str
    model: str
    workers: int
    split: str | None = None  # a dataset split; None: ``source`` is a folder of text files
    encoding: str = "utf-8"
    device: str = "auto"
    precision: str = "auto"  # tagger.runtime.PRECISIONS: each worker resolves it itself
    threads: int | None = None
    min_confidence: float = 0.0  # entities below it are left out (tokens tagged O)
    engine: str = "local"  # one of ENGINES; the records, and so the shards, are the same
    address: str | None = None  # the cluster: a Ray address or a Spark master URL
    shard_format: str = "jsonl"  # one of SHARD_FORMATS

    def shard_name(self, shard: int) -> str:
        return f"shard-{shard:05d}-of-{self.workers:05d}.{self.shard_format}"


def run(job: Job, shards: list[int] | None = None, overwrite: bool = False) -> dict:
    """Tag ``shards`` (default: all) in parallel worker processes; returns the manifest.

    An output folder holding another job's shards is replaced only with ``overwrite``
    (and only when every shard is run here); one holding other files never is."""
    from tagger.predict import check_confidence
    from tagger.runtime import PRECISIONS, resolve_device, resolve_precision

    if job.workers < 1:
        raise TaggerError(f"--workers must be at least 1, not {job.workers}")
    check_confidence(job.min_confidence, "--min-confidence")
    if job.shard_format not in SHARD_FORMATS:
        raise TaggerError(
            f"unknown --shard-format {job.shard_format!r}; use {', '.join(SHARD_FORMATS)}"
        )
    if job.precision not in PRECISIONS:
        raise TaggerError(f"unknown --precision {job.precision!r}; use {', '.join(PRECISIONS)}")
    engine = engine_module(job.engine)  # a missing extra is reported before anything else
    if job.address is not None and engine is None:
        raise TaggerError("--address names a cluster: give --engine ray or --engine spark")
    if engine is None and job.precision == "bf16":  # workers of this machine: fail once, now
        resolve_precision(job.precision, resolve_device(job.device))
    todo = list(range(job.workers)) if shards is None else shards
    for shard in todo:
        if not 0 <= shard < job.workers:
            raise TaggerError(f"--shard {shard} is not in 0..{job.workers - 1}")
    out = check_output_dir(job, overwrite, every_shard=shards is None)
    _inputs(job)  # check the input before starting anyone
    if overwrite:
        _clear(out)
    _make_output_dir(out)
    failed: dict[int, str] = {}
    if engine is not None:
        failed = _run_on_cluster(job, todo, engine)
    elif len(todo) == 1:
        tag_shard(job, todo[0])
    else:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        context = multiprocessing.get_context("spawn")  # no forked torch thread pools
        with ProcessPoolExecutor(len(todo), mp_context=context) as pool:
            futures = {shard: pool.submit(tag_shard, job, shard) for shard in todo}
            for shard, future in futures.items():
                try:
                    future.result()
                except Exception as err:  # report every failed shard, keep the others
                    failed[shard] = str(err) or type(err).__name__
    manifest = write_manifest(job)
    if failed:
        lines = "; ".join(f"shard {k}: {msg}" for k, msg in sorted(failed.items()))
        raise TaggerError(
            f"{len(failed)} of {job.workers} shards failed ({lines}); rerun one alone with "
            f"--shard K, the finished shards are kept"
        )
    return manifest


# What a bulk job writes in its folder (and the temporaries of those files).
OWN_FILE = re.compile(
    r"\.?(manifest\.json|\.?manifest\.lock|shard-\d{5}-of-\d{5}\.(jsonl|parquet)(\.json)?)"
    r"(\.tmp-.*)?"
)


def engine_module(engine: str):
    """The module that tags on ``engine`` (None for ``local``); a missing package is one
    error line naming the extra that installs it."""
    import importlib

    if engine not in ENGINES:
        raise TaggerError(f"unknown --engine {engine!r}; choose one of {', '.join(ENGINES)}")
    if engine == "local":
        return None
    try:
        return importlib.import_module(f"tagger.{engine}")
    except ModuleNotFoundError as err:
        if (err.name or "").startswith("tagger"):
            raise
        raise TaggerError(
            f"--engine {engine} needs the {err.name} package: pip install 'tagger[{engine}]'"
        ) from None


def check_output_dir(job: Job, overwrite: bool = False, every_shard: bool = True) -> Path:
    """Refuse, before any work, an ``--output-dir`` that is a file, that lies in the
    folder of text files being tagged (the next run would tag its own shards), that
    holds files a bulk job did not write, or another job's shards (unless
    ``overwrite``, for a run of every shard). The same job's folder is continued."""
    out = Path(job.output_dir)
    if out.exists() and not out.is_dir():
        raise TaggerError(f"--output-dir {out} is a file, not a folder; choose another")
    source = Path(job.source)
    if job.split is None and source.is_dir():
        inside, folder = out.resolve(), source.resolve()
        if inside == folder or folder in inside.parents:
            where = "is" if inside == folder else "is inside"
            raise TaggerError(
                f"--output-dir {out} {where} the input folder {source}: the next run "
                f"would tag its shards as input; choose a folder outside it"
            )
    try:
        names = sorted(os.listdir(out)) if out.is_dir() else []
    except OSError as err:
        raise TaggerError(f"--output-dir {out}: cannot read: {err.strerror or err}") from None
    foreign = [n for n in names if not OWN_FILE.fullmatch(n)]
    if foreign:
        listing = ", ".join(foreign[:3]) + (", ..." if len(foreign) > 3 else "")
        raise TaggerError(
            f"--output-dir {out} holds files a bulk job did not write ({listing}); "
            f"choose a new or empty folder"
        )
    other = _other_job(out, job)
    if other and not (overwrite and every_shard):
        fix = (
            "pass --overwrite to replace them"
            if every_shard
            else "replace them by a run of every shard with --overwrite"
        )
        raise TaggerError(f"--output-dir {out} holds the shards of another job ({other}); {fix}")
    return out


def _other_job(out: Path, job: Job) -> str | None:
    """How the job whose manifest is in ``out`` differs from ``job`` (None: the same
    job, or no manifest yet)."""
    try:
        manifest = json.loads((out / MANIFEST).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return "an unreadable manifest.json"
    if not isinstance(manifest, dict):
        return "an unreadable manifest.json"
    mine = {"source": job.source, "split": job.split, "model": str(job.model)}
    mine["workers"] = job.workers
    mine["min_confidence"] = job.min_confidence
    mine["shard_format"] = job.shard_format
    # manifests from before the threshold and the Parquet shards
    found = {"min_confidence": 0.0, "shard_format": "jsonl", **manifest}
    differ = [f"{k} {found.get(k)!r}" for k, v in mine.items() if found.get(k) != v]
    return ", ".join(differ) or None


def _clear(out: Path) -> None:
    """Remove a bulk job's files from ``out`` (``check_output_dir`` found only those)."""
    for entry in out.iterdir() if out.is_dir() else ():
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def _make_output_dir(out: Path) -> None:
    """Create ``out`` and check that files can be made in it, before any tagging."""
    from tagger.io import temporary_sibling

    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = temporary_sibling(out / MANIFEST)
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        os.unlink(probe)
    except OSError as err:
        raise TaggerError(f"cannot write in {out}: {err.strerror or err}") from None


def tag_shard(job: Job, shard: int) -> dict:
    """Tag one shard and write its output and receipt; what one worker does."""
    import torch

    from tagger.predict import Tagger

    if job.threads:
        torch.set_num_threads(job.threads)
    elif job.workers > 1:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // job.workers))
    started = time.perf_counter()
    tagger = Tagger.load(job.model, device=job.device, precision=job.precision)
    rows = _shard_rows(job, shard)
    return _write_shard(job, shard, rows, _tag_rows(job, tagger, rows), started)


def _write_shard(job: Job, shard: int, rows, lines: Iterator[str], started: float) -> dict:
    """Write shard ``shard`` from its JSON ``lines`` (atomically: an exception while
    they are made leaves no file), then its receipt, then the manifest. The receipt's
    sha256 is of the file's bytes."""
    from tagger.io import write_atomic

    records = [0]
    digest = hashlib.sha256()

    def counted(chunks: Iterator[bytes]) -> Iterator[bytes]:
        for chunk in chunks:
            digest.update(chunk)
            yield chunk

    out = Path(job.output_dir)
    name = job.shard_name(shard)
    if job.shard_format == "parquet":
        chunks = [_parquet_bytes(lines, records, tokens=job.split is not None)]
    else:
        chunks = (line.encode("utf-8") for line in _counting(lines, records))
    write_atomic(counted(chunks), out / name)
    receipt = {
        "shard": shard,
        "file": name,
        "records": records[0],
        "sha256": digest.hexdigest(),
        "inputs": _describe(rows),
        "seconds": round(time.perf_counter() - started, 2),
    }
    write_atomic([json.dumps(receipt, ensure_ascii=False) + "\n"], out / f"{name}.json")
    write_manifest(job)
    return receipt


def _counting(chunks: Iterator[str], records: list[int]) -> Iterator[str]:
    """``chunks`` of JSON lines, their lines counted in ``records[0]``."""
    for chunk in chunks:
        records[0] += chunk.count("\n")
        yield chunk


def _parquet_bytes(lines: Iterator[str], records: list[int], tokens: bool) -> bytes:
    """A Parquet file of the records in ``lines``: for a dataset split (``tokens``) the
    columns ``id``, ``tokens``, ``tags``, ``entities``; for text files ``file``,
    ``line``, ``text``, ``entities``; typed by ``record_types`` so that every shard,
    an empty one too, has the same schema."""
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    types = record_types()
    if tokens:
        keys = [("id", pa.int64()), ("tokens", pa.list_(pa.string())), ("tags", types["tags"])]
    else:
        keys = [("file", pa.string()), ("line", pa.int64()), ("text", pa.string())]
    schema = pa.schema([*keys, ("entities", types["entities"])])
    # split on "\n" only: a text may hold other line separators (U+2028...), which JSON
    # lines keep as they are
    rows = [
        json.loads(line)
        for chunk in _counting(lines, records)
        for line in chunk.split("\n")
        if line
    ]
    buffer = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), buffer)
    return buffer.getvalue()


def write_manifest(job: Job) -> dict:
    """Rebuild ``manifest.json`` from the receipts present (under a lock: workers finish
    at different times, and the last one must see every receipt)."""
    from tagger.io import read_header, write_atomic

    out = Path(job.output_dir)
    with open(out / LOCK, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        shards, missing = [], []
        for shard in range(job.workers):
            receipt = out / f"{job.shard_name(shard)}.json"
            if receipt.is_file():
                shards.append(json.loads(receipt.read_text(encoding="utf-8")))
            else:
                missing.append(shard)
        header = read_header(job.model)
        manifest = {
            "format_version": MANIFEST_VERSION,
            "source": job.source,
            "split": job.split,
            "model": str(job.model),
            "model_sha256": header["weights"]["sha256"],
            "workers": job.workers,
            "min_confidence": job.min_confidence,
            "shard_format": job.shard_format,
            "complete": not missing,
            "missing": missing,
            "records": sum(s["records"] for s in shards),
            "shards": shards,
        }
        write_atomic([json.dumps(manifest, indent=2, ensure_ascii=False) + "\n"], out / MANIFEST)
    return manifest


def concatenate(output_dir: str | Path) -> Iterator[str]:
    """The JSON lines of every shard, in order (what one worker would have written),
    also from Parquet shards."""
    out = Path(output_dir)
    manifest = json.loads((out / MANIFEST).read_text(encoding="utf-8"))
    if not manifest["complete"]:
        raise TaggerError(f"{out}: shards {manifest['missing']} are missing; rerun them")
    for shard in manifest["shards"]:
        path = out / shard["file"]
        if path.suffix == ".parquet":
            import pyarrow.parquet as pq

            yield from map(_line, pq.read_table(path).to_pylist())
            continue
        with open(path, encoding="utf-8") as fh:
            yield from fh


# ------------------------------------------------------------------------ inputs


def _inputs(job: Job):
    """The rows to shard: a dataset split, or a dataset of text-file paths."""
    from datasets import Dataset

    if job.split is not None:
        from tagger.data import load_data

        data = load_data(job.source, encoding=job.encoding, unseen_labels="O")
        if job.split not in data:
            raise TaggerError(f"{job.source} has no split {job.split!r} (it has {', '.join(data)})")
        ds = data[job.split].select_columns(["tokens"])
        return ds.add_column("id", list(range(len(ds))))
    folder = Path(job.source)
    if not folder.is_dir():
        raise TaggerError(f"{folder}: not a folder of text files (give --split for a dataset)")
    files = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
    files = [f for f in files if not Path(f).name.startswith(".")]
    if not files:
        raise TaggerError(f"{folder}: no files to tag")
    return Dataset.from_dict({"file": files})


def _shard_rows(job: Job, shard: int, inputs=None):
    """The rows of shard ``shard`` of ``inputs`` (default: the job's, read now)."""
    from datasets.distributed import split_dataset_by_node

    inputs = _inputs(job) if inputs is None else inputs
    return split_dataset_by_node(inputs, rank=shard, world_size=job.workers)


def _describe(rows) -> dict:
    if "id" in rows.column_names:
        ids = list(rows["id"])
        return {"rows": [ids[0], ids[-1] + 1] if ids else [0, 0]}
    return {"files": list(rows["file"])}


def _tag_rows(job: Job, tagger, rows) -> Iterator[str]:
    """Output text of a shard, chunk by chunk: the records of ``tagger predict``'s JSON
    lines (entity scores included) with the row ``id`` or the ``file`` and ``line``."""
    from tagger.predict import CHUNK_LINES, read_lines
    from tagger.runtime import trim_memory

    if "id" in rows.column_names:
        for start in range(0, len(rows), CHUNK_LINES):
            part = rows[start : start + CHUNK_LINES]
            found = token_records(tagger, part["tokens"], job.min_confidence)
            yield "".join(_line({"id": i, **record}) for i, record in zip(part["id"], found))
        return
    folder = Path(job.source)
    for name in rows["file"]:
        lines = enumerate(read_lines(folder / name, job.encoding), start=1)
        while chunk := list(islice(lines, CHUNK_LINES)):
            trim_memory()
            found = text_records(tagger, [text for _, text in chunk], job.min_confidence)
            yield "".join(
                _line({"file": name, "line": n, **record}) for (n, _), record in zip(chunk, found)
            )


def _line(record: dict) -> str:
    return json.dumps(record, ensure_ascii=False) + "\n"


# ------------------------------------------------------------------------ records


def token_records(
    tagger, sentences: Sequence[Sequence[str]], min_confidence: float = 0.0, batch_size: int = 256
) -> list[dict]:
    """The records of ``tagger predict --pretokenized`` (JSON lines): ``tokens``,
    ``tags`` and ``entities`` with token offsets and scores."""
    from tagger.predict import tokens_record

    sentences = [list(tokens) for tokens in sentences]
    found = tagger.tag(sentences, batch_size, min_confidence=min_confidence)
    return [
        tokens_record(tokens, tags, ents)
        for tokens, tags, ents in zip(sentences, found.tags, found.entities)
    ]


def text_records(tagger, texts: Sequence[str], min_confidence: float = 0.0) -> list[dict]:
    """The records of ``tagger predict`` (JSON lines) for raw texts: ``text`` and its
    ``entities`` with character offsets and scores."""
    from tagger.predict import text_record

    spans = tagger.tag_docs(list(tagger.nlp.pipe(texts, batch_size=256)), min_confidence)
    return [text_record(text, found) for text, found in zip(texts, spans)]


def record_types() -> dict:
    """The Arrow types of the columns ``arrow_records`` adds. An entity is a struct in
    the key order of the JSON records, so Arrow, Parquet, Ray and Spark rows convert
    back (``to_pylist``, ``Row.asDict(recursive=True)``) to the same dicts."""
    import pyarrow as pa

    entity = pa.struct(
        [
            ("text", pa.string()),
            ("label", pa.string()),
            ("start", pa.int64()),
            ("end", pa.int64()),
            ("score", pa.float64()),
        ]
    )
    return {"tags": pa.list_(pa.string()), "entities": pa.list_(entity)}


def record_columns(columns: Sequence[str], text_column: str = "text") -> list[str]:
    """The columns ``arrow_records`` adds to a table with ``columns``: ``entities`` for
    raw text in ``text_column``, else ``tags`` and ``entities`` for token lists in
    ``tokens``."""
    if text_column in columns:
        return ["entities"]
    if "tokens" in columns:
        return ["tags", "entities"]
    raise TaggerError(
        f"no column {text_column!r} of raw text nor 'tokens' of token lists to tag "
        f"(the columns are {', '.join(columns) or 'none'})"
    )


def arrow_records(
    tagger, table, text_column: str = "text", min_confidence: float = 0.0, batch_size: int = 256
):
    """``table`` (a ``pyarrow.Table``) with the fields of the JSON-lines records added as
    columns (``record_columns``, typed by ``record_types``; columns of those names are
    replaced): what the Ray and Spark engines return. A null text or token list is
    tagged as empty. ``batch_size``: token lists per forward pass."""
    import pyarrow as pa

    added = record_columns(table.column_names, text_column)
    if added == ["entities"]:
        texts = [text or "" for text in table.column(text_column).to_pylist()]
        found = text_records(tagger, texts, min_confidence)
    else:
        sentences = [tokens or [] for tokens in table.column("tokens").to_pylist()]
        found = token_records(tagger, sentences, min_confidence, batch_size)
    table = table.drop_columns([name for name in added if name in table.column_names])
    types = record_types()
    for name in added:
        values = pa.array([record[name] for record in found], type=types[name])
        table = table.append_column(pa.field(name, types[name]), values)
    return table


# ------------------------------------------------------------------------ clusters


def _run_on_cluster(job: Job, todo: list[int], engine) -> dict[int, str]:
    """Tag the rows of the shards ``todo`` on ``engine``'s cluster and write each shard
    from the records that stream back; returns the shards that failed, with why. The
    input is read here (as ``tagger predict`` reads it), so files must fit in memory."""
    import pyarrow as pa

    from tagger.io import load_model

    load_model(job.model)  # a damaged model folder: one error line, not one per worker
    inputs = _inputs(job)
    parts = [(shard, _shard_rows(job, shard, inputs)) for shard in todo]
    tables = [_cluster_rows(job, rows) for _, rows in parts]
    failed: dict[int, str] = {}
    with engine.cluster(job):  # a cluster that cannot start is one error line
        records = engine.job_records(job, pa.concat_tables(tables))
        try:
            for (shard, rows), table in zip(parts, tables):
                if failed:
                    failed[shard] = f"not tagged: shard {min(failed)} failed first"
                    continue
                keys = table.select(["id"] if "id" in table.column_names else ["file", "line"])
                try:
                    lines = _checked_lines(records, keys.to_pylist())
                    _write_shard(job, shard, rows, lines, time.perf_counter())
                except Exception as err:  # the cluster gave up, or returned the wrong rows
                    failed[shard] = _first_line(err)
        finally:
            records.close()  # stops the cluster's work on an early exit
    return failed


def _cluster_rows(job: Job, rows):
    """A shard's input rows as an Arrow table: a dataset's ``id`` and ``tokens``, or
    each line of the text files with its ``file`` and ``line``."""
    import pyarrow as pa

    from tagger.predict import read_lines

    if "id" in rows.column_names:
        return pa.table({"id": list(rows["id"]), "tokens": list(rows["tokens"])})
    columns: dict[str, list] = {"file": [], "line": [], "text": []}
    for name in rows["file"]:
        for n, text in enumerate(read_lines(Path(job.source) / name, job.encoding), start=1):
            columns["file"].append(name)
            columns["line"].append(n)
            columns["text"].append(text)
    return pa.table(
        columns,
        schema=pa.schema([("file", pa.string()), ("line", pa.int64()), ("text", pa.string())]),
    )


def _checked_lines(records: Iterator[dict], keys: list[dict]) -> Iterator[str]:
    """The JSON lines of the next ``len(keys)`` records, each checked to be for the row
    whose key (``id``, or ``file`` and ``line``) is due: a cluster that lost, repeated or
    reordered rows stops the shard before it is written."""
    for key in keys:
        record = next(records, None)
        if record is None:
            raise TaggerError(f"the cluster returned no record for {_key(key)}")
        if any(record.get(k) != v for k, v in key.items()):
            raise TaggerError(f"the cluster returned {_key(record, key)} where {_key(key)} was due")
        yield _line(record)


def _key(record: dict, key: dict | None = None) -> str:
    return ", ".join(f"{k} {record.get(k)!r}" for k in key or record)


def _first_line(err: Exception) -> str:
    """The first line of an error's message (a cluster's errors carry tracebacks)."""
    text = str(err).strip()
    return (text.splitlines()[0][:300] if text else "") or type(err).__name__
