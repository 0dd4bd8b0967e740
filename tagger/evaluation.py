"""Entity-level scores with seqeval (default conlleval-style mode, or strict IOB2)."""

from __future__ import annotations

import math
from collections.abc import Sequence

AVERAGES = ("micro avg", "macro avg", "weighted avg")


def score(
    gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]], strict: bool = False
) -> dict:
    """Precision / recall / F1 (micro), macro F1 and per-type scores, as plain floats.

    Both sides must be IOB2. ``strict`` uses seqeval's strict IOB2 mode, where an
    invalid sequence such as ``O I-PER`` is no mention at all.
    """
    from seqeval.metrics import classification_report
    from seqeval.scheme import IOB2

    options = {"mode": "strict", "scheme": IOB2} if strict else {}
    report = classification_report(
        [list(g) for g in gold],
        [list(p) for p in pred],
        output_dict=True,
        zero_division=0,
        **options,
    )
    per_type = {
        etype: {
            "precision": _finite(row["precision"]),
            "recall": _finite(row["recall"]),
            "f1": _finite(row["f1-score"]),
            "support": int(row["support"]),
        }
        for etype, row in report.items()
        if etype not in AVERAGES
    }
    micro = report.get("micro avg", {"precision": 0.0, "recall": 0.0, "f1-score": 0.0})
    return {
        "precision": _finite(micro["precision"]),
        "recall": _finite(micro["recall"]),
        "f1": _finite(micro["f1-score"]),
        "macro_f1": _finite(report.get("macro avg", {"f1-score": 0.0})["f1-score"]),
        "support": sum(row["support"] for row in per_type.values()),
        "per_type": per_type,
        "mode": "strict" if strict else "default",
    }


def _finite(value) -> float:
    """seqeval gives NaN averages when there are no mentions at all; JSON has no NaN."""
    value = float(value)
    return value if math.isfinite(value) else 0.0


def format_report(scores: dict) -> str:
    """A seqeval-style table in percent, with micro and macro rows."""
    lines = [f"{'':>10} {'precision':>10} {'recall':>10} {'f1':>10} {'support':>10}"]
    for etype, row in scores["per_type"].items():
        lines.append(
            f"{etype:>10} {100 * row['precision']:10.2f} {100 * row['recall']:10.2f} "
            f"{100 * row['f1']:10.2f} {row['support']:10d}"
        )
    lines.append("")
    lines.append(
        f"{'micro':>10} {100 * scores['precision']:10.2f} {100 * scores['recall']:10.2f} "
        f"{100 * scores['f1']:10.2f} {scores['support']:10d}"
    )
    lines.append(f"{'macro':>10} {'':>10} {'':>10} {100 * scores['macro_f1']:10.2f}")
    if scores.get("unknown_types"):
        lines.append(
            f"\nthe model does not know {', '.join(scores['unknown_types'])}: "
            "those mentions count as missed"
        )
    return "\n".join(lines)


def evaluate(
    model,
    data=None,
    split: str = "test",
    strict: bool = False,
    min_confidence: float = 0.0,
    calibration: bool = False,
    errors: bool = False,
    **load_options,
) -> dict:
    """Score a model (a ``Tagger`` or its folder) on a split of ``data``.

    ``data``: a ``DatasetDict``, a ``Dataset``, a source for ``load_data``, or ``None``
    for the data the model was trained on (its config's ``data``, ``dev``, ``test`` and
    ``revision``; the bundled corpus if it was trained on that). ``load_options`` go to
    ``load_data``; ``encoding`` and ``tag_column`` default to the model's own, and one
    given as ``None`` counts as not given. ``evaluate(tagger)`` scores the test split the
    model was trained with, as ``tagger evaluate MODEL`` does.

    ``min_confidence`` drops predicted entities below it before scoring. With
    ``calibration`` the result has a ``"calibration"`` reliability table of the
    predicted entities (``reliability``); with ``errors`` an ``"errors"`` analysis
    (``tagger.analysis.analyse``) of every wrong prediction.
    """
    import datasets

    from tagger import schemes
    from tagger.data import decoded_tags, load_data
    from tagger.errors import TaggerError
    from tagger.predict import Tagger

    tagger = model if isinstance(model, Tagger) else Tagger.load(model)
    if not isinstance(data, (datasets.Dataset, datasets.DatasetDict)):
        data, load_options = training_source(tagger.config, data, **load_options)
        data = load_data(data, **load_options)
    if isinstance(data, datasets.DatasetDict):
        if split not in data:
            raise TaggerError(f"no {split!r} split in the data (splits: {', '.join(data)})")
        data = data[split]
    gold = [schemes.to_iob2(tags) for tags in decoded_tags(data)]
    tokens = data["tokens"]
    found = tagger.tag(
        tokens,
        entities=calibration or errors,
        scores=calibration or errors,
        min_confidence=min_confidence,
    )
    scores = score(gold, found.tags, strict=strict)
    known = set(tagger.entity_types)
    # Types the model never learnt score as missed mentions (seqeval counts them so);
    # they are named, so that a low recall has its reason beside it.
    scores["unknown_types"] = sorted(set(scores["per_type"]) - known)
    if min_confidence:
        scores["min_confidence"] = min_confidence
    if calibration:
        scores["calibration"] = reliability(gold, found.entities)
    if errors:
        from tagger.analysis import analyse

        confidences = [[p for *_, p in ents] for ents in found.entities]
        scores["errors"] = analyse(list(tokens), gold, found.tags, confidences)
    return scores


