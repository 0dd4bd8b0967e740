"""tagger next to spaCy's own CPU NER, in one run: F1, training speed, prediction speed,
for each precision tagger can predict in, and an ensemble of four against one model.

    python benchmarks/vs_spacy.py --model models/conll --data ../shared/data/conll2003
    python benchmarks/vs_spacy.py --model models/conll --ensemble models/conll-ens4 --reuse
    python benchmarks/vs_spacy.py --model models/conll --quick     # a smoke run, a minute

spaCy's side is a blank English pipeline with spaCy's default ``ner`` component
(``nlp.add_pipe("ner")``: transition-based parser over a HashEmbedCNN tok2vec), trained
here on the same train split (batch 128, early stopping on dev F1) and saved under
``--out`` (``--reuse`` loads it instead). Prediction is timed on the test split twice:
on pre-tokenized ``Doc``s (tokenization not counted: our ``Tagger.predict`` on token
lists, spaCy's ``ner.pipe`` on Docs) and on the raw test text, one detokenized sentence
per line (tokenization counted: both ``nlp.pipe`` over the strings; ours is the exported
pipeline of ``tagger export-spacy``). Both use ``--batch-size`` and the same threads;
every system is loaded first and then they are timed in turns, best of ``--repeat``
each, so that the machine's drift over minutes falls on all of them alike.

Training speed: spaCy's epochs above against ``--train-epochs`` epochs of tagger's default
config on the same train split, in fp32 and (where this CPU runs it) bf16 (``train
--precision``) taking turns epoch by epoch, each the training step alone as
``TrainingRun.train_epoch`` runs it, no dev scoring, as on spaCy's side; with ``--reuse``
spaCy's epoch times are the earlier run's.

tagger runs in each precision (``Tagger.load(precision=...)``): fp32, bf16 where this CPU
can run it at all, and auto (which is one of the two: the line says which and why); each
with its test F1 and the share of test tokens whose tag equals fp32's. The ensemble rows
time ``--ensemble`` (default: four copies of ``--model``, which predict as slowly as four
members) against ``--model`` in each precision. The CPU's bf16/AMX flags are printed with
the numbers. Run it alone on the machine.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import random
import resource
import statistics
import time
from pathlib import Path

import numpy as np
import spacy
import torch
from spacy.tokens import Doc
from spacy.training import Example
from spacy.util import minibatch

import tagger
from tagger.config import TrainConfig
from tagger.continued import _select
from tagger.data import decoded_tags
from tagger.model import Ensemble
from tagger.runtime import cpu_bf16_speedup
from tagger.spacy_component import build_pipeline, spacy_scores
from tagger.trainer import TrainingRun
from tagger.training import build

try:
    from predict_file import detokenize
    from score_cost import best_seconds
except ImportError:  # run as a module
    from benchmarks.predict_file import detokenize
    from benchmarks.score_cost import best_seconds

QUICK_TRAIN, QUICK_TEST = 1000, 300  # sentences of --quick
BF16_FLAGS = ("avx512f", "avx512_bf16", "amx_bf16", "amx_tile")


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


def our_epochs(
    data: str, precisions: list[str], epochs: int, seed: int, quick: bool
) -> dict[str, list[float]]:
    """Seconds of each of ``epochs`` training epochs of tagger's default config in each
    of ``precisions`` (fp32, bf16), the precisions taking turns epoch by epoch:
    ``TrainingRun.train_epoch`` alone, no dev scoring."""
    runs = {
        name: TrainingRun(build(TrainConfig(data=data, precision=name, seed=seed).validate()))
        for name in precisions
    }
    seconds: dict[str, list[float]] = {name: [] for name in precisions}
    for epoch in range(1, epochs + 1):
        for name, run in runs.items():
            train = run.epoch_sentences()
            if quick:
                train = _select(train, np.arange(QUICK_TRAIN))
            t0 = time.perf_counter()
            run.train_epoch(epoch, progress=False, enc=train)
            seconds[name].append(time.perf_counter() - t0)
    return seconds


def train_row(name: str, seconds: list[float], words: int, spacy_epoch: float) -> str:
    """A row of the training table: median epoch, words/s, and the epoch against spaCy's."""
    med = statistics.median(seconds)
    return f"| {name} | {med:.1f} | {words / med:,.0f} | {med / spacy_epoch:.2f}x |"


