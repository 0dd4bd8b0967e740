"""``tagger report``: one self-contained HTML page to read a model's evaluation in a browser.

The page holds the scores per type, the entity-type confusion matrix as a heat map, the
reliability diagram of the entity confidences (inline SVG), the training curves (the
model folder's ``training.png`` as a ``data:`` URI) and every error in its sentence,
gold and predicted mentions marked side by side (displaCy-style ``<mark>``), with plain
JavaScript filters by error kind and entity type. Everything is inline: the file opens
from a disk, a mail attachment or an air-gapped machine, and a Content-Security-Policy
forbids it any network access. Every piece of text from the data is escaped.

The page is built as a list of strings joined once, so the ~800 errors of a CoNLL-2003
test set (or many thousands) render in a fraction of a second.
"""

from __future__ import annotations

import base64
from html import escape
from pathlib import Path

from tagger.analysis import KINDS, MISSED, SPURIOUS

# Sentences longer than this many tokens either side of an error are shown cut, with "…".
CONTEXT = 30
FREQUENT = 20  # most frequent errors listed

# displaCy's colours for the usual types; other types take the palette in turn.
TYPE_COLOURS = {
    "PER": "#aa9cfc",
    "PERSON": "#aa9cfc",
    "ORG": "#7aecec",
    "LOC": "#ff9561",
    "GPE": "#feca74",
    "MISC": "#bfeeb7",
    "NORP": "#c887fb",
    "FAC": "#9cc9cc",
    "PRODUCT": "#bfeeb7",
    "EVENT": "#ffeb80",
    "DATE": "#bfe1d9",
    "TIME": "#bfe1d9",
    "Chemical": "#7aecec",
    "Disease": "#ff9561",
}
PALETTE = ["#ffeb80", "#f0d0ff", "#9cc9cc", "#ff8197", "#c887fb", "#bfe1d9", "#feca74", "#e4e7d2"]
KIND_COLOURS = ["#fde68a", "#ddd6fe", "#fbcfe8", "#e2e8f0", "#fecaca"]  # in KINDS' order


def render_report(data: dict) -> str:
    """One HTML document (text) for ``data``: ``title``; ``scores`` (a
    ``tagger.evaluation.score`` result, or None); ``analysis`` (a
    ``tagger.analysis.analyse`` result); ``calibration`` (``bins`` of ``low``, ``high``,
    ``count``, ``precision``, ``confidence``; ``ece``; ``temperature``, or None); and
    ``training_png`` (the PNG bytes of the training curves, or None)."""
    analysis = data["analysis"]
    scores = data.get("scores")
    calibration = data.get("calibration")
    png = data.get("training_png")
    title = str(data.get("title") or "tagger report")
    types = _types(analysis, scores)
    index = {etype: i for i, etype in enumerate(types)}

    out: list[str] = [_head(title, types)]
    out.append(f"<header><h1>{escape(title)}</h1>{_summary(analysis, scores)}{_nav(data)}</header>")
    out.append('<div class="grid">')
    out.append(_scores_section(scores))
    out.append(_confusion_section(analysis["confusion"]))
    out.append(_kinds_section(analysis))
    out.append(_calibration_section(calibration))
    if png:
        out.append(_training_section(png))
    out.append("</div>")
    _errors_section(analysis, index, out)
    out.append(f"<script>{_SCRIPT}</script></body></html>\n")
    return "".join(out)


def write_report(data: dict, path: str | Path, overwrite: bool = False, *, flag="--output"):
    """Render ``data`` and write it to ``path`` atomically (``-`` or None: standard
    output). An existing file is refused before any work unless ``overwrite``, as are a
    folder and a missing parent folder (``tagger.io.check_output_file``; ``flag`` names
    the option in its messages)."""
    from tagger.io import check_output_file, write_atomic

    check_output_file(path, flag=flag, overwrite=overwrite)
    write_atomic([render_report(data)], path)


# ----------------------------------------------------------------------------- pieces


