"""The HTML report: escaping, counts, the filters' markup, no network, writing it safely;
and in a real headless Chromium (Debian's, driven by playwright; skipped when either is
missing): a real model's report loads without errors and its filters hide and show rows."""

from __future__ import annotations

import base64
import os
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pytest

from tagger import schemes
from tagger.analysis import KINDS, MISSED, SPURIOUS, WRONG_TYPE, analyse
from tagger.errors import TaggerError
from tagger.evaluation import score
from tagger.report import CONTEXT, render_report, write_report

# Tokens a browser would take for markup if they were not escaped.
TOKENS = [
    ["<script>alert(1)</script>", "said", "AT&T", "bought", '"Big"', "Co's", "unit", "."],
    ["Angela", "Vogt", "of", "the", "Fed", "visited", "New", "York", "City", "on", "Monday"],
]
GOLD = [
    ["B-PER", "O", "B-ORG", "O", "B-ORG", "I-ORG", "O", "O"],
    ["B-PER", "I-PER", "O", "O", "B-ORG", "O", "B-LOC", "I-LOC", "I-LOC", "O", "O"],
]
PRED = [
    ["B-PER", "O", "B-LOC", "O", "B-ORG", "O", "O", "O"],
    ["B-ORG", "I-ORG", "O", "O", "O", "O", "B-LOC", "I-LOC", "O", "O", "B-DATE"],
]
CONFIDENCES = [[0.9, 0.625, 0.5], [0.75, 0.5, 0.25]]
TITLE = 'models/<x> on "data" & more'
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256))
CALIBRATION = {
    "bins": [
        {"low": b / 4, "high": (b + 1) / 4, "count": n, "precision": p, "confidence": c}
        for b, (n, p, c) in enumerate(
            [(0, None, None), (2, 0.0, 0.4), (3, 1 / 3, 0.6), (4, 0.75, 0.9)]
        )
    ],
    "ece": 0.1234,
    "temperature": 1.5,
}


def report_data(**changes) -> dict:
    analysis = analyse(TOKENS, GOLD, PRED, confidences=CONFIDENCES, sentence_ids=["s<1>", "s2"])
    data = {
        "title": TITLE,
        "scores": score(GOLD, PRED),
        "analysis": analysis,
        "calibration": CALIBRATION,
        "training_png": PNG,
    }
    return {**data, **changes}


class Page(HTMLParser):
    """The parts of a report the tests read, as the browser's parser sees them."""

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict]] = []
        self.rows: list[dict] = []  # error rows: their attributes and cells' text
        self.options: dict[str, list[tuple[str, str]]] = {}
        self.marks: list[str] = []  # text of every <mark>, label included
        self.heat: list[list[str]] = []  # the confusion table's cells, row by row
        self._stack: list[tuple[str, dict]] = []
        self._select = None
        self._in_rows = self._in_heat = False
        self._text: list[str] | None = None
        self._mark: list[str] | None = None
        self.feed(html)
        self.close()

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append((tag, attrs))
        if tag in ("meta", "img", "br", "input", "link"):
            return
        self._stack.append((tag, attrs))
        if tag == "select":
            self._select = attrs.get("id")
            self.options[self._select] = []
        elif tag == "option":
            self._text = []
            self._option = attrs.get("value")
        elif tag == "tbody" and attrs.get("id") == "error-rows":
            self._in_rows = True
        elif tag == "table" and "heat" in (attrs.get("class") or ""):
            self._in_heat = True
        elif tag == "tr" and self._in_rows:
            self.rows.append({**attrs, "cells": []})
        elif tag == "tr" and self._in_heat:
            self.heat.append([])
        elif tag in ("td", "th") and (self._in_rows or self._in_heat):
            self._text = []
        elif tag == "mark":
            self._mark = []

    def handle_endtag(self, tag):
        while self._stack:
            open_tag, _ = self._stack.pop()
            if open_tag == tag:
                break
        if tag == "option" and self._text is not None:
            self.options[self._select].append((self._option, "".join(self._text)))
            self._text = None
        elif tag in ("td", "th") and self._text is not None:
            text = "".join(self._text)
            if self._in_rows:
                self.rows[-1]["cells"].append(text)
            else:
                self.heat[-1].append(text)
            self._text = None
        elif tag == "tbody":
            self._in_rows = False
        elif tag == "table":
            self._in_heat = False
        elif tag == "mark" and self._mark is not None:
            self.marks.append("".join(self._mark))
            self._mark = None

    def handle_data(self, data):
        if self._text is not None:
            self._text.append(data)
        if self._mark is not None:
            self._mark.append(data)

    def find(self, tag: str, **attrs) -> list[dict]:
        return [
            a for t, a in self.tags if t == tag and all(a.get(k) == v for k, v in attrs.items())
        ]


