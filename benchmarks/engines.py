"""Bulk tagging on the three engines: local processes, Ray Data, Spark; one table.

    python benchmarks/engines.py --model models/conll                 # the full run
    python benchmarks/engines.py --model models/tagger --quick        # a smoke run

Inputs: the CoNLL-2003 train split (14,041 sentences, pre-tokenized, ``--split train``)
and about 20 MB of raw text written from its sentences (detokenized, one per line, in 8
files so that every engine can share the work). Each is tagged by ``tagger predict
--output-dir`` with ``--workers 2``: 2 local processes, 2 Ray actors (a local Ray
started by the command), and Spark ``local[2,4]``. Wall time is the whole command,
start-up of the cluster included; the concatenated shards of every engine must be
byte-identical. ``--quick`` tags the bundled corpus's test split and 0.2 MB of text.
Outputs go to ``--out`` (default under /tmp).

``--kill-after S`` adds a row per cluster engine on the text input: S seconds into the
job, one worker process (a Ray actor, a Spark Python worker) gets SIGKILL. The engine
must retry its work and still write the same shards.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from predict_file import detokenize  # benchmarks/predict_file.py, beside this file

from tagger.data import bundled_data_dir, read_source

ENGINES = ("local", "ray", "spark")
FILES = 8  # the raw text is cut into this many files: shards are whole files
RETRY_SIGNS = re.compile(
    r"Lost task|ActorDiedError|actor died|worker died|exited unexpectedly", re.I
)
WORKER_MARKS = {"ray": ("ray::MapWorker", "TaggerBatch"), "spark": ("pyspark.daemon",)}


def write_texts(data: str, folder: Path, megabytes: float) -> int:
    """About ``megabytes`` MB of detokenized train sentences in ``FILES`` files; returns
    the number of lines."""
    sentences = [detokenize(s.tokens) for s in read_source(data).splits["train"]]
    per_file = int(megabytes * 1_000_000 / FILES)
    folder.mkdir(parents=True)
    n = 0
    for k in range(FILES):
        written, lines = 0, []
        while written < per_file:
            line = sentences[n % len(sentences)] + "\n"
            lines.append(line)
            written += len(line.encode("utf-8"))
            n += 1
        (folder / f"part-{k}.txt").write_text("".join(lines), encoding="utf-8")
    return n


def _processes() -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, command line) for every process /proc shows."""
    table = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:  # it ended meanwhile
                continue
            table[int(entry.name)] = (int(stat.rsplit(")", 1)[1].split()[1]), cmdline)
    return table


def kill_one_worker(root: int, engine: str) -> str:
    """SIGKILL the deepest descendant of ``root`` whose command line has one of the
    engine's worker marks (a forked Spark worker lies below its daemon); says which."""
    table = _processes()

    def depth(pid: int) -> int:
        d = 0
        while pid in table and pid != root:
            pid, d = table[pid][0], d + 1
        return d if pid == root else -1

    workers = [
        (depth(pid), pid, cmd)
        for pid, (_, cmd) in table.items()
        if any(mark in cmd for mark in WORKER_MARKS[engine]) and depth(pid) > 0
    ]
    if not workers:
        return "no worker found to kill"
    _, pid, cmd = max(workers)
    os.kill(pid, signal.SIGKILL)
    return f"killed pid {pid} ({cmd.strip()[:40]})"


def run(
    engine: str, source: str, out: Path, model: str, split: str | None, kill_after: float = 0
) -> dict:
    """``tagger predict SOURCE --output-dir OUT --engine ENGINE --workers 2``: wall
    seconds, records and the sha256 of the concatenated shards (None if it failed).
    With ``kill_after``, one worker is killed that many seconds in."""
    command = [sys.executable, "-m", "tagger", "predict", source, "-m", model]
    command += ["--output-dir", str(out), "--engine", engine, "--workers", "2"]
    command += ["--split", split] if split else []
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # 1 torch thread per worker everywhere
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    killed = []
    if kill_after:
        timer = threading.Timer(
            kill_after, lambda: killed.append(kill_one_worker(proc.pid, engine))
        )
        timer.start()
    _, stderr = proc.communicate()
    wall = time.perf_counter() - t0
    if kill_after:
        timer.cancel()
    note = killed[0] if killed else ("job ended before the kill" if kill_after else "")
    if killed:  # what the engine said about it: Spark's lost task, Ray's dead actor
        said = sorted(
            (line for line in stderr.splitlines() if RETRY_SIGNS.search(line)),
            key=lambda line: "Lost task" not in line,  # Spark's clearest line first
        )
        note += (
            f"; the engine said: {said[0].strip()[:160]}" if said else "; the engine said nothing"
        )
    if proc.returncode:
        errors = [line for line in stderr.splitlines() if line.startswith("error:")]
        failed = (errors or stderr.splitlines() or ["?"])[-1]
        return {"wall": wall, "failed": failed, "note": note}
    manifest = json.loads((out / "manifest.json").read_text())
    digest = hashlib.sha256()
    for shard in manifest["shards"]:
        digest.update((out / shard["file"]).read_bytes())
    return {
        "wall": wall,
        "records": manifest["records"],
        "sha256": digest.hexdigest(),
        "note": note,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", required=True, help="model folder")
    parser.add_argument("--data", default="../shared/data/conll2003", help="a CoNLL folder")
    parser.add_argument("--mb", type=float, default=20.0, help="MB of raw text to write")
    parser.add_argument("--quick", action="store_true", help="bundled test split, 0.2 MB")
    parser.add_argument("--engines", nargs="+", default=list(ENGINES), choices=ENGINES)
    parser.add_argument(
        "--kill-after",
        type=float,
        default=0,
        metavar="S",
        help="also run each cluster engine on the text with one worker killed S s in",
    )
    parser.add_argument(
        "--out", type=Path, default=Path(tempfile.gettempdir()) / "tagger-bench-engines"
    )
    args = parser.parse_args()
    data, split, mb = args.data, "train", args.mb
    if args.quick:
        data, split, mb = str(bundled_data_dir()), "test", 0.2
    shutil.rmtree(args.out, ignore_errors=True)
    texts = args.out / "texts"
    lines = write_texts(data, texts, mb)

    inputs = [
        (f"{data} --split {split}", data, split),
        (f"{mb:g} MB of text ({lines:,} lines, {FILES} files)", str(texts), None),
    ]
    runs = [
        (name, source, part, engine, 0) for name, source, part in inputs for engine in args.engines
    ]
    if args.kill_after:
        name, source, part = inputs[1]
        runs += [(name, source, part, e, args.kill_after) for e in args.engines if e != "local"]
    print("| input | engine | wall s | records | same shards as the first engine |")
    print("| --- | --- | ---: | ---: | --- |")
    all_same, first = True, {}
    for name, source, part, engine, kill in runs:
        label = f"{engine}, a worker killed at {kill:g} s" if kill else engine
        out = args.out / f"{'split' if part else 'text'}-{engine}{'-killed' if kill else ''}"
        r = run(engine, source, out, args.model, part, kill)
        if kill:
            label += f" ({r['note']})"
            all_same &= r["note"].startswith("killed")
        if "failed" in r:
            print(f"| {name} | {label} | {r['wall']:.1f} | failed: {r['failed']} | |")
            all_same = False
            continue
        same = r["sha256"] == first.setdefault(name, r["sha256"])
        all_same &= same
        print(f"| {name} | {label} | {r['wall']:.1f} | {r['records']:,} | {same} |")
    print(f"every engine wrote the same records: {all_same}")
    sys.exit(0 if all_same else 1)


if __name__ == "__main__":
    main()