def _types(analysis: dict, scores: dict | None) -> list[str]:
    """Every entity type the page names, in a stable order (for their colours)."""
    found = set(analysis.get("types") or ())
    if scores:
        found.update(scores.get("per_type") or ())
    for error in analysis["errors"]:
        found.update(error[side]["type"] for side in ("gold", "pred") if error[side])
    return sorted(found)


def _pct(value: float | None, digits: int = 1) -> str:
    return "–" if value is None else f"{100 * value:.{digits}f}"


def _head(title: str, types: list[str]) -> str:
    colours, spare = [], 0
    for i, etype in enumerate(types):
        colour = TYPE_COLOURS.get(etype)
        if colour is None:
            colour, spare = PALETTE[spare % len(PALETTE)], spare + 1
        colours.append(f".t{i}{{--c:{colour}}}")
    kinds = "".join(f".k{i}{{background:{c}}}" for i, c in enumerate(KIND_COLOURS))
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; '
        "img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'\">"
        f'<meta name="generator" content="tagger report"><title>{escape(title)}</title>'
        f"<style>{_CSS}{''.join(colours)}{kinds}</style></head><body>"
    )


def _summary(analysis: dict, scores: dict | None) -> str:
    mentions = analysis["mentions"]
    n_errors = len(analysis["errors"])
    items = []
    if scores:
        items += [
            ("F1", _pct(scores.get("f1"), 2)),
            ("precision", _pct(scores.get("precision"), 2)),
            ("recall", _pct(scores.get("recall"), 2)),
        ]
    items += [
        ("sentences", f"{analysis['sentences']:,}"),
        ("gold mentions", f"{mentions['gold']:,}"),
        ("predicted", f"{mentions['pred']:,}"),
        ("correct", f"{analysis['correct']:,}"),
        ("errors", f"{n_errors:,}"),
    ]
    cells = "".join(
        f'<div class="stat"><b>{value}</b><span>{escape(name)}</span></div>'
        for name, value in items
    )
    return f'<div class="stats">{cells}</div>'


def _nav(data: dict) -> str:
    links = [("scores", "Scores"), ("confusion", "Confusion"), ("kinds", "Error kinds")]
    links.append(("calibration", "Reliability"))
    if data.get("training_png"):
        links.append(("training", "Training"))
    links.append(("errors", "Errors"))
    return "<nav>" + " · ".join(f'<a href="#{a}">{name}</a>' for a, name in links) + "</nav>"


def _scores_section(scores: dict | None) -> str:
    if not scores:
        return '<section id="scores"><h2>Scores</h2><p class="muted">No scores.</p></section>'
    rows = []
    for etype, row in (scores.get("per_type") or {}).items():
        rows.append(
            f"<tr><th>{escape(etype)}</th><td>{_pct(row['precision'], 2)}</td>"
            f"<td>{_pct(row['recall'], 2)}</td>"
            f'<td class="f1" style="--f:{100 * row["f1"]:.1f}%">{_pct(row["f1"], 2)}</td>'
            f"<td>{row['support']:,}</td></tr>"
        )
    rows.append(
        f'<tr class="total"><th>micro</th><td>{_pct(scores.get("precision"), 2)}</td>'
        f"<td>{_pct(scores.get('recall'), 2)}</td><td>{_pct(scores.get('f1'), 2)}</td>"
        f"<td>{scores.get('support', 0):,}</td></tr>"
    )
    if "macro_f1" in scores:
        rows.append(
            f'<tr class="total"><th>macro</th><td></td><td></td>'
            f"<td>{_pct(scores['macro_f1'], 2)}</td><td></td></tr>"
        )
    note = ""
    if scores.get("unknown_types"):
        note = (
            '<p class="muted">The model does not know '
            f"{escape(', '.join(scores['unknown_types']))}: those mentions count as missed.</p>"
        )
    mode = f" ({escape(str(scores['mode']))} mode)" if scores.get("mode") else ""
    return (
        f'<section id="scores"><h2>Scores per type</h2>'
        '<table class="num"><thead><tr><th>type</th><th>precision %</th><th>recall %</th>'
        f"<th>F1 %</th><th>support</th></tr></thead><tbody>{''.join(rows)}</tbody></table>"
        f'<p class="caption">Entity-level scores (seqeval{mode}).</p>{note}</section>'
    )


