"""1 vs N processes: DDP training (gloo on CPU) and sharded bulk tagging, one table.

    python benchmarks/scale_out.py --data ../shared/data/conll2003 --model runs/lstm \\
        --epochs 3 --nproc 2

Training: the same config (seed, global batch) in one process and in ``--nproc``
processes under torchrun; seconds per epoch and dev F1. Bulk tagging: the train split
with 1 and ``--nproc`` workers; wall time and whether the concatenated shards are
byte-identical.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path


def tagger(*args: str) -> float:
    """Run ``tagger ARGS``; returns the wall time."""
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "tagger", *args])
    if proc.returncode:
        sys.exit(f"failed: tagger {' '.join(args)}")
    return time.perf_counter() - t0


def shards_digest(folder: Path) -> str:
    manifest = json.loads((folder / "manifest.json").read_text())
    digest = hashlib.sha256()
    for shard in manifest["shards"]:
        digest.update((folder / shard["file"]).read_bytes())
    return digest.hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--model", required=True, help="model folder for bulk tagging")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--nproc", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/out/scale_out"))
    args = parser.parse_args()
    shutil.rmtree(args.out, ignore_errors=True)
    args.out.mkdir(parents=True)

    rows = []
    for n in (1, args.nproc):
        out = args.out / f"train-{n}"
        flags = ["--data", args.data, "--max-epochs", str(args.epochs), "-o", str(out), "-q"]
        wall = tagger("train", *flags, *(["--nproc", str(n)] if n > 1 else []))
        m = json.loads((out / "metrics.json").read_text())
        per_epoch = statistics.median(e["seconds"] for e in m["epochs"])
        rows.append((n, per_epoch, wall, m["dev_f1"], m["test_f1"]))
    print("\n| processes | s/epoch (median) | wall s | dev F1 | test F1 |")
    print("| ---: | ---: | ---: | ---: | ---: |")
    for n, per_epoch, wall, dev, test in rows:
        print(f"| {n} | {per_epoch:.1f} | {wall:.0f} | {100 * dev:.2f} | {100 * test:.2f} |")
    print(f"dev F1 difference: {100 * abs(rows[0][3] - rows[1][3]):.2f}")

    digests = {}
    print("\n| bulk workers | wall s | records | sha256 of the concatenated shards |")
    print("| ---: | ---: | ---: | --- |")
    for n in (1, args.nproc):
        out = args.out / f"bulk-{n}"
        wall = tagger(
            "predict", args.data, "--split", "train", "-m", args.model,
            "--output-dir", str(out), "--workers", str(n),
        )  # fmt: skip
        records = json.loads((out / "manifest.json").read_text())["records"]
        digests[n] = shards_digest(out)
        print(f"| {n} | {wall:.1f} | {records:,} | {digests[n][:16]} |")
    print(f"identical output: {digests[1] == digests[args.nproc]}")


if __name__ == "__main__":
    main()
