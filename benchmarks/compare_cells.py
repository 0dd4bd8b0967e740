"""Train rnn / lstm / gru with the same settings and seed; print a Markdown table.

    python benchmarks/compare_cells.py --data ../shared/data/conll2003 --out benchmarks/out/cells

Each cell's model folder goes under ``--out``; the table (parameters, seconds per
epoch, epochs, best dev F1, test F1) is printed and written to ``--out/cells.md``.
Extra ``--set key=value`` pairs change any training config field for all cells.
Run it alone on the machine: seconds per epoch mean nothing next to another job.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from tagger import TrainConfig, train


def parse_value(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", default=None, help="data source (default: bundled corpus)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/out/cells"))
    parser.add_argument("--cells", nargs="+", default=["rnn", "lstm", "gru"])
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE")
    parser.add_argument("--reuse", action="store_true", help="keep model folders that exist")
    args = parser.parse_args()

    overrides = dict(item.split("=", 1) for item in args.set)
    rows = []
    for cell in args.cells:
        folder = args.out / cell
        if not (args.reuse and (folder / "metrics.json").exists()):
            fields = {
                **TrainConfig().to_dict(),
                **{k: parse_value(v) for k, v in overrides.items()},
            }
            fields.update(data=args.data, cell=cell, output=str(folder), overwrite=True)
            t0 = time.perf_counter()
            train(TrainConfig.from_dict(fields))
            (folder / "wall_seconds.txt").write_text(f"{time.perf_counter() - t0:.1f}\n")
        metrics = json.loads((folder / "metrics.json").read_text())
        wall = float((folder / "wall_seconds.txt").read_text())
        config = json.loads((folder / "config.json").read_text())["config"]
        seconds = [e["seconds"] for e in metrics["epochs"]]
        rows.append(
            (
                cell,
                config["decoder"],
                metrics["parameters"],
                statistics.median(seconds),
                wall / 60,
                len(seconds),
                metrics["best_epoch"],
                metrics["dev_f1"],
                metrics["test_f1"],
            )
        )
    lines = [
        "| cell | decoder | parameters | s / epoch (median) | wall min (all) | epochs run "
        "| best epoch | dev F1 | test F1 |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    lines += [
        f"| {c} | {d} | {p:,} | {s:.1f} | {w:.1f} | {n} | {b} | {100 * dev:.2f} | "
        + (f"{100 * test:.2f} |" if test is not None else "- |")
        for c, d, p, s, w, n, b, dev, test in rows
    ]
    table = "\n".join(lines)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "cells.md").write_text(table + "\n")
    print(table)


if __name__ == "__main__":
    main()