# ----------------------------------------------------------------------------- markup


def test_text_from_the_data_is_escaped():
    html = render_report(report_data())
    assert html.count("<script") == 1  # the page's own
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "AT&amp;T" in html and "&quot;Big&quot;" in html
    assert "<title>models/&lt;x&gt; on &quot;data&quot; &amp; more</title>" in html
    page = Page(html)
    # The parser reads back exactly the data's text: tokens, marks, sentence ids.
    rows = page.rows
    assert rows[0]["cells"][2].startswith("<script>alert(1)</script> said AT&TORG bought")
    assert "AT&TORG" in page.marks  # gold: ORG; the mark's label follows its text
    assert '"Big" Co\'sORG' in page.marks
    assert "sentence s<1>" in rows[0]["cells"][1]


def test_error_rows_in_order_with_their_kinds_types_and_confidences():
    data = report_data()
    errors = data["analysis"]["errors"]
    page = Page(render_report(data))
    assert len(page.rows) == len(errors) == 6
    for row, error in zip(page.rows, errors):
        assert row["data-kind"] == error["kind"]
        assert row["data-gold"] == (error["gold"]["type"] if error["gold"] else "")
        assert row["data-pred"] == (error["pred"]["type"] if error["pred"] else "")
        number, kind, gold, pred, confidence = row["cells"]
        assert kind.startswith(error["kind"])
        if error["pred"]:
            assert confidence == f"{100 * error['pred']['confidence']:.1f}%"
            assert float(row["data-conf"]) == error["pred"]["confidence"]
        else:
            assert confidence == "–" and row["data-conf"] == ""
    assert [r["cells"][0] for r in page.rows] == ["1", "2", "3", "4", "5", "6"]
    # A missed mention: the gold side marked, the predicted side the plain sentence.
    missed = next(r for r in page.rows if r["data-kind"] == MISSED)
    assert "FedORG" in missed["cells"][2] and "Fed" in missed["cells"][3]
    assert "ORG" not in missed["cells"][3].replace("Fed", "")


def test_filters_markup_and_counts():
    data = report_data()
    html = render_report(data)
    page = Page(html)
    errors = data["analysis"]["errors"]
    kinds = page.options["kind-filter"]
    assert kinds[0] == ("", "all kinds (6)")
    counts = {k: sum(e["kind"] == k for e in errors) for k in KINDS}
    assert kinds[1:] == [(k, f"{k} ({counts[k]})") for k in KINDS]
    types = page.options["type-filter"]
    assert types == [
        ("", "all types"),
        ("DATE", "DATE (1)"),
        ("LOC", "LOC (2)"),
        ("ORG", "ORG (4)"),
        ("PER", "PER (1)"),
    ]
    assert [v for v, _ in page.options["sort-order"]] == ["corpus", "conf-desc", "conf-asc"]
    assert re.search(r'<b id="shown-count">6</b> of <span id="total-count">6</span>', html)
    assert page.find("p", id="no-errors")[0].get("hidden", "absent") is None  # hidden
    assert 'addEventListener("change", apply)' in html


