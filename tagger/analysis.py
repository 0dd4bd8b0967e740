"""Error analysis: every wrong prediction classified, counted and shown in its sentence.

An F1 score says how often a model is wrong, not how; this module says how, with the
usual NER error taxonomy (Chinchor & Sundheim's MUC categories, as SemEval-2013 task
9.1 scored them). Mentions are conlleval spans (``tagger.schemes.spans``), so an
``I-X`` after ``O`` opens a mention and the counts agree with ``tagger.evaluation.score``.

Matching, in each sentence: every overlapping (gold, predicted) pair is a candidate;
candidates are taken greedily by most overlapping tokens, then same type before other
type, then earlier gold start, then earlier predicted start, and a pair is kept only if
neither of its mentions is already paired. The pairing is therefore one-to-one, and
every mention is counted exactly once: each gold mention is correct, ``wrong type``,
``wrong boundary``, ``wrong type and boundary`` or ``missed``, and each predicted one is
correct, one of those three, or ``spurious``. A gold mention is missed when no
prediction is paired with it, usually because none overlaps it, but also when the only
overlapping predictions fit other gold mentions better (a prediction spanning two gold
names pairs with the one it covers more, the other is missed); likewise a split
prediction (``New York`` + ``City`` for ``New York City``) pairs one part, and the rest
is spurious. One-to-one is what lets the confusion matrix's rows add up to the gold
mentions of each type and its columns to the predicted ones.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from tagger import schemes

WRONG_TYPE = "wrong type"
WRONG_BOUNDARY = "wrong boundary"
WRONG_BOTH = "wrong type and boundary"
MISSED = "missed"
SPURIOUS = "spurious"
KINDS = (WRONG_TYPE, WRONG_BOUNDARY, WRONG_BOTH, MISSED, SPURIOUS)
# Kinds that pair a gold with a predicted mention (the others have only one side).
PAIRED = (WRONG_TYPE, WRONG_BOUNDARY, WRONG_BOTH)

Span = tuple[int, int, str]


def match(gold: Sequence[Span], pred: Sequence[Span]) -> list[tuple[int | None, int | None]]:
    """One sentence's mentions paired one-to-one, as ``(gold index, pred index)``: the
    pairs in the module docstring's order of preference, then ``(g, None)`` for every
    gold mention left unpaired and ``(None, p)`` for every predicted one."""
    candidates = []
    for gi, (g_start, g_end, g_type) in enumerate(gold):
        for pi, (p_start, p_end, p_type) in enumerate(pred):
            overlap = min(g_end, p_end) - max(g_start, p_start)
            if overlap > 0:
                candidates.append((-overlap, g_type != p_type, g_start, p_start, gi, pi))
    candidates.sort()
    pairs: list[tuple[int | None, int | None]] = []
    used_gold: set[int] = set()
    used_pred: set[int] = set()
    for *_, gi, pi in candidates:
        if gi not in used_gold and pi not in used_pred:
            pairs.append((gi, pi))
            used_gold.add(gi)
            used_pred.add(pi)
    pairs += [(gi, None) for gi in range(len(gold)) if gi not in used_gold]
    pairs += [(None, pi) for pi in range(len(pred)) if pi not in used_pred]
    return pairs


def kind_of(gold: Span | None, pred: Span | None) -> str | None:
    """The error a pairing is, or None for an exact match (same boundaries and type)."""
    if pred is None:
        return MISSED
    if gold is None:
        return SPURIOUS
    same_bounds = gold[:2] == pred[:2]
    same_type = gold[2] == pred[2]
    if same_bounds:
        return None if same_type else WRONG_TYPE
    return WRONG_BOUNDARY if same_type else WRONG_BOTH


def analyse(
    tokens: Sequence[Sequence[str]],
    gold: Sequence[Sequence[str]],
    pred: Sequence[Sequence[str]],
    confidences: Sequence[Sequence[float]] | None = None,
    sentence_ids: Sequence[str] | None = None,
) -> dict:
    """Classify every wrong prediction of a corpus; a JSON-serialisable report.

    ``gold`` and ``pred`` are tags (IOB2; any scheme ``tagger.schemes`` reads works),
    one list per sentence, as long as its tokens. ``confidences``, if given, holds one
    number per *predicted mention* of each sentence, in order: the entity scores of
    ``Tagger.tag`` / ``predict_spans``, which are the probability of exactly that span
    with that label, the number to look at when deciding whether to trust a mention.
    ``sentence_ids`` name the sentences in the errors (default: their index, as text).

    The report holds ``sentences``; ``mentions`` (gold and predicted totals); ``correct``
    (exact matches: seqeval's true positives); ``types``; ``counts`` (per kind: its
    ``total``, and per ``gold`` and ``pred`` type, each side where the kind has one);
    ``confusion`` (``rows``: the types and ``spurious``; ``columns``: the types and
    ``missed``; ``matrix[row][column]``; a paired mention counts under its gold and
    predicted types whatever its boundaries); ``frequent`` (every distinct error, most
    frequent first, with a ``label`` such as ``"Vogt" ORG→PER``); and ``errors``.
    """
    n = len(tokens)
    sizes = {"gold": len(gold), "pred": len(pred)}
    if confidences is not None:
        sizes["confidences"] = len(confidences)
    if sentence_ids is not None:
        sizes["sentence_ids"] = len(sentence_ids)
    for name, size in sizes.items():
        if size != n:
            raise ValueError(f"{n} token lists but {size} {name}")
    ids = [str(i) for i in range(n)] if sentence_ids is None else [str(s) for s in sentence_ids]

    errors: list[dict] = []
    pairs: list[tuple[str | None, str | None]] = []  # (gold type, pred type) of each mention
    n_gold = n_pred = correct = 0
    for i in range(n):
        words = list(tokens[i])
        if not len(gold[i]) == len(pred[i]) == len(words):
            raise ValueError(
                f"sentence {ids[i]}: {len(words)} tokens, {len(gold[i])} gold tags, "
                f"{len(pred[i])} predicted tags"
            )
        gold_spans = schemes.spans(gold[i])
        pred_spans = schemes.spans(pred[i])
        scores = None if confidences is None else [float(c) for c in confidences[i]]
        if scores is not None and len(scores) != len(pred_spans):
            raise ValueError(
                f"sentence {ids[i]}: {len(pred_spans)} predicted mentions but "
                f"{len(scores)} confidences"
            )
        n_gold += len(gold_spans)
        n_pred += len(pred_spans)
        found = []
        for gi, pi in match(gold_spans, pred_spans):
            g = None if gi is None else gold_spans[gi]
            p = None if pi is None else pred_spans[pi]
            pairs.append((None if g is None else g[2], None if p is None else p[2]))
            kind = kind_of(g, p)
            if kind is None:
                correct += 1
                continue
            error = {
                "kind": kind,
                "sentence": ids[i],
                "tokens": words,
                "gold": None if g is None else _mention(g, words),
                "pred": None if p is None else _mention(p, words),
            }
            if p is not None and scores is not None:
                error["pred"]["confidence"] = scores[pi]
            found.append(error)
        # In reading order, so a sentence's errors are listed as they occur in it.
        found.sort(key=lambda e: min(s["start"] for s in (e["gold"], e["pred"]) if s))
        errors += found

    types = sorted({t for pair in pairs for t in pair if t is not None})
    return {
        "sentences": n,
        "mentions": {"gold": n_gold, "pred": n_pred},
        "correct": correct,
        "types": types,
        "counts": _counts(errors),
        "confusion": _confusion(types, pairs),
        "frequent": _frequent(errors),
        "errors": errors,
    }


def _mention(span: Span, words: list[str]) -> dict:
    start, end, etype = span
    return {"start": start, "end": end, "type": etype, "text": " ".join(words[start:end])}


def _counts(errors: list[dict]) -> dict:
    counts: dict = {}
    for kind in KINDS:
        mine = [e for e in errors if e["kind"] == kind]
        entry: dict = {"total": len(mine)}
        for side in ("gold", "pred"):
            if (side == "gold" and kind != SPURIOUS) or (side == "pred" and kind != MISSED):
                entry[side] = dict(sorted(Counter(e[side]["type"] for e in mine).items()))
        counts[kind] = entry
    return counts


def _confusion(types: list[str], pairs: list[tuple[str | None, str | None]]) -> dict:
    rows = [*types, SPURIOUS]
    columns = [*types, MISSED]
    matrix = {row: dict.fromkeys(columns, 0) for row in rows}
    for g_type, p_type in pairs:
        matrix[g_type or SPURIOUS][p_type or MISSED] += 1
    return {"rows": rows, "columns": columns, "matrix": matrix}


def _frequent(errors: list[dict]) -> list[dict]:
    """Errors grouped by kind, texts and types: the same confusion made again and again
    (one surname always tagged ORG) is what a user can fix with data, so it leads."""
    groups = Counter(
        (
            e["kind"],
            *((e["gold"]["text"], e["gold"]["type"]) if e["gold"] else (None, None)),
            *((e["pred"]["text"], e["pred"]["type"]) if e["pred"] else (None, None)),
        )
        for e in errors
    )
    out = [
        {
            "kind": kind,
            "gold_text": g_text,
            "gold_type": g_type,
            "pred_text": p_text,
            "pred_type": p_type,
            "count": count,
            "label": _label(kind, g_text, g_type, p_text, p_type),
        }
        for (kind, g_text, g_type, p_text, p_type), count in groups.items()
    ]
    out.sort(key=lambda f: (-f["count"], KINDS.index(f["kind"]), f["label"]))
    return out


def _label(
    kind: str, g_text: str | None, g_type: str | None, p_text: str | None, p_type: str | None
) -> str:
    if kind == MISSED:
        return f'"{g_text}" missed {g_type}'
    if kind == SPURIOUS:
        return f'"{p_text}" spurious {p_type}'
    if kind == WRONG_TYPE:
        return f'"{g_text}" {g_type}→{p_type}'
    return f'"{g_text}" {g_type}→"{p_text}" {p_type}'


def format_errors(report: dict, top: int = 10) -> str:
    """Plain text for a terminal: counts per kind with their types, the type confusion
    matrix as an aligned table and the ``top`` most frequent errors."""
    mentions = report["mentions"]
    n_errors = sum(entry["total"] for entry in report["counts"].values())
    lines = [
        f"{mentions['gold']} gold mentions, {mentions['pred']} predicted, "
        f"{report['correct']} correct, {n_errors} errors",
        "",
        "Errors by kind",
    ]
    width = max(len(kind) for kind in KINDS)
    for kind in KINDS:
        entry = report["counts"][kind]
        lines.append(f"  {kind:<{width}} {entry['total']:>6}  {_breakdown(kind, entry)}".rstrip())

    confusion = report["confusion"]
    corner = "gold \\ predicted"
    header = [corner, *confusion["columns"]]
    table = [
        [row, *(str(confusion["matrix"][row][col]) for col in confusion["columns"])]
        for row in confusion["rows"]
    ]
    widths = [max(len(line[c]) for line in [header, *table]) for c in range(len(header))]
    lines += ["", "Confusion (rows: gold type, columns: predicted type)"]
    for line in [header, *table]:
        cells = [line[0].ljust(widths[0])]
        cells += [cell.rjust(w) for cell, w in zip(line[1:], widths[1:])]
        lines.append("  " + "  ".join(cells))

    frequent = report["frequent"][:top]
    if frequent:
        lines += ["", f"Most frequent errors (top {len(frequent)} of {len(report['frequent'])})"]
        lines += [f"  {f['label']} ×{f['count']}" for f in frequent]
    return "\n".join(lines)


def _breakdown(kind: str, entry: dict) -> str:
    """Per-type counts of a kind: one side where both sides have the same type."""

    def listed(by_type: dict) -> str:
        return ", ".join(f"{etype} {count}" for etype, count in by_type.items())

    if not entry["total"]:
        return ""
    if kind in (MISSED, WRONG_BOUNDARY):
        return listed(entry["gold"])
    if kind == SPURIOUS:
        return listed(entry["pred"])
    return f"gold {listed(entry['gold'])}; predicted {listed(entry['pred'])}"
