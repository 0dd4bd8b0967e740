"""Bulk tagging in shards: one output file per worker, and a manifest of them all.

The input is a dataset split (a hub id or a CoNLL folder, as for training; its ``tokens``
are tagged) or a folder of raw text files (tagged line by line, like ``tagger predict``).
It is cut into contiguous shards with ``datasets.distributed.split_dataset_by_node``;
worker k tags shard k and writes ``shard-0000k-of-0000N.jsonl`` (atomically, then a small
``.json`` receipt). Every worker then rebuilds ``manifest.json`` from the receipts it
finds, under a file lock, so the manifest says which shards are done and which are
missing. A crashed worker's shard is rerun alone with ``--shard k``. Concatenating the
shards in order gives exactly what a single worker writes.

Workers are local processes (``--workers N``) or, under torchrun, the ranks themselves.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tagger.errors import TaggerError

MANIFEST, LOCK = "manifest.json", ".manifest.lock"
MANIFEST_VERSION = 1


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
    threads: int | None = None
    min_confidence: float = 0.0  # entities below it are left out (tokens tagged O)

    def shard_name(self, shard: int) -> str:
        return f"shard-{shard:05d}-of-{self.workers:05d}.jsonl"


def run(job: Job, shards: list[int] | None = None, overwrite: bool = False) -> dict:
    """Tag ``shards`` (default: all) in parallel worker processes; returns the manifest.

    An output folder holding another job's shards is replaced only with ``overwrite``
    (and only when every shard is run here); one holding other files never is."""
    from tagger.predict import check_confidence

    if job.workers < 1:
        raise TaggerError(f"--workers must be at least 1, not {job.workers}")
    check_confidence(job.min_confidence, "--min-confidence")
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
    if len(todo) == 1:
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
    r"\.?(manifest\.json|\.?manifest\.lock|shard-\d{5}-of-\d{5}\.jsonl(\.json)?)(\.tmp-.*)?"
)


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
    found = {"min_confidence": 0.0, **manifest}  # manifests from before the threshold
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

    from tagger.io import write_atomic
    from tagger.predict import Tagger

    if job.threads:
        torch.set_num_threads(job.threads)
    elif job.workers > 1:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // job.workers))
    started = time.perf_counter()
    tagger = Tagger.load(job.model, device=job.device)
    rows = _shard_rows(job, shard)
    records = [0]
    digest = hashlib.sha256()

    def counted(chunks: Iterator[str]) -> Iterator[str]:
        for chunk in chunks:
            records[0] += chunk.count("\n")
            digest.update(chunk.encode("utf-8"))
            yield chunk

    out = Path(job.output_dir)
    name = job.shard_name(shard)
    write_atomic(counted(_tag_rows(job, tagger, rows)), out / name)
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
            "complete": not missing,
            "missing": missing,
            "records": sum(s["records"] for s in shards),
            "shards": shards,
        }
        write_atomic([json.dumps(manifest, indent=2, ensure_ascii=False) + "\n"], out / MANIFEST)
    return manifest


def concatenate(output_dir: str | Path) -> Iterator[str]:
    """The lines of every shard, in order (what one worker would have written)."""
    out = Path(output_dir)
    manifest = json.loads((out / MANIFEST).read_text(encoding="utf-8"))
    if not manifest["complete"]:
        raise TaggerError(f"{out}: shards {manifest['missing']} are missing; rerun them")
    for shard in manifest["shards"]:
        with open(out / shard["file"], encoding="utf-8") as fh:
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


def _shard_rows(job: Job, shard: int):
    from datasets.distributed import split_dataset_by_node

    return split_dataset_by_node(_inputs(job), rank=shard, world_size=job.workers)


def _describe(rows) -> dict:
    if "id" in rows.column_names:
        ids = list(rows["id"])
        return {"rows": [ids[0], ids[-1] + 1] if ids else [0, 0]}
    return {"files": list(rows["file"])}


def _tag_rows(job: Job, tagger, rows) -> Iterator[str]:
    """Output text of a shard, chunk by chunk: the records of ``tagger predict``'s JSON
    lines (entity scores included) with the row ``id`` or the ``file`` and ``line``."""
    from tagger.predict import CHUNK_LINES, predict_lines, read_lines, tokens_record

    if "id" in rows.column_names:
        for start in range(0, len(rows), CHUNK_LINES):
            part = rows[start : start + CHUNK_LINES]
            tokens = part["tokens"]
            found = tagger.tag(tokens, min_confidence=job.min_confidence)
            records = zip(part["id"], tokens, found.tags, found.entities)
            yield "".join(
                json.dumps({"id": i, **tokens_record(toks, tags, ents)}, ensure_ascii=False) + "\n"
                for i, toks, tags, ents in records
            )
        return
    folder = Path(job.source)
    for name in rows["file"]:
        lineno = 0
        lines = read_lines(folder / name, job.encoding)
        for chunk in predict_lines(tagger, lines, "jsonl", min_confidence=job.min_confidence):
            records = []
            for line in chunk.splitlines():
                lineno += 1
                record = {"file": name, "line": lineno, **json.loads(line)}
                records.append(json.dumps(record, ensure_ascii=False) + "\n")
            yield "".join(records)
