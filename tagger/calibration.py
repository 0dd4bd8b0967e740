"""Temperature scaling of a trained model's probabilities (``tagger calibrate``, and
``tagger train`` at its end unless ``calibrate = false``).

A CRF trained to maximise likelihood is usually over-confident on new text: its entity
scores say 99% where 95% of such entities are right. One scalar T > 0 divides every score
the probabilities are read from (emissions and transitions; Guo et al. 2017 for
classifiers), which leaves every decoded tag as it was and moves the confidences
towards the precision they should have. T is fitted on one half of the dev split (every
other sentence) to minimise the log loss of "this predicted entity is exactly a gold
mention", and calibration is reported on the other half and on test, never on the
sentences it was fitted on.

Viterbi does not depend on T, so each split is run through the encoder and decoded
once (``DecodedSplit``); only the span probabilities are recomputed per temperature.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch

from tagger import schemes
from tagger.batching import bucket_indices, encode, make_batch
from tagger.errors import TaggerError
from tagger.evaluation import reliability
from tagger.io import PLOT, OutputLock

GRID = 61  # temperatures tried, evenly spaced on a log scale over SEARCH
SEARCH = (0.25, 8.0)
FIT_HALF = "validation sentences 1, 3, 5, ..."
MIN_SENTENCES = 2  # one to fit on, one to measure on


@dataclass
class DecodedSplit:
    """Sentences decoded once, kept for reading their entities' probabilities at any
    temperature: per batch the emissions (B, T, K), mask (B, T), best label ids (B, T)
    and mentions (N, 3) rows ``(row, start, end)``; per mention its sentence, label and
    whether it is exactly a gold mention."""

    batches: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]]
    mentions: list[tuple[int, int, int, str]]  # (sentence, start, end, label), batch order
    correct: torch.Tensor  # (mentions,) bool
    sentences: int

    @classmethod
    def of(cls, tagger, tokens: list[list[str]], gold: list[list[str]], batch_size: int = 256):
        """Decode ``tokens`` (non-empty token lists) and mark the mentions found in
        ``gold`` (IOB2 tags per sentence)."""
        model, reader = tagger.model, tagger._reader.to(tagger.device)
        enc = encode(tagger.vocab, tokens)
        batches, mentions = [], []
        was_training = model.training
        model.eval()
        with torch.inference_mode():
            for chunk in bucket_indices(enc.lengths, batch_size):
                batch = make_batch(enc, chunk).to(tagger.device)
                emissions = model.emissions(batch).float()
                best = model.decoder.decode(emissions, batch.mask)
                spans = reader.mentions(best, batch.mask)
                kinds = reader.type_id[best[spans[:, 0], spans[:, 1]]].cpu().tolist()
                for (row, s, e), kind in zip(spans.cpu().tolist(), kinds):
                    mentions.append((int(batch.index[row]), s, e, reader.types[kind - 1]))
                batches.append((emissions, batch.mask, best, spans))
        model.train(was_training)
        truth = [set(schemes.spans(tags)) for tags in gold]
        correct = torch.tensor([(s, e, label) in truth[i] for i, s, e, label in mentions])
        return cls(batches, mentions, correct, len(tokens))

    def log_probs(self, decoder, temperature: float) -> torch.Tensor:
        """(mentions,) float64: log p of each mention at ``temperature``."""
        with torch.inference_mode():
            parts = [
                decoder.span_log_probs(emissions, mask, best, spans, temperature).double()
                for emissions, mask, best, spans in self.batches
            ]
        return torch.cat(parts) if parts else torch.zeros(0, dtype=torch.float64)

    def log_loss(self, decoder, temperature: float) -> float:
        """Mean binary log loss of the mentions' probabilities against being right."""
        log_p = self.log_probs(decoder, temperature).clamp(min=math.log(1e-6), max=-1e-6)
        right = torch.where(self.correct, log_p, torch.log(-torch.expm1(log_p)))
        return float(-right.mean())

    def entities(self, decoder, temperature: float) -> list[list]:
        """``(start, end, label, score)`` per sentence, as ``Tagger.tag`` gives them."""
        found: list[list] = [[] for _ in range(self.sentences)]
        scores = self.log_probs(decoder, temperature).exp().tolist()
        for (i, s, e, label), p in zip(self.mentions, scores):
            found[i].append((s, e, label, p))
        return found


