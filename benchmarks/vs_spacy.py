"""tagger next to spaCy's own CPU NER, in one run: F1, training speed, prediction speed.

    python benchmarks/vs_spacy.py --model models/conll --data ../shared/data/conll2003

spaCy's side is a blank English pipeline with spaCy's default ``ner`` component
(``nlp.add_pipe("ner")``: transition-based parser over a HashEmbedCNN tok2vec), trained
here on the same train split (batch 128, early stopping on dev F1) and saved under
``--out`` (``--reuse`` loads it instead). Prediction is timed on the test split twice:
on pre-tokenized ``Doc``s (tokenization not counted: our ``Tagger.predict`` on token
lists, spaCy's ``ner.pipe`` on Docs) and on the raw test text, one detokenized sentence
per line (tokenization counted: both ``nlp.pipe`` over the strings; ours is the exported
pipeline of ``tagger export-spacy``). Both use ``--batch-size`` and the same threads.
Run it alone on the machine.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import statistics
import time
from pathlib import Path

import spacy
import torch
from spacy.tokens import Doc
from spacy.training import Example
from spacy.util import minibatch

import tagger
from tagger.data import decoded_tags
from tagger.spacy_component import build_pipeline, spacy_scores

try:
    from predict_file import detokenize
except ImportError:  # run as a module
    from benchmarks.predict_file import detokenize


def examples(nlp, dataset) -> list[Example]:
    out = []
    for words, tags in zip(dataset["tokens"], decoded_tags(dataset)):
        out.append(Example(Doc(nlp.vocab, words=words), Doc(nlp.vocab, words=words, ents=tags)))
    return out


def train_spacy(data, out: Path, max_epochs: int, patience: int, seed: int) -> tuple:
    """Train spaCy's default NER; returns (nlp, seconds per epoch list, best dev F1)."""
    spacy.util.fix_random_seed(seed)
    nlp = spacy.blank("en")
    nlp.add_pipe("ner")
    train, dev = examples(nlp, data["train"]), examples(nlp, data["validation"])
    optimizer = nlp.initialize(lambda: train)
    rng = random.Random(seed)
    best, best_bytes, stale, seconds = -1.0, None, 0, []
    for epoch in range(1, max_epochs + 1):
        rng.shuffle(train)
        t0 = time.perf_counter()
        losses: dict = {}
        for batch in minibatch(train, size=128):
            nlp.update(batch, sgd=optimizer, drop=0.1, losses=losses)
        seconds.append(time.perf_counter() - t0)
        f1 = nlp.evaluate(dev)["ents_f"]
        print(
            f"spaCy epoch {epoch}: loss {losses['ner']:.1f}, dev F1 {100 * f1:.2f}, "
            f"{seconds[-1]:.1f} s",
            flush=True,
        )
        if f1 > best:
            best, best_bytes, stale = f1, nlp.to_bytes(), 0
        else:
            stale += 1
            if stale >= patience:
                break
    nlp.from_bytes(best_bytes)
    nlp.to_disk(out)
    (out / "train_seconds.json").write_text(json.dumps({"seconds": seconds, "dev_f1": best}))
    return nlp, seconds, best


def timed(fn, repeat: int) -> float:
    """Best wall time of ``repeat`` calls (after one warm-up)."""
    fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", required=True, help="our trained model folder")
    parser.add_argument("--data", default="../shared/data/conll2003")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/out/vs_spacy"))
    parser.add_argument("--reuse", action="store_true", help="load spaCy's model from --out")
    parser.add_argument("--spacy-epochs", type=int, default=20)
    parser.add_argument("--patience", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--seed", type=int, default=13)
    args = parser.parse_args()

    data = tagger.load_data(args.data)
    test = data["test"]
    n_words = sum(len(t) for t in test["tokens"])
    texts = [detokenize(t) for t in test["tokens"]]
    raw_words = sum(len(t.split()) for t in texts)

    spacy_dir = args.out / "spacy_ner"
    if args.reuse and spacy_dir.exists():
        sp = spacy.load(spacy_dir)
        sp_train = json.loads((spacy_dir / "train_seconds.json").read_text())["seconds"]
    else:
        args.out.mkdir(parents=True, exist_ok=True)
        sp, sp_train, _ = train_spacy(data, spacy_dir, args.spacy_epochs, args.patience, args.seed)
    sp_f1 = sp.evaluate(examples(sp, test))["ents_f"]

    ours = tagger.Tagger.load(args.model, device="cpu")
    ours_nlp = build_pipeline(ours)
    our_f1 = spacy_scores(ours_nlp, test)["ents_f"]
    our_train = [e["seconds"] for e in ours.metrics.get("epochs", [])]
    train_words = sum(len(t) for t in data["train"]["tokens"])

    tokens = test["tokens"]
    docs = [Doc(sp.vocab, words=w) for w in tokens]
    ner = sp.get_pipe("ner")
    ours_tok = timed(lambda: ours.predict(tokens, batch_size=args.batch_size), args.repeat)
    sp_tok = timed(lambda: list(ner.pipe(docs, batch_size=args.batch_size)), args.repeat)
    ours_raw = timed(lambda: list(ours_nlp.pipe(texts, batch_size=args.batch_size)), args.repeat)
    sp_raw = timed(lambda: list(sp.pipe(texts, batch_size=args.batch_size)), args.repeat)

    def row(name, f1, train_s, tok_s, raw_s):
        med = statistics.median(train_s) if train_s else float("nan")
        return (
            f"| {name} | {100 * f1:.2f} | {med:.1f} | {train_words / med:,.0f} | "
            f"{n_words / tok_s:,.0f} | {raw_words / raw_s:,.0f} |"
        )

    lines = [
        f"test split: {len(tokens):,} sentences, {n_words:,} tokens; batch {args.batch_size}; "
        f"torch threads {torch.get_num_threads()}; best of {args.repeat} timed runs",
        "",
        "| system | test F1 | train s/epoch (median) | train words/s | predict words/s "
        "(pre-tokenized) | predict words/s (raw text) |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
        row(
            f"tagger ({ours.config.cell}-{ours.config.decoder})",
            our_f1,
            our_train,
            ours_tok,
            ours_raw,
        ),
        row("spaCy ner (default CPU)", sp_f1, sp_train, sp_tok, sp_raw),
        "| tagger vs spaCy (F1 difference, time and speed ratios) | "
        f"{100 * (our_f1 - sp_f1):+.2f} | "
        f"{statistics.median(our_train) / statistics.median(sp_train):.2f} | | "
        f"{sp_tok / ours_tok:.2f} | {sp_raw / ours_raw:.2f} |",
        "",
        f"peak RSS of this process (both systems loaded): "
        f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB",
    ]
    table = "\n".join(lines)
    (args.out / "vs_spacy.md").write_text(table + "\n")
    print(table)


if __name__ == "__main__":
    main()
