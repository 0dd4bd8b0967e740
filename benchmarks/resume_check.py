"""Interrupt a real training run with Ctrl-C (SIGINT) or SIGKILL in epoch 2, resume it,
and compare it with an uninterrupted run of the same seed.

    python benchmarks/resume_check.py --data ../shared/data/conll2003 --epochs 3

Prints both runs' dev and test F1 (4 decimals) and whether the weights are identical.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from safetensors.torch import load_file


def tagger(*args: str, **kwargs) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "tagger", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        **kwargs,
    )


def interrupted_run(args, output: Path) -> float:
    """Start training, send the signal ``--delay`` seconds into epoch 2; returns when."""
    proc = tagger("train", "--data", args.data, "--max-epochs", str(args.epochs), "-o", str(output))
    for line in proc.stdout:
        print("  |", line.rstrip())
        if line.lstrip().startswith("epoch   1/"):
            break
    time.sleep(args.delay)
    proc.send_signal(getattr(signal, args.signal))
    sent = time.time()
    for line in proc.stdout:
        print("  |", line.rstrip())
    proc.wait()
    print(f"  exit status {proc.returncode}")
    return sent


def scores(path: Path) -> dict:
    metrics = json.loads((path / "metrics.json").read_text())
    return {"dev": metrics["dev_f1"], "test": metrics["test_f1"], "epochs": len(metrics["epochs"])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--delay", type=float, default=8.0, help="seconds into epoch 2")
    parser.add_argument("--signal", default="SIGINT", choices=["SIGINT", "SIGKILL"])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/out/resume"))
    args = parser.parse_args()
    straight, resumed = args.out / "straight", args.out / "resumed"
    args.out.mkdir(parents=True, exist_ok=True)
    for old in (resumed, resumed.with_name(resumed.name + ".checkpoint")):
        shutil.rmtree(old, ignore_errors=True)  # a previous check's

    print(f"straight run ({args.epochs} epochs)")
    if not straight.exists():
        proc = tagger(
            "train", "--data", args.data, "--max-epochs", str(args.epochs), "-o", str(straight)
        )
        for line in proc.stdout:
            print("  |", line.rstrip())
        if proc.wait():
            sys.exit("the straight run failed")
    print(f"interrupted run ({args.signal} {args.delay:.0f} s into epoch 2)")
    interrupted_run(args, resumed)
    checkpoint = resumed.with_name(resumed.name + ".checkpoint")
    print(f"resumed run (tagger train --resume {checkpoint})")
    proc = tagger("train", "--resume", str(checkpoint))
    for line in proc.stdout:
        print("  |", line.rstrip())
    if proc.wait():
        sys.exit("the resumed run failed")

    a, b = scores(straight), scores(resumed)
    wa, wb = load_file(straight / "model.safetensors"), load_file(resumed / "model.safetensors")
    same = wa.keys() == wb.keys() and all((wa[k] == wb[k]).all() for k in wa)
    print("\n| run | epochs | dev F1 | test F1 |\n| --- | ---: | ---: | ---: |")
    for name, s in (("straight", a), (f"{args.signal} in epoch 2, resumed", b)):
        print(f"| {name} | {s['epochs']} | {100 * s['dev']:.4f} | {100 * s['test']:.4f} |")
    same_dev = f"{100 * a['dev']:.4f}" == f"{100 * b['dev']:.4f}"
    print(f"\nsame dev F1 to 4 decimals: {same_dev}")
    print(f"identical weights: {same}")


if __name__ == "__main__":
    main()