def _confusion_section(confusion: dict) -> str:
    rows, columns, matrix = confusion["rows"], confusion["columns"], confusion["matrix"]
    diagonal = [matrix[r][c] for r in rows for c in columns if r == c]
    other = [matrix[r][c] for r in rows for c in columns if r != c]
    top_diag, top_other = max(diagonal, default=0) or 1, max(other, default=0) or 1
    head = "".join(f'<th scope="col">{escape(c)}</th>' for c in columns)
    body = []
    for r in rows:
        cells = []
        for c in columns:
            n = matrix[r][c]
            if r == SPURIOUS and c == MISSED:
                cells.append('<td class="void"></td>')
                continue
            tip = escape(f"gold {r}, predicted {c}: {n}", quote=True)
            if n == 0:
                cells.append(f'<td class="zero" title="{tip}">0</td>')
                continue
            if r == c:
                rgb, share = "37,99,235", n / top_diag
            else:
                rgb, share = "220,38,38", n / top_other
            alpha = 0.12 + 0.78 * share
            ink = ' class="dark"' if alpha > 0.55 else ""
            cells.append(
                f'<td{ink} style="background:rgba({rgb},{alpha:.2f})" title="{tip}">{n:,}</td>'
            )
        total = sum(matrix[r].values())
        body.append(
            f'<tr><th scope="row">{escape(r)}</th>{"".join(cells)}'
            f'<td class="sum">{total:,}</td></tr>'
        )
    sums = "".join(f'<td class="sum">{sum(matrix[r][c] for r in rows):,}</td>' for c in columns)
    body.append(f'<tr><th scope="row" class="sum">total</th>{sums}<td class="sum"></td></tr>')
    return (
        '<section id="confusion"><h2>Confusion between entity types</h2>'
        '<div class="scroll"><table class="heat"><thead><tr>'
        f'<th class="corner">gold ↓ predicted →</th>{head}<th class="sum">total</th></tr>'
        f"</thead><tbody>{''.join(body)}</tbody></table></div>"
        '<p class="caption">Mentions by gold type (rows) and predicted type (columns), '
        "paired one-to-one; a pair counts under its types whatever its boundaries, so the "
        "diagonal (blue) holds exact matches and boundary errors. Off the diagonal (red): "
        "wrong types, spurious predictions (last row) and missed mentions (last column). "
        "Each colour is scaled to its own largest cell.</p></section>"
    )


def _kinds_section(analysis: dict) -> str:
    counts = analysis["counts"]
    n_errors = sum(entry["total"] for entry in counts.values()) or 1
    rows = []
    for i, kind in enumerate(KINDS):
        entry = counts.get(kind, {"total": 0})
        side = "pred" if kind == SPURIOUS else "gold"
        by_type = ", ".join(f"{escape(t)} {n}" for t, n in (entry.get(side) or {}).items())
        rows.append(
            f'<tr><th><span class="kind k{i}">{escape(kind)}</span></th>'
            f"<td>{entry['total']:,}</td><td>{100 * entry['total'] / n_errors:.1f}</td>"
            f'<td class="left">{by_type}</td></tr>'
        )
    frequent = analysis.get("frequent") or []
    items = "".join(
        f'<li><span class="count">×{f["count"]}</span> {escape(f["label"])}</li>'
        for f in frequent[:FREQUENT]
    )
    listed = (
        f"<h3>Most frequent errors (top {min(FREQUENT, len(frequent))} of {len(frequent):,})</h3>"
        f'<ol class="frequent">{items}</ol>'
        if frequent
        else ""
    )
    return (
        '<section id="kinds"><h2>Errors by kind</h2><table class="num"><thead><tr>'
        '<th>kind</th><th>errors</th><th>%</th><th class="left">by type</th></tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table>"
        '<p class="caption">By gold type; spurious by predicted type.</p>'
        f"{listed}</section>"
    )


