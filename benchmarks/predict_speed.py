"""Prediction speed and test F1 of several models in one run: a teacher next to its
student, an ensemble next to one model, a precision next to another.

    python benchmarks/predict_speed.py models/conll-ens4 models/student
    python benchmarks/predict_speed.py models/conll --precision fp32 bf16

Each model tags the pre-tokenized test split of ``--data`` (``Tagger.tag``: IOB2 tags,
entities and their scores, batch 256) ``--repeat`` times, the models in turn so that a
slow minute of the machine falls on all of them; the best time counts. Test F1 is
seqeval's default mode on the same tags. Run it alone on the machine: only ratios
measured in one run compare.
"""

from __future__ import annotations

import argparse
import time

import torch

from tagger import schemes
from tagger.data import read_source
from tagger.evaluation import score
from tagger.predict import Tagger


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("models", nargs="+", help="model folders (single or ensemble)")
    parser.add_argument("--data", default="../shared/data/conll2003", help="a CoNLL folder")
    parser.add_argument("--split", default="test")
    parser.add_argument("--precision", nargs="+", default=["auto"], help="one or more modes")
    parser.add_argument("--repeat", type=int, default=3, help="timed passes per model")
    args = parser.parse_args()

    sentences = read_source(args.data).splits[args.split]
    tokens = [s.tokens for s in sentences]
    gold = [schemes.to_iob2(s.tags) for s in sentences]  # CoNLL-2003 is IOB1
    words = sum(map(len, tokens))
    runs = [
        (path, mode, Tagger.load(path, device="cpu", precision=mode))
        for path in args.models
        for mode in args.precision
    ]
    threads = torch.get_num_threads()
    print(f"{len(tokens):,} {args.split} sentences, {words:,} words; {threads} threads")
    best = {}
    for _ in range(args.repeat):
        for path, mode, tagger in runs:
            start = time.perf_counter()
            found = tagger.tag(tokens)
            seconds = time.perf_counter() - start
            best[path, mode] = min(best.get((path, mode), (seconds, None))[0], seconds), found
    first = None
    print("| model | members | precision | words/s | relative | test F1 |")
    print("| --- | ---: | --- | ---: | ---: | ---: |")
    for path, mode, tagger in runs:
        seconds, found = best[path, mode]
        speed = words / seconds
        first = first or speed
        f1 = 100 * score(gold, found.tags)["f1"]
        members = tagger.config.ensemble
        print(
            f"| {path} | {members} | {tagger.precision} | {speed:,.0f} | {speed / first:.2f} "
            f"| {f1:.2f} |"
        )


if __name__ == "__main__":
    main()
