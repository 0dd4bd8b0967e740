"""Temperature scaling of a trained model's probabilities (``tagger calibrate``).

A CRF trained to maximise likelihood is usually over-confident on new text: its entity
scores say 99% where 95% of such entities are right. One scalar T > 0 divides every score
the probabilities are read from (emissions and transitions; Guo et al. 2017 for
classifiers), which leaves every decoded tag as it was and moves the confidences
towards the precision they should have. T is fitted on one half of the dev split (every
other sentence) to minimise the log loss of "this predicted entity is exactly a gold
mention", and calibration is reported on the other half and on test, never on the
sentences it was fitted on.
"""

from __future__ import annotations

import math
from pathlib import Path

from tagger import schemes
from tagger.errors import TaggerError
from tagger.evaluation import reliability
from tagger.io import PLOT, OutputLock

GRID = 61  # temperatures tried, evenly spaced on a log scale over SEARCH
SEARCH = (0.25, 8.0)


def entity_outcomes(tagger, tokens: list[list[str]], gold: list[list[str]], temperature: float):
    """``(score, correct)`` of every entity the model predicts at ``temperature``."""
    saved = tagger.temperature
    tagger.temperature = temperature
    try:
        found = tagger.tag(tokens)
    finally:
        tagger.temperature = saved
    pairs = []
    for tags, ents in zip(gold, found.entities):
        truth = set(schemes.spans(tags))
        pairs += [(p, (s, e, label) in truth) for s, e, label, p in ents]
    return pairs, found.entities


def log_loss(pairs: list[tuple[float, bool]]) -> float:
    """Mean binary log loss of the scores against correctness (clipped away from 0, 1)."""
    eps = 1e-6
    total = sum(-math.log(max(p, eps) if ok else max(1 - p, eps)) for p, ok in pairs)
    return total / max(len(pairs), 1)


def fit_temperature(tagger, tokens: list[list[str]], gold: list[list[str]]) -> float:
    """The temperature on ``GRID`` points between ``SEARCH`` that minimises ``log_loss``
    on these sentences (IOB2 ``gold``); 1.0 when the model predicts no entity there."""
    low, high = (math.log(x) for x in SEARCH)
    grid = [math.exp(low + (high - low) * i / (GRID - 1)) for i in range(GRID)]
    losses = []
    for t in grid:
        pairs, _ = entity_outcomes(tagger, tokens, gold, t)
        if not pairs:
            return 1.0
        losses.append(log_loss(pairs))
    return grid[losses.index(min(losses))]


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
    dev = dataset["validation"]
    tokens, gold = list(dev["tokens"]), [schemes.to_iob2(t) for t in decoded_tags(dev)]
    if len(tokens) < 2:
        raise TaggerError("the validation split needs at least 2 sentences to calibrate")
    fit_half = (tokens[0::2], gold[0::2])
    temperature = fit_temperature(tagger, *fit_half)
    report: dict = {
        "temperature": temperature,
        "fitted_on": f"validation sentences 1, 3, 5, ... ({len(fit_half[0]):,})",
    }
    held_out = {"validation (other half)": (tokens[1::2], gold[1::2])}
    if "test" in dataset:
        test = dataset["test"]
        held_out["test"] = (
            list(test["tokens"]),
            [schemes.to_iob2(t) for t in decoded_tags(test)],
        )
    for name, (toks, tags) in held_out.items():
        report[name] = {}
        for key, t in (("before", 1.0), ("after", temperature)):
            _, entities = entity_outcomes(tagger, toks, tags, t)
            report[name][key] = reliability(tags, entities)
    tagger.temperature = temperature
    tagger.metrics["calibration"] = report
    plot = Path(model) / PLOT
    extras = {PLOT: plot.read_bytes()} if plot.is_file() else {}
    with OutputLock(Path(model)):  # not while a run writes this folder
        tagger.save(model, overwrite=True, extras=extras)
    return report
