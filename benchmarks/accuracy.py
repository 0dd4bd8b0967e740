"""The README's accuracy table: settings x seeds, trained and scored in one command.

    python benchmarks/accuracy.py                        # every setting, seeds 13 14 15
    python benchmarks/accuracy.py --only conll-glove --seeds 13
    python benchmarks/accuracy.py --quick                # smoke run: 1 seed, 1 epoch, 300 sentences

Each setting trains on the train split, stops early on dev and reports test F1 (seqeval
default mode, best-dev epoch). The corpora come from ``../shared/data`` (CoNLL-2003,
NCBI-disease, BC5CDR, GloVe 6B 50d); a setting whose files are absent is skipped with a
line saying so. ``conll-3k`` is CoNLL-2003 train cut to 3,000 random sentences (seed 0),
a stand-in for a small corpus. Model folders and the table (``accuracy.md``) go under
``--work``; ``--reuse`` keeps runs whose model folder is complete. Run it alone on the
machine: the minutes mean nothing next to another job.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

SHARED = Path(__file__).resolve().parents[2] / "shared/data"
GLOVE = SHARED / "glove/glove.6B.50d.txt.gz"


@dataclass(frozen=True)
class Setting:
    """One row of the table: a corpus folder (train/dev/test.txt) and config fields."""

    corpus: str
    fields: dict = field(default_factory=dict)
    train_sentences: int | None = None  # cut train to this many random sentences
    runs: int | None = None  # at most this many of the seeds (an ensemble is 4 runs already)


SETTINGS = {
    "conll": Setting("conll2003"),
    "conll-glove": Setting("conll2003", {"embeddings": str(GLOVE)}),
    "conll-glove-ensemble": Setting("conll2003", {"embeddings": str(GLOVE), "ensemble": 4}, runs=1),
    "conll-3k": Setting("conll2003", train_sentences=3000),
    "ncbi-disease-glove": Setting("ncbi-disease", {"embeddings": str(GLOVE)}),
    "bc5cdr-glove": Setting("bc5cdr", {"embeddings": str(GLOVE)}),
}
QUICK_SENTENCES = 300


def cut_train(corpus: Path, sentences: int, work: Path) -> Path:
    """``corpus``'s train file cut to ``sentences`` random sentences (seed 0), written once
    under ``work``; documents markers are dropped."""
    out = work / f"data/{corpus.name}-{sentences}/train.txt"
    if not out.is_file():
        blocks = corpus.joinpath("train.txt").read_text(encoding="utf-8").split("\n\n")
        blocks = [b for b in blocks if b.strip() and not b.startswith("-DOCSTART-")]
        random.Random(0).shuffle(blocks)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text("\n\n".join(blocks[:sentences]) + "\n\n", encoding="utf-8")
    return out


def run(name: str, setting: Setting, seed: int, args) -> dict | None:
    """Train one seed of a setting (or reuse it); its scores, epochs and minutes."""
    from tagger import TrainConfig, train

    corpus = SHARED / setting.corpus
    needed = [corpus / f"{s}.txt" for s in ("train", "dev", "test")]
    if "embeddings" in setting.fields:
        needed.append(GLOVE)
    missing = [str(p) for p in needed if not p.is_file()]
    if missing:
        print(f"{name}: skipped, missing {', '.join(missing)}")
        return None
    sentences = QUICK_SENTENCES if args.quick else setting.train_sentences
    data = cut_train(corpus, sentences, args.work) if sentences else corpus / "train.txt"
    folder = args.work / f"{name}/seed-{seed}"
    if not (args.reuse and (folder / "config.json").is_file()):
        fields = {
            "data": str(data),
            "dev": str(corpus / "dev.txt"),
            "test": str(corpus / "test.txt"),
            "seed": seed,
            "output": str(folder),
            "overwrite": True,
            **setting.fields,
            **({"max_epochs": 1} if args.quick else {}),
        }
        started = time.perf_counter()
        train(TrainConfig.from_dict(fields), progress=not args.silent)
        (folder.parent / f"seed-{seed}.minutes").write_text(
            f"{(time.perf_counter() - started) / 60:.1f}\n"
        )
    metrics = json.loads((folder / "metrics.json").read_text())
    members = metrics.get("members") or [metrics]
    return {
        "test": 100 * metrics["test_f1"],
        "dev": 100 * metrics["dev_f1"],
        "epochs": sum(len(m["epochs"]) for m in members),
        "minutes": float((folder.parent / f"seed-{seed}.minutes").read_text()),
    }


def spread(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", nargs="+", choices=list(SETTINGS), default=list(SETTINGS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[13, 14, 15])
    parser.add_argument("--work", type=Path, default=Path("benchmarks/out/accuracy"))
    parser.add_argument("--quick", action="store_true", help="1 seed, 1 epoch, 300 sentences")
    parser.add_argument("--reuse", action="store_true", help="keep complete model folders")
    parser.add_argument("--silent", action="store_true", help="no training progress")
    args = parser.parse_args()
    seeds = args.seeds[:1] if args.quick else args.seeds

    lines = [
        "| setting | seeds | test F1 | (min–max) | dev F1 | epochs | minutes / run |",
        "| --- | --- | ---: | --- | ---: | ---: | ---: |",
    ]
    for name in args.only:
        setting = SETTINGS[name]
        used = seeds[: setting.runs]
        runs = [r for r in (run(name, setting, s, args) for s in used) if r]
        if not runs:
            continue
        test = [r["test"] for r in runs]
        lines.append(
            f"| {name} | {' '.join(map(str, used))} | {spread(test)} "
            f"| {min(test):.2f}–{max(test):.2f} | {spread([r['dev'] for r in runs])} "
            f"| {statistics.mean(r['epochs'] for r in runs):.0f} "
            f"| {statistics.mean(r['minutes'] for r in runs):.1f} |"
        )
    table = "\n".join(lines)
    args.work.mkdir(parents=True, exist_ok=True)
    (args.work / "accuracy.md").write_text(table + "\n")
    print(table)


if __name__ == "__main__":
    main()