def _calibration_section(calibration: dict | None) -> str:
    if not calibration or not calibration.get("bins"):
        return (
            '<section id="calibration"><h2>Reliability of the confidences</h2>'
            '<p class="muted">No calibration data for this report.</p></section>'
        )
    bins = calibration["bins"]
    temperature = calibration.get("temperature")
    parts = [f"ECE {100 * calibration['ece']:.2f} points"]
    parts.append(
        "no temperature scaling" if temperature is None else f"temperature {temperature:.3g}"
    )
    n = sum(b["count"] for b in bins)
    parts.append(f"{n:,} predicted entities")
    high = calibration.get("high_confidence") or {}
    if high.get("precision") is not None:
        parts.append(
            f"confidence ≥ {high['threshold']:g}: precision {100 * high['precision']:.1f}% "
            f"on {100 * high['share']:.1f}% of them"
        )
    rows = "".join(
        f"<tr><td>{_pct(b['low'], 0)}–{_pct(b['high'], 0)}%</td><td>{b['count']:,}</td>"
        f"<td>{_pct(b['confidence'])}</td><td>{_pct(b['precision'])}</td></tr>"
        for b in bins
    )
    return (
        '<section id="calibration"><h2>Reliability of the confidences</h2>'
        f"<figure>{_reliability_svg(bins)}<figcaption>{escape(' · '.join(parts))}. "
        "Bars: the share of the predicted entities in each confidence bin that are exactly "
        "right; a calibrated model's bars meet the diagonal. Red outline: the gap to the "
        "bin's mean confidence.</figcaption></figure>"
        '<details><summary>Bins</summary><table class="num"><thead><tr><th>confidence</th>'
        "<th>entities</th><th>mean conf. %</th><th>precision %</th></tr></thead>"
        f"<tbody>{rows}</tbody></table></details></section>"
    )


def _reliability_svg(bins: list[dict]) -> str:
    width, height, left, right, top, bottom = 400, 340, 46, 12, 10, 42
    plot_w, plot_h = width - left - right, height - top - bottom

    def x(v: float) -> float:
        return left + v * plot_w

    def y(v: float) -> float:
        return top + (1 - v) * plot_h

    out = [
        f'<svg class="reliability" viewBox="0 0 {width} {height}" width="{width}" '
        f'height="{height}" role="img" aria-label="reliability diagram">'
    ]
    for i in range(6):
        v = i / 5
        out.append(
            f'<line class="grid" x1="{x(0):.1f}" x2="{x(1):.1f}" y1="{y(v):.1f}" y2="{y(v):.1f}"/>'
            f'<text x="{left - 6}" y="{y(v) + 4:.1f}" text-anchor="end">{v:.1f}</text>'
            f'<text x="{x(v):.1f}" y="{y(0) + 16:.1f}" text-anchor="middle">{v:.1f}</text>'
        )
    for b in bins:
        if not b["count"] or b["precision"] is None:
            continue
        x0, x1 = x(b["low"]) + 1, x(b["high"]) - 1
        tip = escape(
            f"{_pct(b['low'], 0)}–{_pct(b['high'], 0)}%: {b['count']:,} entities, "
            f"mean confidence {_pct(b['confidence'])}%, precision {_pct(b['precision'])}%"
        )
        out.append(
            f'<g><title>{tip}</title><rect class="bar" x="{x0:.1f}" y="{y(b["precision"]):.1f}" '
            f'width="{x1 - x0:.1f}" height="{y(0) - y(b["precision"]):.1f}"/>'
        )
        if b["confidence"] is not None:
            lo, hi = sorted((b["precision"], b["confidence"]))
            out.append(
                f'<rect class="gap" x="{x0:.1f}" y="{y(hi):.1f}" width="{x1 - x0:.1f}" '
                f'height="{y(lo) - y(hi):.1f}"/>'
            )
        out.append("</g>")
    out.append(
        f'<line class="diag" x1="{x(0):.1f}" y1="{y(0):.1f}" x2="{x(1):.1f}" y2="{y(1):.1f}"/>'
        f'<rect class="frame" x="{x(0):.1f}" y="{y(1):.1f}" width="{plot_w}" height="{plot_h}"/>'
        f'<text x="{x(0.5):.1f}" y="{height - 6}" text-anchor="middle">confidence</text>'
        f'<text transform="translate(12 {y(0.5):.1f}) rotate(-90)" text-anchor="middle">'
        "precision</text></svg>"
    )
    return "".join(out)