def test_confusion_heat_map_holds_the_matrix():
    data = report_data()
    confusion = data["analysis"]["confusion"]
    page = Page(render_report(data))
    header, *body, totals = page.heat
    assert header[1:-1] == confusion["columns"] and confusion["columns"][-1] == MISSED
    assert [row[0] for row in body] == confusion["rows"] and confusion["rows"][-1] == SPURIOUS
    for row in body:
        cells = [int(c) if c else None for c in row[1:-1]]
        expected = [confusion["matrix"][row[0]][c] for c in confusion["columns"]]
        if row[0] == SPURIOUS:
            assert cells[-1] is None  # spurious x missed cannot happen: left blank
            cells[-1] = expected[-1]
        assert cells == expected
        assert int(row[-1]) == sum(expected)
    assert [int(c) for c in totals[1:-1]] == [
        sum(confusion["matrix"][r][c] for r in confusion["rows"]) for c in confusion["columns"]
    ]
    # Coloured by count: nonzero cells carry a background, zero ones none.
    tds = [a for t, a in Page(render_report(data)).tags if t == "td" and "title" in a]
    assert all(("style" in a) == (a.get("class") != "zero") for a in tds)
    assert any("rgba(220,38,38" in a["style"] for a in tds if "style" in a)  # off-diagonal


def test_scores_table():
    html = render_report(report_data())
    scores = score(GOLD, PRED)
    for etype, row in scores["per_type"].items():
        assert f"<tr><th>{etype}</th><td>{100 * row['precision']:.2f}</td>" in html
    assert f"<th>micro</th><td>{100 * scores['precision']:.2f}</td>" in html
    assert "No scores." in render_report(report_data(scores=None))


def test_no_external_resources():
    html = render_report(report_data())
    assert not re.search(r"""(?:src|href|action)\s*=\s*["']?\s*(?:[a-z]+:)?//""", html, re.I)
    assert "http://" not in html and "https://" not in html
    assert "<link" not in html and "@import" not in html and "url(" not in html
    page = Page(html)
    assert all(a["href"].startswith("#") for a in page.find("a"))
    assert [a["src"][:22] for a in page.find("img")] == ["data:image/png;base64,"]
    csp = page.find("meta", **{"http-equiv": "Content-Security-Policy"})[0]["content"]
    assert csp.startswith("default-src 'none'")


def test_training_curves_embedded_or_left_out():
    html = render_report(report_data())
    assert f"data:image/png;base64,{base64.b64encode(PNG).decode()}" in html
    assert 'id="training"' in html
    without = render_report(report_data(training_png=None))
    assert 'id="training"' not in without and "<img" not in without


def test_reliability_diagram():
    html = render_report(report_data())
    svg = html[html.index("<svg") : html.index("</svg>")]
    assert svg.count('class="bar"') == 3  # the empty bin has no bar
    assert svg.count('class="gap"') == 3 and svg.count('class="diag"') == 1
    assert "ECE 12.34 points · temperature 1.5 · 9 predicted entities" in html
    assert "75.0" in svg and "25–50%: 2 entities" in svg
    untempered = render_report(report_data(calibration={**CALIBRATION, "temperature": None}))
    assert "no temperature scaling" in untempered
    none = render_report(report_data(calibration=None))
    assert "<svg" not in none and "No calibration data" in none


def test_long_sentences_are_cut_around_the_error():
    words = [f"w{i}" for i in range(200)]
    gold = ["O"] * 200
    gold[100] = "B-PER"
    analysis = analyse([words], [gold], [["O"] * 200])
    page = Page(render_report({"title": "t", "scores": None, "analysis": analysis}))
    text = page.rows[0]["cells"][2]
    assert text.startswith("… w70 ") and text.endswith(f" w{100 + CONTEXT} …")
    assert f"w{99 - CONTEXT}" not in text.split() and "w100PER" in text


def test_a_report_without_errors():
    tags = [["B-PER", "O"]]
    data = {
        "title": "perfect",
        "scores": score(tags, tags),
        "analysis": analyse([["Al", "x"]], tags, tags),
    }
    html = render_report(data)
    page = Page(html)
    assert page.rows == []
    assert page.find("p", id="no-errors")[0].get("hidden", "absent") == "absent"  # shown
    assert '<b id="shown-count">0</b>' in html


