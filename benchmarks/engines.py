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
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from predict_file import detokenize  # benchmarks/predict_file.py, beside this file

from tagger.data import bundled_data_dir, read_source

ENGINES = ("local", "ray", "spark")
FILES = 8  # the raw text is cut into this many files: shards are whole files


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


def run(engine: str, source: str, out: Path, model: str, split: str | None) -> dict:
    """``tagger predict SOURCE --output-dir OUT --engine ENGINE --workers 2``: wall
    seconds, records and the sha256 of the concatenated shards (None if it failed)."""
    command = [sys.executable, "-m", "tagger", "predict", source, "-m", model]
    command += ["--output-dir", str(out), "--engine", engine, "--workers", "2"]
    command += ["--split", split] if split else []
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # 1 torch thread per worker everywhere
    t0 = time.perf_counter()
    proc = subprocess.run(command, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode:
        errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
        return {"wall": wall, "failed": (errors or proc.stderr.splitlines() or ["?"])[-1]}
    manifest = json.loads((out / "manifest.json").read_text())
    digest = hashlib.sha256()
    for shard in manifest["shards"]:
        digest.update((out / shard["file"]).read_bytes())
    return {"wall": wall, "records": manifest["records"], "sha256": digest.hexdigest()}


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
    print("| input | engine | wall s | records | same shards as the first engine |")
    print("| --- | --- | ---: | ---: | --- |")
    all_same = True
    for name, source, part in inputs:
        results = {}
        for engine in args.engines:
            out = args.out / f"{'split' if part else 'text'}-{engine}"
            results[engine] = r = run(engine, source, out, args.model, part)
            if "failed" in r:
                print(f"| {name} | {engine} | {r['wall']:.1f} | failed: {r['failed']} | |")
                all_same = False
                continue
            first = next(x for x in results.values() if "sha256" in x)
            same = r["sha256"] == first["sha256"]
            all_same &= same
            print(f"| {name} | {engine} | {r['wall']:.1f} | {r['records']:,} | {same} |")
    print(f"every engine wrote the same records: {all_same}")
    sys.exit(0 if all_same else 1)


if __name__ == "__main__":
    main()