def _training_section(png: bytes) -> str:
    encoded = base64.b64encode(bytes(png)).decode("ascii")
    return (
        '<section id="training"><h2>Training curves</h2>'
        f'<img src="data:image/png;base64,{encoded}" alt="training curves: loss and dev F1 '
        'per epoch"><p class="caption">The model folder\'s training.png.</p></section>'
    )


def _errors_section(analysis: dict, index: dict[str, int], out: list[str]) -> None:
    errors = analysis["errors"]
    kind_counts = {k: 0 for k in KINDS}
    type_counts: dict[str, int] = {}
    for error in errors:
        kind_counts[error["kind"]] = kind_counts.get(error["kind"], 0) + 1
        for etype in {error[s]["type"] for s in ("gold", "pred") if error[s]}:
            type_counts[etype] = type_counts.get(etype, 0) + 1
    kind_options = "".join(
        f'<option value="{escape(k, quote=True)}">{escape(k)} ({n:,})</option>'
        for k, n in kind_counts.items()
    )
    type_options = "".join(
        f'<option value="{escape(t, quote=True)}">{escape(t)} ({type_counts[t]:,})</option>'
        for t in sorted(type_counts)
    )
    total = len(errors)
    out.append(
        '<section id="errors" class="wide"><h2>Every error in its sentence</h2>'
        '<form class="filters" id="filters" autocomplete="off">'
        '<label>Kind <select id="kind-filter" name="kind">'
        f'<option value="">all kinds ({total:,})</option>{kind_options}</select></label>'
        '<label>Entity type <select id="type-filter" name="type">'
        f'<option value="">all types</option>{type_options}</select></label>'
        '<label>Order <select id="sort-order" name="order">'
        '<option value="corpus">corpus order</option>'
        '<option value="conf-desc">confidence, highest first</option>'
        '<option value="conf-asc">confidence, lowest first</option></select></label>'
        f'<span class="shown"><b id="shown-count">{total:,}</b> of '
        f'<span id="total-count">{total:,}</span> errors shown</span></form>'
        '<p class="caption">An entity type matches an error when it is its gold or its '
        "predicted type. Confidence: the probability of exactly the predicted span with "
        "its label.</p>"
        '<table class="errors" id="error-table"><thead><tr><th>#</th><th>kind</th>'
        '<th>gold</th><th>predicted</th><th>confidence</th></tr></thead><tbody id="error-rows">'
    )
    kind_index = {k: i for i, k in enumerate(KINDS)}
    for n, error in enumerate(errors, 1):
        gold, pred = error["gold"], error["pred"]
        words = [escape(str(t)) for t in error["tokens"]]
        spans = [s for s in (gold, pred) if s]
        lo = max(0, min(s["start"] for s in spans) - CONTEXT) if spans else 0
        hi = min(len(words), max(s["end"] for s in spans) + CONTEXT) if spans else len(words)
        conf = pred.get("confidence") if pred else None
        kind = error["kind"]
        out.append(
            f'<tr data-kind="{escape(kind, quote=True)}" '
            f'data-gold="{escape(gold["type"], quote=True) if gold else ""}" '
            f'data-pred="{escape(pred["type"], quote=True) if pred else ""}" '
            f'data-conf="{"" if conf is None else f"{conf:.6f}"}">'
            f'<td class="n">{n}</td><td><span class="kind k{kind_index.get(kind, 5)}">'
            f'{escape(kind)}</span><div class="sid">sentence {escape(str(error["sentence"]))}'
            f'</div></td><td class="sent">{_marked(words, gold, lo, hi, index)}</td>'
            f'<td class="sent">{_marked(words, pred, lo, hi, index)}</td>'
            f'<td class="conf">{"–" if conf is None else f"{100 * conf:.1f}%"}</td></tr>'
        )
    out.append(
        '</tbody></table><p id="no-errors" class="muted"'
        f"{' hidden' if total else ''}>No errors match the filters.</p></section>"
    )