def test_many_errors_render_as_plain_rows():
    sentences = 2000
    tokens = [["Mr", "Vogt", "of", "Acme", "in", "Paris", "."]] * sentences
    gold = [["O", "B-PER", "O", "B-ORG", "O", "B-LOC", "O"]] * sentences
    pred = [["B-PER", "I-PER", "O", "O", "O", "B-ORG", "O"]] * sentences
    analysis = analyse(tokens, gold, pred)
    html = render_report({"title": "big", "scores": score(gold, pred), "analysis": analysis})
    assert html.count("<tr data-kind=") == len(analysis["errors"]) == 3 * sentences
    assert len(html) < 1500 * len(analysis["errors"])


# ----------------------------------------------------------------------------- writing


def test_write_report_refuses_an_existing_file_unless_overwrite(tmp_path):
    out = tmp_path / "report.html"
    write_report(report_data(), out)
    first = out.read_text(encoding="utf-8")
    assert first == render_report(report_data())
    with pytest.raises(TaggerError, match="already exists"):
        write_report(report_data(title="second"), out)
    assert out.read_text(encoding="utf-8") == first
    write_report(report_data(title="second"), out, overwrite=True)
    assert "<title>second</title>" in out.read_text(encoding="utf-8")
    assert [p.name for p in tmp_path.iterdir()] == ["report.html"]  # no temporaries left
    with pytest.raises(TaggerError, match="does not exist"):
        write_report(report_data(), tmp_path / "missing" / "report.html")
    with pytest.raises(TaggerError, match="it is a folder"):
        write_report(report_data(), tmp_path)


# ----------------------------------------------------------------------------- browser


def rotated(tags: list[str]) -> list[str]:
    """Gold tags with each type renamed (PER->LOC->ORG->PER): a model that is right
    about the names is then wrong about every type."""
    turn = {"PER": "LOC", "LOC": "ORG", "ORG": "PER"}
    return [t if t == "O" else f"{t[:2]}{turn.get(t[2:], t[2:])}" for t in tags]


@pytest.fixture(scope="module")
def real_report(tiny_corpus, trained_model, tagger_model) -> dict:
    """A report of the tiny model's real predictions, made to err: test sentences as
    they are, lower-cased (missed names), with rotated gold types (wrong type) and with
    no gold mentions (spurious)."""
    from tagger.data import decoded_tags, load_data
    from tagger.evaluation import reliability

    test = load_data(str(tiny_corpus))["test"]
    tokens = [list(s) for s in test["tokens"]]
    gold = [schemes.to_iob2(tags) for tags in decoded_tags(test)]
    words = tokens + [[w.lower() for w in s] for s in tokens] + tokens + tokens[:5]
    truth = gold + gold + [rotated(g) for g in gold] + [["O"] * len(s) for s in tokens[:5]]
    pred = tagger_model.predict(words)
    found = tagger_model.predict_spans(words)
    confidences = [[e["score"] for e in s] for s in found]
    entities = [[(e["start"], e["end"], e["label"], e["score"]) for e in s] for s in found]
    plot = Path(trained_model) / "training.png"
    return {
        "title": f"{Path(trained_model).name} on the tiny corpus (test, perturbed)",
        "scores": score(truth, pred),
        "analysis": analyse(words, truth, pred, confidences=confidences),
        "calibration": {**reliability(truth, entities), "temperature": None},
        "training_png": plot.read_bytes() if plot.is_file() else None,
    }


def chromium_path() -> str | None:
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    return None