CALIBRATION_BINS = 10
HIGH_CONFIDENCE = 0.9


def reliability(
    gold: Sequence[Sequence[str]], entities: list[list], bins: int = CALIBRATION_BINS
) -> dict:
    """How far predicted entities' confidence can be trusted: the entities split into
    ``bins`` equal confidence bins, each with its count, mean confidence and precision
    (the share that is exactly a gold mention, span and type), the expected calibration
    error ``sum_b n_b / N * |precision_b - confidence_b|``, and the precision and share
    of the entities at ``HIGH_CONFIDENCE`` or above.

    ``gold``: IOB2 tags per sentence; ``entities``: ``(start, end, label, score)`` per
    sentence (``Tagger.tag``), token offsets with end exclusive."""
    from tagger import schemes

    scored = []  # (confidence, correct) of every predicted entity
    for tags, ents in zip(gold, entities):
        truth = set(schemes.spans(tags))
        scored += [(p, (s, e, label) in truth) for s, e, label, p in ents]
    rows, ece = [], 0.0
    for b in range(bins):
        low, high = b / bins, (b + 1) / bins
        inside = [(p, ok) for p, ok in scored if low <= p < high or (b == bins - 1 and p == 1.0)]
        row = {
            "low": low,
            "high": high,
            "count": len(inside),
            "precision": None,
            "confidence": None,
        }
        if inside:
            row["precision"] = sum(ok for _, ok in inside) / len(inside)
            row["confidence"] = sum(p for p, _ in inside) / len(inside)
            ece += len(inside) / len(scored) * abs(row["precision"] - row["confidence"])
        rows.append(row)
    sure = [ok for p, ok in scored if p >= HIGH_CONFIDENCE]
    return {
        "entities": len(scored),
        "bins": rows,
        "ece": ece,
        "high_confidence": {
            "threshold": HIGH_CONFIDENCE,
            "precision": sum(sure) / len(sure) if sure else None,
            "share": len(sure) / len(scored) if scored else None,
        },
    }


def format_calibration(calibration: dict) -> str:
    """The reliability table in percent, the ECE and the high-confidence line."""
    lines = [f"{'confidence':>12} {'entities':>9} {'mean conf':>10} {'precision':>10}"]
    for row in calibration["bins"]:
        span = f"{100 * row['low']:.0f}-{100 * row['high']:.0f}%"
        if row["count"]:
            lines.append(
                f"{span:>12} {row['count']:9d} {100 * row['confidence']:10.2f} "
                f"{100 * row['precision']:10.2f}"
            )
        else:
            lines.append(f"{span:>12} {0:9d} {'-':>10} {'-':>10}")
    lines.append(f"expected calibration error: {100 * calibration['ece']:.2f} points")
    high = calibration["high_confidence"]
    if high["precision"] is not None:
        lines.append(
            f"confidence >= {high['threshold']:g}: precision {100 * high['precision']:.2f}% "
            f"on {100 * high['share']:.1f}% of the {calibration['entities']:,} predicted entities"
        )
    return "\n".join(lines)


def training_source(config, data=None, **load_options) -> tuple:
    """``(source, load_data options)`` to read ``data`` as a model of ``config`` was
    trained. With ``data`` None: its own source, split and read exactly as in training
    (``dev``, ``test``, ``revision``, fractions, seed, label map, format). Other data is
    read with the model's ``encoding``, ``tag_column``, ``lang`` and ``misaligned``, its
    format detected. Options given (not None) win either way."""
    defaults = {
        key: getattr(config, key) for key in ("encoding", "tag_column", "lang", "misaligned")
    }
    if data is None:
        data = config.data
        defaults.update(config.source_options())
    given = {key: value for key, value in load_options.items() if value is not None}
    return data, {**defaults, **given}