def _marked(words: list[str], mention: dict | None, lo: int, hi: int, index: dict) -> str:
    """The (escaped) words ``lo:hi`` with ``mention`` marked; dimmed without one."""
    before = "… " if lo > 0 else ""
    after = " …" if hi < len(words) else ""
    if mention is None:
        return f'<span class="none">{before}{" ".join(words[lo:hi])}{after}</span>'
    start, end, etype = mention["start"], mention["end"], mention["type"]
    colour = index.get(etype, 0)
    mark = (
        f'<mark class="ent t{colour}">{" ".join(words[start:end])}'
        f'<span class="lbl">{escape(etype)}</span></mark>'
    )
    return "".join(
        (
            before,
            " ".join(words[lo:start]),
            " " if start > lo else "",
            mark,
            " " if end < hi else "",
            " ".join(words[end:hi]),
            after,
        )
    )


_CSS = """
:root{--ink:#1f2937;--muted:#6b7280;--line:#e5e7eb;--bg:#f9fafb;--accent:#2563eb}
*{box-sizing:border-box}
[hidden]{display:none!important}
body{margin:0 auto;max-width:1400px;padding:1rem 1.5rem 3rem;color:var(--ink);background:#fff;
font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif}
h1{font-size:1.35rem;margin:.2rem 0 .6rem;word-break:break-word}
h2{font-size:1.08rem;margin:0 0 .6rem}
h3{font-size:.95rem;margin:1rem 0 .4rem}
a{color:var(--accent)}
nav{margin:.6rem 0 0;color:var(--muted)}
.stats{display:flex;flex-wrap:wrap;gap:.5rem}
.stat{border:1px solid var(--line);border-radius:8px;padding:.35rem .8rem;background:var(--bg);
min-width:6.5rem}
.stat b{display:block;font-size:1.15rem;font-variant-numeric:tabular-nums}
.stat span{color:var(--muted);font-size:.8rem}
.grid{display:grid;grid-template-columns:repeat(auto-fit,minmax(440px,1fr));gap:1.2rem;
margin-top:1.2rem}
section{border:1px solid var(--line);border-radius:10px;padding:1rem;min-width:0}
section.wide{margin-top:1.2rem}
.caption,figcaption{color:var(--muted);font-size:.82rem;margin:.5rem 0 0}
.muted{color:var(--muted)}
figure{margin:0}
table{border-collapse:collapse}
th,td{padding:.28rem .5rem;border-bottom:1px solid var(--line)}
thead th{font-weight:600;background:var(--bg);position:sticky;top:0;z-index:1}
table.num td{text-align:right;font-variant-numeric:tabular-nums}
table.num th{text-align:left}
table.num .left{text-align:left}
tr.total th,tr.total td{font-weight:600;background:var(--bg)}
td.f1{background:linear-gradient(90deg,#bfdbfe var(--f),transparent var(--f))}
.scroll{overflow-x:auto}
table.heat td{text-align:center;min-width:3.2rem;font-variant-numeric:tabular-nums;
border:1px solid #fff}
table.heat th{text-align:left;white-space:nowrap}
table.heat thead th{text-align:center}
table.heat td.zero{color:#cbd5e1}
table.heat td.dark{color:#fff;font-weight:600}
table.heat td.void{background:repeating-linear-gradient(45deg,#f3f4f6 0 4px,#fff 4px 8px)}
table.heat .sum{color:var(--muted);background:var(--bg)}
th.corner{font-weight:400;color:var(--muted);font-size:.8rem}
ol.frequent{margin:0;padding-left:1.6rem;columns:2 16rem;column-gap:1.5rem}
ol.frequent li{break-inside:avoid;margin-bottom:.15rem}
.count{color:var(--muted);font-variant-numeric:tabular-nums}
svg.reliability{max-width:100%;height:auto;font-size:11px;fill:var(--muted)}
svg .grid{stroke:var(--line)}
svg .frame{fill:none;stroke:#9ca3af}
svg .diag{stroke:#374151;stroke-dasharray:4 3}
svg .bar{fill:#60a5fa}
svg .gap{fill:rgba(220,38,38,.1);stroke:#dc2626;stroke-width:1.2}
details{margin-top:.6rem}
summary{cursor:pointer;color:var(--accent)}
#training img{max-width:100%;height:auto;display:block}
.filters{display:flex;flex-wrap:wrap;align-items:center;gap:.6rem 1.2rem;padding:.6rem;
background:var(--bg);border-radius:8px;position:sticky;top:0;z-index:2}
.filters select{font:inherit;padding:.15rem .3rem;margin-left:.3rem}
.shown{margin-left:auto;color:var(--muted)}
.shown b{color:var(--ink)}
table.errors{width:100%;margin-top:.6rem;table-layout:fixed}
table.errors thead th{top:3.1rem;text-align:left}
table.errors th:nth-child(1){width:3.2rem}
table.errors th:nth-child(2){width:10.5rem}
table.errors th:nth-child(5){width:6.2rem}
table.errors td{vertical-align:top}
td.n,td.conf{text-align:right;font-variant-numeric:tabular-nums;color:var(--muted)}
td.conf{color:var(--ink)}
.sid{color:var(--muted);font-size:.78rem;margin-top:.2rem;word-break:break-all}
.kind{display:inline-block;border-radius:999px;padding:0 .5rem;font-size:.8rem;
white-space:nowrap;background:#e5e7eb}
td.sent{line-height:2.1;word-wrap:break-word}
.none{color:#9ca3af}
mark.ent{background:var(--c,#ddd);color:inherit;padding:.12em .35em;border-radius:.35em;
line-height:1;box-decoration-break:clone;-webkit-box-decoration-break:clone}
mark.ent .lbl{font-size:.66em;font-weight:700;text-transform:uppercase;margin-left:.35em;
vertical-align:middle;letter-spacing:.02em}
@media (max-width:900px){.grid{grid-template-columns:1fr}
table.errors th:nth-child(2){width:7.5rem}}
"""