@pytest.fixture(scope="module")
def browser():
    try:
        from playwright import sync_api
    except ImportError as err:  # absent, or installed without what it needs
        pytest.skip(f"playwright is not installed (pip install playwright): {err}")
    executable = chromium_path()
    args = ["--no-sandbox"] if os.geteuid() == 0 else []
    with sync_api.sync_playwright() as p:
        try:
            # Debian's chromium; without one, a browser `playwright install` fetched.
            launched = p.chromium.launch(executable_path=executable, args=args)
        except Exception as err:  # noqa: BLE001 (any launch failure means: no browser here)
            where = executable or "no chromium on PATH, nor a playwright-installed one"
            pytest.skip(f"cannot start chromium ({where}): {str(err).splitlines()[0]}")
        yield launched
        launched.close()


def test_report_in_a_real_browser(browser, real_report, tmp_path):
    errors = real_report["analysis"]["errors"]
    kinds = {e["kind"] for e in errors}
    assert {WRONG_TYPE, MISSED, SPURIOUS} <= kinds, kinds
    out = tmp_path / "report.html"
    write_report(real_report, out)

    page = browser.new_page(viewport={"width": 1366, "height": 768})
    problems: list[str] = []
    page.on(
        "console",
        lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None,
    )
    page.on("pageerror", lambda err: problems.append(f"page error: {err}"))
    page.on("requestfailed", lambda r: problems.append(f"request failed: {r.url}"))
    page.goto(out.as_uri())
    page.wait_for_load_state("load")

    def visible() -> int:
        n = page.locator("#error-rows tr:visible").count()
        assert page.inner_text("#shown-count") == f"{n:,}"
        return n

    def involves(error: dict, etype: str) -> bool:
        return any(error[s] and error[s]["type"] == etype for s in ("gold", "pred"))

    assert visible() == len(errors) and page.inner_text("#total-count") == f"{len(errors):,}"
    assert page.is_hidden("#no-errors")

    # By kind: only that kind's rows remain.
    page.select_option("#kind-filter", MISSED)
    missed = [e for e in errors if e["kind"] == MISSED]
    assert 0 < visible() == len(missed) < len(errors)
    shown_kinds = page.eval_on_selector_all(
        "#error-rows tr:not([hidden])", "rows => rows.map(r => r.dataset.kind)"
    )
    assert set(shown_kinds) == {MISSED}

    # By type as well: the errors of that kind with that gold or predicted type.
    etype = min(
        {e["gold"]["type"] for e in missed}, key=lambda t: sum(involves(e, t) for e in missed)
    )
    page.select_option("#type-filter", etype)
    both = [e for e in missed if involves(e, etype)]
    assert 0 < visible() == len(both) <= len(missed)

    # The type alone, all kinds.
    page.select_option("#kind-filter", "")
    of_type = [e for e in errors if involves(e, etype)]
    assert visible() == len(of_type) < len(errors)
    assert len({e["kind"] for e in of_type}) > 1

    # A kind with no error of this type: nothing shown, and the page says so.
    absent = [k for k in KINDS if not any(e["kind"] == k for e in of_type)]
    if absent:
        page.select_option("#kind-filter", absent[0])
        assert visible() == 0 and page.is_visible("#no-errors")
        page.select_option("#kind-filter", "")

    # Highest confidence first; rows without one (missed) last.
    page.select_option("#type-filter", "")
    page.select_option("#sort-order", "conf-desc")
    confs = page.eval_on_selector_all("#error-rows tr", "rows => rows.map(r => r.dataset.conf)")
    scored = [float(c) for c in confs if c]
    assert scored == sorted(scored, reverse=True) and all(confs[: len(scored)])
    page.select_option("#sort-order", "corpus")
    assert visible() == len(errors)

    if real_report["training_png"]:
        assert page.eval_on_selector("#training img", "img => img.naturalWidth") > 0
    assert page.locator("svg.reliability rect.bar").count() == sum(
        1 for b in real_report["calibration"]["bins"] if b["count"]
    )
    page.select_option("#kind-filter", WRONG_TYPE)  # a screenshot with the filter at work
    shot = tmp_path / "report.png"
    page.screenshot(path=str(shot), full_page=True)
    page.close()
    assert shot.stat().st_size > 0 and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert problems == []
