"""What entity scores cost: words/s of prediction with scores off and on, same run.

    python benchmarks/score_cost.py MODEL [--data DIR] [--repeats 3] [--threads N]

The test split of ``../shared/data/conll2003`` (pre-tokenized) when that folder exists,
else the bundled corpus's, is tagged in the same process, each way in turn, and the best
of ``--repeats`` runs of each is kept (the turns alternate, so a busy machine slows
both alike). Ways:

* ``entities``: ``Tagger.tag`` with entities, scores off (Viterbi only);
* ``entities + scores``: the same with each entity's probability (one forward-backward
  pass over the sentences that have entities) -- what JSON lines hold by default;
* ``jsonl`` / ``jsonl + scores``: the whole ``tagger predict --pretokenized`` path
  (``predict_lines``), JSON records included;
* ``tag scores``: each token's probability of its tag (marginals of every sentence),
  the CoNLL ``--scores`` column, for reference.

The target is scores on costing at most 25 % more time than scores off.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

import torch

from tagger.data import bundled_data_dir, read_source
from tagger.predict import Tagger, predict_lines

CONLL = Path(__file__).resolve().parents[2] / "shared/data/conll2003"


def test_sentences(data: Path | None) -> tuple[Path, list[list[str]]]:
    """The test split's token lists, and where they are from."""
    source = data or (CONLL if CONLL.is_dir() else bundled_data_dir())
    corpus = read_source(str(source))
    return source, [s.tokens for s in corpus.splits["test"] if s.tokens]


def best_seconds(ways: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Each way's fastest of ``repeats`` runs, the ways taking turns."""
    for run in ways.values():  # warm-up: allocator, thread pool, first-call costs
        run()
    best = dict.fromkeys(ways, float("inf"))
    for _ in range(repeats):
        for name, run in ways.items():
            started = time.perf_counter()
            run()
            best[name] = min(best[name], time.perf_counter() - started)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("model", type=Path, help="model folder")
    parser.add_argument("--data", type=Path, default=None, help="corpus folder with a test split")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all)")
    args = parser.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    tagger = Tagger.load(args.model, device="cpu")
    source, sentences = test_sentences(args.data)
    words = sum(len(s) for s in sentences)
    lines = [line for s in sentences for line in [*s, ""]]

    def tag(**options) -> Callable[[], object]:
        return lambda: tagger.tag(sentences, args.batch_size, **options)

    def jsonl(scores: bool) -> Callable[[], object]:
        return lambda: sum(
            len(c) for c in predict_lines(tagger, lines, "jsonl", pretokenized=True, scores=scores)
        )

    ways = {
        "entities": tag(scores=False),
        "entities + scores": tag(scores=True),
        "jsonl": jsonl(False),
        "jsonl + scores": jsonl(True),
        "tag scores": tag(entities=False, scores=False, token_scores=True),
    }
    found = tagger.tag(sentences, args.batch_size).entities
    print(
        f"model {args.model} ({tagger.config.model.decoder}, {tagger.config.model.scheme}); "
        f"data {source} test: {len(sentences):,} sentences, {words:,} words, "
        f"{sum(map(len, found)):,} entities; {torch.get_num_threads()} threads, "
        f"best of {args.repeats}"
    )
    best = best_seconds(ways, args.repeats)
    for name, seconds in best.items():
        print(f"{name:>18}: {words / seconds:>9,.0f} words/s  ({seconds:.3f} s)")
    for off, on in (("entities", "entities + scores"), ("jsonl", "jsonl + scores")):
        extra = best[on] / best[off] - 1
        verdict = "within" if extra <= 0.25 else "over"
        print(f"scores cost {extra:+.1%} time on {off!r} ({verdict} the 25 % target)")


if __name__ == "__main__":
    main()