# Plain JavaScript: hide the rows the filters exclude, count the rest, reorder on demand.
_SCRIPT = """
(function () {
  "use strict";
  var body = document.getElementById("error-rows");
  if (!body) { return; }
  var rows = Array.prototype.slice.call(body.rows);
  var kind = document.getElementById("kind-filter");
  var type = document.getElementById("type-filter");
  var order = document.getElementById("sort-order");
  var shown = document.getElementById("shown-count");
  var none = document.getElementById("no-errors");
  function apply() {
    var k = kind.value, t = type.value, n = 0;
    for (var i = 0; i < rows.length; i++) {
      var d = rows[i].dataset;
      var keep = (!k || d.kind === k) && (!t || d.gold === t || d.pred === t);
      rows[i].hidden = !keep;
      if (keep) { n++; }
    }
    shown.textContent = n.toLocaleString("en");
    none.hidden = n > 0;
  }
  function conf(row) {
    return row.dataset.conf === "" ? null : parseFloat(row.dataset.conf);
  }
  function reorder() {
    var how = order.value, sorted = rows.slice();
    if (how !== "corpus") {
      var sign = how === "conf-desc" ? -1 : 1;
      sorted.sort(function (a, b) {
        var x = conf(a), y = conf(b);
        if (x === null || y === null) { return (x === null) - (y === null); }
        return sign * (x - y);
      });
    }
    var frag = document.createDocumentFragment();
    for (var i = 0; i < sorted.length; i++) { frag.appendChild(sorted[i]); }
    body.appendChild(frag);
  }
  kind.addEventListener("change", apply);
  type.addEventListener("change", apply);
  order.addEventListener("change", reorder);
  apply();
  reorder();
})();
"""