def run_pipe(nlp: spacy.Language, texts: list[str], batch_size: int) -> list:
    """A spaCy pipeline over raw texts, to the last doc."""
    return list(nlp.pipe(texts, batch_size=batch_size))


def cpu_flags() -> str:
    """The CPU's model name and its bf16-related flags (/proc/cpuinfo), and what the
    probe behind ``--precision auto`` found."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        lines = []
    fields = {k.strip(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    flags = fields.get("flags", "").split()
    shown = " ".join(f for f in sorted(set(flags)) if f.startswith("amx") or f in BF16_FLAGS)
    speedup = cpu_bf16_speedup()
    probe = "bf16 cannot run here" if speedup is None else f"bf16 ran {speedup:.2f}x fp32's speed"
    return (
        f"CPU: {fields.get('model name', '?')}; flags: {shown or 'none of ' + ' '.join(BF16_FLAGS)}"
        f"; ONEDNN_MAX_CPU_ISA={os.environ.get('ONEDNN_MAX_CPU_ISA', 'unset')}; probe: {probe}"
    )


def precisions() -> list[str]:
    """The precisions to time here: fp32, bf16 where this CPU can run it, and auto."""
    return ["fp32", *(["bf16"] if cpu_bf16_speedup() is not None else []), "auto"]


def agreement(tags: list[list[str]], reference: list[list[str]]) -> float:
    """The share of tokens tagged as in ``reference``."""
    pairs = [(a, b) for s, r in zip(tags, reference) for a, b in zip(s, r)]
    return sum(a == b for a, b in pairs) / max(1, len(pairs))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", required=True, help="our trained model folder")
    parser.add_argument("--ensemble", help="an ensemble model folder [default: 4 x --model]")
    parser.add_argument("--data", default="../shared/data/conll2003")
    parser.add_argument("--out", type=Path, help="[default: benchmarks/out/vs_spacy(_quick)]")
    parser.add_argument("--reuse", action="store_true", help="load spaCy's model from --out")
    parser.add_argument("--spacy-epochs", type=int, default=20)
    parser.add_argument("--patience", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--train-epochs", type=int, default=3, help="tagger epochs timed per precision"
    )
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"smoke run: {QUICK_TEST} test sentences, spaCy 1 epoch on {QUICK_TRAIN}, 1 repeat",
    )
    args = parser.parse_args()
    out = args.out or Path("benchmarks/out/vs_spacy" + ("_quick" if args.quick else ""))

    data = tagger.load_data(args.data)
    if args.quick:
        data = {
            "train": data["train"].select(range(QUICK_TRAIN)),
            "validation": data["validation"].select(range(QUICK_TEST)),
            "test": data["test"].select(range(QUICK_TEST)),
        }
        args.spacy_epochs, args.repeat, args.train_epochs = 1, 1, 1
    test = data["test"]
    tokens = list(test["tokens"])
    n_words = sum(len(t) for t in tokens)
    texts = [detokenize(t) for t in tokens]
    raw_words = sum(len(t.split()) for t in texts)
    train_words = sum(len(t) for t in data["train"]["tokens"])  # both systems train on

    spacy_dir = out / "spacy_ner"
    if args.reuse and spacy_dir.exists():
        sp = spacy.load(spacy_dir)
        sp_train = json.loads((spacy_dir / "train_seconds.json").read_text())["seconds"]
    else:
        out.mkdir(parents=True, exist_ok=True)
        sp, sp_train, _ = train_spacy(data, spacy_dir, args.spacy_epochs, args.patience, args.seed)
    sp_f1 = sp.evaluate(examples(sp, test))["ents_f"]
    docs = [Doc(sp.vocab, words=w) for w in tokens]
    ner = sp.get_pipe("ner")

    # Every system is loaded first and then timed in turns (best of --repeat each), so
    # that the machine's drift over minutes falls on all of them alike.
    ours = {
        name: tagger.Tagger.load(args.model, device="cpu", precision=name) for name in precisions()
    }
    pipelines = {name: build_pipeline(model) for name, model in ours.items()}
    pretokenized = {"spacy": lambda: list(ner.pipe(docs, batch_size=args.batch_size))}
    raw = {"spacy": functools.partial(run_pipe, sp, texts, args.batch_size)}
    for name, model in ours.items():
        pretokenized[name] = functools.partial(model.predict, tokens, batch_size=args.batch_size)
        raw[name] = functools.partial(run_pipe, pipelines[name], texts, args.batch_size)
    tok_s = best_seconds(pretokenized, args.repeat)
    raw_s = best_seconds(raw, args.repeat)

    rows, modes, reference = [], {}, None
    for name, model in ours.items():
        tags = model.predict(tokens, batch_size=args.batch_size)
        reference = reference or tags  # fp32 comes first
        modes[name] = model.precision
        label = name if name != "auto" else f"auto = {model.precision} ({model.precision_reason})"
        f1 = spacy_scores(pipelines[name], test)["ents_f"]
        rows.append(
            f"| tagger ({model.config.cell}-{model.config.decoder}) | {label} | {100 * f1:.2f} | "
            f"{100 * agreement(tags, reference):.2f} | {n_words / tok_s[name]:,.0f} | "
            f"{raw_words / raw_s[name]:,.0f} | {tok_s['spacy'] / tok_s[name]:.2f}x | "
            f"{raw_s['spacy'] / raw_s[name]:.2f}x |"
        )
    rows.append(
        f"| spaCy ner (default CPU) | fp32 | {100 * sp_f1:.2f} | | "
        f"{n_words / tok_s['spacy']:,.0f} | {raw_words / raw_s['spacy']:,.0f} | 1.00x | 1.00x |"
    )

    single = ours["fp32"]
    if args.ensemble:
        ensemble = tagger.Tagger.load(args.ensemble, device="cpu", precision="fp32")
        what = f"{args.ensemble} ({len(ensemble.model.members)} members)"
    else:
        members = [single.model] * 4
        ensemble = tagger.Tagger(
            Ensemble.of(members, single.config.model, single.vocab), single.config, single.vocab
        )
        what = f"4 copies of {args.model}"
    # Each precision's ensemble in turns with that precision's single model.
    ways = {}
    for name, mode in modes.items():
        both = tagger.Tagger(ensemble.model, ensemble.config, ensemble.vocab, precision=mode)
        ways[name] = pretokenized[name]
        ways[f"{name} ensemble"] = functools.partial(
            both.predict, tokens, batch_size=args.batch_size
        )
    ens_s = best_seconds(ways, args.repeat)
    ensemble_rows = [
        f"| {name} ({mode}) | {n_words / ens_s[name]:,.0f} | "
        f"{n_words / ens_s[f'{name} ensemble']:,.0f} | "
        f"{ens_s[name] / ens_s[f'{name} ensemble']:.2f}x |"
        for name, mode in modes.items()
    ]

    spacy_epoch = statistics.median(sp_train)
    train_rows = []
    trained = ["fp32", *(["bf16"] if cpu_bf16_speedup() is not None else [])]
    epochs = our_epochs(args.data, trained, args.train_epochs, args.seed, args.quick)
    for name, seconds in epochs.items():
        train_rows.append(train_row(f"tagger ({name})", seconds, train_words, spacy_epoch))

    lines = [
        cpu_flags(),
        f"torch {torch.__version__}, {torch.get_num_threads()} threads",
        f"test split: {len(tokens):,} sentences, {n_words:,} tokens; batch {args.batch_size}; "
        f"best of {args.repeat} timed runs" + (" (--quick)" if args.quick else ""),
        "",
        "| system | precision | test F1 | tags = fp32's (%) | predict words/s (pre-tokenized) "
        "| predict words/s (raw text) | vs spaCy (pre-tokenized) | vs spaCy (raw text) |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
        *rows,
        "",
        f"ensemble: {what}; pre-tokenized, batch {args.batch_size}",
        "",
        "| precision | one model words/s | ensemble words/s | ensemble / one model (words/s) |",
        "| --- | ---: | ---: | ---: |",
        *ensemble_rows,
        "",
        f"training: {args.train_epochs} epoch(s) of tagger's defaults per precision"
        + (", spaCy's epochs from the --reuse'd run" if args.reuse else ""),
        "",
        "| system | train s/epoch (median) | train words/s | epoch / spaCy's |",
        "| --- | ---: | ---: | ---: |",
        *train_rows,
        train_row("spaCy ner (default CPU)", sp_train, train_words, spacy_epoch),
        "",
        f"peak RSS of this process (both systems loaded): "
        f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB",
    ]
    table = "\n".join(lines)
    out.mkdir(parents=True, exist_ok=True)
    (out / "vs_spacy.md").write_text(table + "\n")
    print(table)


if __name__ == "__main__":
    main()