def fit_temperature(tagger, tokens: list[list[str]], gold: list[list[str]]) -> float:
    """The temperature on ``GRID`` points between ``SEARCH`` that minimises the log loss
    of the predicted entities on these sentences (IOB2 ``gold``); 1.0 when the model
    predicts no entity there."""
    split = DecodedSplit.of(tagger, tokens, gold)
    return _fit(split, tagger.model.decoder)


def _fit(split: DecodedSplit, decoder) -> float:
    if not split.mentions:
        return 1.0
    low, high = (math.log(x) for x in SEARCH)
    grid = [math.exp(low + (high - low) * i / (GRID - 1)) for i in range(GRID)]
    losses = [split.log_loss(decoder, t) for t in grid]
    return grid[losses.index(min(losses))]


def calibrates_on(tokens: list[list[str]]) -> bool:
    """Whether a dev split has enough sentences to fit on one half and test on the other."""
    return sum(1 for t in tokens if t) >= MIN_SENTENCES


def calibration_report(
    tagger, splits: dict[str, tuple[list[list[str]], list[list[str]]]]
) -> tuple[float, dict]:
    """Fit the temperature on every other sentence of ``splits["validation"]`` (token
    lists, IOB2 tags) and measure the reliability before and after on the other half and
    on ``splits["test"]`` where given: ``(temperature, report)``. Empty sentences are
    left out (they have no entities). Raises ``TaggerError`` with fewer than 2 dev
    sentences."""
    kept = {
        name: ([t for t in toks if t], [g for t, g in zip(toks, tags) if t])
        for name, (toks, tags) in splits.items()
    }
    tokens, gold = kept["validation"]
    if not calibrates_on(tokens):
        raise TaggerError(
            f"the validation split needs at least {MIN_SENTENCES} sentences to calibrate"
        )
    decoder = tagger.model.decoder
    temperature = _fit(DecodedSplit.of(tagger, tokens[0::2], gold[0::2]), decoder)
    report: dict = {"temperature": temperature, "fitted_on": f"{FIT_HALF} ({len(tokens[0::2]):,})"}
    held_out = {"validation (other half)": (tokens[1::2], gold[1::2])}
    if "test" in kept:
        held_out["test"] = kept["test"]
    for name, (toks, tags) in held_out.items():
        split = DecodedSplit.of(tagger, toks, tags)
        report[name] = {
            key: reliability(tags, split.entities(decoder, t))
            for key, t in (("before", 1.0), ("after", temperature))
        }
    return temperature, report


def format_summary(report: dict) -> str:
    """One line for the end of training: the temperature and the calibration error
    before and after it on each held-out split."""
    parts = [
        f"{name} {100 * r['before']['ece']:.2f} -> {100 * r['after']['ece']:.2f}"
        for name, r in report.items()
        if isinstance(r, dict)
    ]
    return (
        f"calibration: temperature {report['temperature']:.3f} fitted on {report['fitted_on']}; "
        f"expected calibration error (points) {', '.join(parts)}"
    )


def calibrate(model: str | Path, data=None, device: str = "auto", **load_options) -> dict:
    """Fit the temperature of the model folder ``model`` on half its dev split (the data
    it was trained on, or ``data``), record it in the folder (``config.json``
    ``calibration_temperature``, ``metrics.json`` ``calibration``) and return the
    report: the temperature, and the reliability before and after on the other dev half
    and on test (where there is one)."""
    from tagger.data import decoded_tags, load_data
    from tagger.evaluation import training_source
    from tagger.predict import Tagger

    tagger = Tagger.load(model, device=device)
    source, options = training_source(tagger.config, data, **load_options)
    dataset = load_data(source, **options)
    if "validation" not in dataset:
        raise TaggerError(f"{source or 'the data'} has no validation split to calibrate on")
    splits = {
        name: (
            list(dataset[name]["tokens"]),
            [schemes.to_iob2(t) for t in decoded_tags(dataset[name])],
        )
        for name in ("validation", "test")
        if name in dataset
    }
    tagger.temperature, report = calibration_report(tagger, splits)
    tagger.metrics["calibration"] = report
    plot = Path(model) / PLOT
    extras = {PLOT: plot.read_bytes()} if plot.is_file() else {}
    with OutputLock(Path(model)):  # not while a run writes this folder
        tagger.save(model, overwrite=True, extras=extras)
    return report
