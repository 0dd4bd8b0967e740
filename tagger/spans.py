"""Span annotations and spaCy Docs: the one internal form of annotated text.

Annotation tools export raw text plus ``[start, end)`` character spans; training needs
tokens with IOB2 tags. Every reader goes through a spaCy ``Doc`` whose ``doc.ents`` are
the spans on token boundaries: span files (doccano, Label Studio, Prodigy, ``tagger
predict``) here, DocBin files in ``tagger.docbin``, CoNLL columns in ``tagger.convert``;
``doc_sentences`` turns any of them into ``Sentence``s, and ``tagger convert`` writes
any of them out.

Raw text is tokenized exactly as ``tagger predict`` tokenizes it (a blank spaCy pipeline
of the language plus a sentencizer), so a model sees the same tokens in training and in
use, and becomes one ``Sentence`` per spaCy sentence. A record that carries its own
tokens (Prodigy's ``tokens``) is ONE sentence of those tokens: the tool's tokens and
segmentation are used as they are, so CoNLL -> JSONL -> CoNLL gives the same sentences.
A span whose edges fall inside a token is never moved or dropped silently:
``misaligned`` decides, and by default it is an error.

A sentence boundary that falls inside an entity is ignored, so an entity is never cut in
two. Whitespace tokens are left out, as ``tagger predict`` leaves them out. Each record
is a document (``Sentence.doc``, kept whole by ``--dev-fraction``): its place among the
file's records, or the integer under ``meta.doc`` where ``tagger convert`` wrote the
CoNLL document a sentence came from. What reading moved, dropped, skipped or chose is
added to ``notes``.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tagger import schemes
from tagger.data import Sentence, read_text
from tagger.errors import TaggerError

if TYPE_CHECKING:
    from spacy.language import Language
    from spacy.tokens import Doc
    from spacy.tokens import Span as SpacySpan

FORMATS = ("doccano", "label-studio", "prodigy", "tagger")
MISALIGNED = ("error", "expand", "contract", "drop")
MISALIGNED_TEXT = "does not line up with token boundaries"
SHOWN = 20  # bad records and spans listed one per line before the rest are counted
MISALIGNED_HINT = "--misaligned expand|contract|drop chooses what to do instead"
MOVED = {"expand": "expanded to token boundaries", "contract": "contracted to token boundaries"}
# Prodigy answers that mean "do not train on this example" (``prodigy data-to-spacy``
# likewise trains on accepted examples only).
SKIPPED_ANSWERS = ("reject", "ignore")
# What a skipped record is, by format, for the notes ({s}: the plural's "s").
SKIPPED = {
    "prodigy": "rejected/ignored Prodigy answer{s} skipped",
    "label-studio": "task{s} without an annotation (or only cancelled ones) skipped",
}

Span = tuple[int, int, str]


@dataclass
class Annotated:
    """A Doc with its entities set, where it came from and the document it belongs to."""

    doc: Doc
    origin: str  # "file:line", "file task N", "file doc N": what errors and sentences name
    number: int | None  # the document within its file (Sentence.doc); None: the file has none


@dataclass
class Record:
    """One annotated text as read: where it is, its text, spans and (Prodigy) tokens."""

    where: str  # "file:line" (JSON lines) or "file task N" (a JSON array)
    text: str
    spans: list[Span]
    tokens: list[dict] | None = None  # Prodigy's own tokens: used as they are
    # Each span's own copy of its text, where the export has one: offsets that do not
    # select it were counted differently (Label Studio counts UTF-16 units after emoji).
    claims: list[str | None] = field(default_factory=list)
    document: int | None = None  # meta.doc, where tagger convert wrote one
    chose: str | None = None  # which of several annotations was taken (Label Studio)


def read_spans(
    path: str | Path,
    lang: str = "en",
    fmt: str | None = None,
    misaligned: str = "error",
    encoding: str = "utf-8",
    notes: list[str] | None = None,
) -> list[Sentence]:
    """Read a span annotation file into IOB2 sentences (see ``read_span_docs``)."""
    items = read_span_docs(path, lang, fmt, misaligned, encoding, notes)
    return [sentence for item in items for sentence in doc_sentences(item)]


def read_span_docs(
    path: str | Path,
    lang: str = "en",
    fmt: str | None = None,
    misaligned: str = "error",
    encoding: str = "utf-8",
    notes: list[str] | None = None,
) -> list[Annotated]:
    """Read a span annotation file into Docs with ``doc.ents`` set, one per record.

    ``fmt``: one of ``FORMATS``, or ``None`` to detect it from the first record.
    ``misaligned``: ``"error"`` (all such spans are collected, then one error names the
    first and counts the rest), ``"expand"``/``"contract"`` (spaCy's alignment modes)
    or ``"drop"``. Lines saying what reading changed are appended to ``notes``.
    """
    if fmt is not None and fmt not in FORMATS:
        raise TaggerError(f"unknown span format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if misaligned not in MISALIGNED:
        raise TaggerError(f"misaligned must be one of {', '.join(MISALIGNED)}, not {misaligned!r}")
    name = str(path)
    nlp = pipeline(lang)
    problems: list[str] = []
    skipped: Counter[str] = Counter()
    chosen: list[Record] = []
    moved = 0
    items = []
    records = _records(read_text(path, encoding), name, fmt, skipped, problems)
    for index, record in enumerate(records):
        doc = _record_doc(record, nlp)
        ents, n_moved = _align(record, doc, misaligned, problems)
        doc.ents = ents
        moved += n_moved
        chosen += [record] if record.chose else []
        number = index if record.document is None else record.document
        items.append(Annotated(doc, record.where, number))
    if problems:
        raise _span_errors(name, problems)
    if not any(not token.is_space for item in items for token in item.doc):
        raise TaggerError(f"{name}: no annotated records found")
    if notes is not None:
        notes += [f"{name}: {n} " + SKIPPED[f].format(s=_s(n)) for f, n in skipped.items()]
        if chosen:
            first = f"{chosen[0].where.removeprefix(name).lstrip()}: {chosen[0].chose}"
            more = " ..." if len(chosen) > 1 else ""
            notes.append(
                f"{name}: {len(chosen)} task{_s(len(chosen))}: took the last non-cancelled "
                f"annotation ({first}{more})"
            )
        if moved:
            done = MOVED.get(misaligned, "dropped")
            notes.append(f"{name}: {moved} misaligned span{_s(moved)} {done}")
    return items


def _span_errors(name: str, problems: list[str]) -> TaggerError:
    """One line per bad record or span (the first ``SHOWN``), then the count and what to
    do."""
    shown = problems[:SHOWN]
    if len(problems) > SHOWN:
        shown.append(f"... and {len(problems) - SHOWN} more")
    misaligned = sum(MISALIGNED_TEXT in p for p in problems)
    if len(problems) == 1:
        return TaggerError(f"{problems[0]}; {MISALIGNED_HINT}" if misaligned else problems[0])
    hint = f" ({misaligned} misaligned: {MISALIGNED_HINT})" if misaligned else ""
    total = f"{name}: {len(problems)} problems, nothing read{hint}"
    return TaggerError("\n".join([*shown, total]))


def _s(n: int) -> str:
    return "" if n == 1 else "s"


@lru_cache(maxsize=4)
def pipeline(lang: str) -> Language:
    """Blank ``lang`` + sentencizer: the tokenization ``Tagger.nlp`` uses for prediction
    (and the vocab that Docs of every format are built on)."""
    import spacy

    try:
        nlp = spacy.blank(lang)
    except Exception as err:  # ImportError / spaCy's E002 for an unknown code
        raise TaggerError(f"spaCy has no language {lang!r}: {err}") from None
    nlp.add_pipe("sentencizer")
    nlp.max_length = 10**8  # tokenizer and sentencizer only
    return nlp


# --------------------------------------------------------------------------- sentences


def doc_sentences(item: Annotated) -> list[Sentence]:
    """One IOB2 ``Sentence`` per sentence of the Doc, or one for a Doc without sentence
    boundaries; a boundary inside an entity is ignored and whitespace tokens left out."""
    doc, ents = item.doc, item.doc.ents  # doc.ents builds new Spans at every call
    owner = {i: n for n, ent in enumerate(ents) for i in range(ent.start, ent.end)}
    inside = {i for ent in ents for i in range(ent.start + 1, ent.end)}
    bounds = [sent.start for sent in doc.sents] if doc.has_annotation("SENT_START") else [0]
    starts = [i for i in bounds if i not in inside]
    sentences: list[Sentence] = []
    for s, e in zip(starts, [*starts[1:], len(doc)]):
        kept = [i for i in range(s, e) if not doc[i].is_space]
        if not kept:
            continue
        tags, previous = [], None
        for i in kept:
            n = owner.get(i)
            prefix = "B" if n != previous else "I"
            tags.append("O" if n is None else f"{prefix}-{ents[n].label_}")
            previous = n
        origin = item.origin if not sentences else f"{item.origin} sentence {len(sentences) + 1}"
        sentences.append(Sentence([doc[i].text for i in kept], tags, origin, doc=item.number))
    return sentences


# --------------------------------------------------------------------------- records


def _records(
    text: str, name: str, fmt: str | None, skipped: Counter[str], problems: list[str]
) -> Iterator[Record]:
    """Records of a JSON array (a Label Studio export) or of JSON lines (the others);
    ``skipped`` counts, by format, the records that are not training data; span problems
    go to ``problems``."""
    if text.lstrip().startswith("["):
        items = _json(text, name, whole_file=True)
        if not isinstance(items, list):
            raise TaggerError(f"{name}: expected a JSON array of tasks")
        wheres = (_task_where(name, item, i) for i, item in enumerate(items))
        yield from _parse_all(zip(wheres, items), fmt, skipped, problems)
        return
    lines = text.split("\n")
    pairs = (
        (f"{name}:{n}", _json(line, f"{name}:{n}", whole_file=False))
        for n, line in enumerate(lines, start=1)
        if line.strip()
    )
    yield from _parse_all(pairs, fmt, skipped, problems)


def _parse_all(
    pairs: Iterator[tuple[str, Any]],
    fmt: str | None,
    skipped: Counter[str],
    problems: list[str],
) -> Iterator[Record]:
    """Parse each ``(where, object)``; the format is the forced one or the first record's
    (one file comes from one tool: a record that does not fit it is a mistake to report).
    Records with bad spans are left out and their lines added to ``problems``."""
    for where, obj in pairs:
        if not isinstance(obj, dict):
            raise TaggerError(f"{where}: expected a JSON object, found {type(obj).__name__}")
        try:
            detected = detect_format(obj, where)  # no label key at all: "unknown shape"
            fmt = fmt or detected
            record = PARSERS[fmt](obj, where)
        except TaggerError as err:  # a bad record: listed with the others, file refused
            problems.append(str(err))
            continue
        if record is None:
            skipped[fmt] += 1
            continue
        found = _check_spans(record)
        problems += found
        if not found:
            yield record


def _json(text: str, where: str, whole_file: bool) -> Any:
    """Parse JSON; a syntax error names the file's line (``where`` holds it for a JSON line)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        at = f"{where}:{err.lineno}" if whole_file else where
        raise TaggerError(f"{at}: invalid JSON: {err.msg} (column {err.colno})") from None


def _task_where(name: str, item: Any, index: int) -> str:
    """A Label Studio task is named by its ``id``, else by its place in the array."""
    task_id = item.get("id") if isinstance(item, dict) else None
    return f"{name} task {task_id}" if task_id is not None else f"{name} task #{index + 1}"


def detect_format(obj: dict, where: str) -> str:
    """Which tool wrote this record, from the keys that hold its labels."""
    if "annotations" in obj and "data" in obj:
        return "label-studio"
    if "spans" in obj:
        return "prodigy"
    if "label" in obj:
        return "doccano"
    if "entities" in obj:
        items = obj["entities"]
        first = items[0] if isinstance(items, list) and items else {}
        return "doccano" if isinstance(first, dict) and "start_offset" in first else "tagger"
    raise TaggerError(
        f"{where}: unknown record shape: no 'label', 'entities', 'spans' or 'annotations' "
        f"key (keys: {', '.join(map(str, obj)) or 'none'})"
    )


def _text(obj: dict, where: str, key: str = "text") -> str:
    """The record's text. An empty one is allowed (``tagger predict`` writes one for a
    blank input line) and yields no sentence; a missing one is a mistake."""
    text = obj.get("text")
    if not isinstance(text, str):
        raise TaggerError(f"{where}: record has no text (no string under {key!r})")
    return text


def _need(obj: dict, key: str, fmt: str, where: str) -> Any:
    """``obj[key]``, which must be a list: a forced format that does not fit is one line."""
    value = obj.get(key)
    if not isinstance(value, list):
        raise TaggerError(f"{where}: not a {fmt} record: no list under {key!r}")
    return value


def _span(start: Any, end: Any, label: Any, where: str) -> Span:
    """Check one span's types: integer offsets and a label that can become a tag."""
    if not all(isinstance(x, int) and not isinstance(x, bool) for x in (start, end)):
        raise TaggerError(f"{where}: span offsets must be integers, found {start!r}, {end!r}")
    if not isinstance(label, str):
        raise TaggerError(f"{where}: span label must be a string, found {label!r}")
    check_label(label, where)
    return start, end, label


def check_label(label: str, where: str) -> None:
    """An entity label must make a tag (``B-LABEL``) that a CoNLL column can hold."""
    try:
        schemes.parse_tag(f"B-{label}")
    except ValueError as err:
        raise TaggerError(f"{where}: span label {label!r} cannot be a tag: {err}") from None
    if any(c.isspace() for c in label):
        raise TaggerError(f"{where}: span label {label!r} contains whitespace")


def _fields(item: dict, keys: tuple[str, str, str], fmt: str, where: str) -> Span:
    """``item``'s start, end and label under ``keys``; a missing key names the format."""
    for key in keys:
        if key not in item:
            raise TaggerError(f"{where}: not a {fmt} record: a span has no {key!r} key")
    return _span(*(item[k] for k in keys), where)


def _parse_doccano(obj: dict, where: str) -> Record:
    """``label: [[start, end, TYPE]]``, or newer exports' ``entities`` with ``*_offset``."""
    if "label" in obj:
        items = _need(obj, "label", "doccano", where)
        if any(not isinstance(x, list) or len(x) != 3 for x in items):
            raise TaggerError(f"{where}: doccano 'label' must hold [start, end, label] triples")
        spans = [_span(*x, where) for x in items]
    else:
        items = _entity_dicts(obj, "doccano", where)
        keys = ("start_offset", "end_offset", "label")
        spans = [_fields(e, keys, "doccano", where) for e in items]
    return Record(where, _text(obj, where), spans)


def _entity_dicts(obj: dict, fmt: str, where: str) -> list[dict]:
    items = _need(obj, "entities", fmt, where)
    if any(not isinstance(e, dict) for e in items):
        raise TaggerError(f"{where}: each entity must be a JSON object")
    return items


def _parse_tagger(obj: dict, where: str) -> Record:
    """``tagger predict --format jsonl``: ``entities`` with ``start``, ``end``, ``label``."""
    items = _entity_dicts(obj, "tagger", where)
    spans = [_fields(e, ("start", "end", "label"), "tagger", where) for e in items]
    claims = [e.get("text") for e in items]
    return Record(where, _text(obj, where), spans, claims=claims)


def _parse_prodigy(obj: dict, where: str) -> Record | None:
    """``spans`` with ``start``/``end``/``label``, and Prodigy's ``tokens`` when present;
    ``meta.doc``, where ``tagger convert`` wrote one, is the record's document."""
    if obj.get("answer") in SKIPPED_ANSWERS:
        return None
    items = _need(obj, "spans", "prodigy", where)
    if any(not isinstance(s, dict) for s in items):
        raise TaggerError(f"{where}: each span must be a JSON object")
    spans = [_fields(s, ("start", "end", "label"), "prodigy", where) for s in items]
    tokens = obj.get("tokens")
    if tokens is not None and (
        not isinstance(tokens, list) or any(not isinstance(t, dict) for t in tokens)
    ):
        raise TaggerError(f"{where}: 'tokens' must be a list of objects")
    meta = obj.get("meta")
    number = meta.get("doc") if isinstance(meta, dict) else None
    if not isinstance(number, int) or isinstance(number, bool):
        number = None
    return Record(where, _text(obj, where), spans, tokens or None, document=number)


def _parse_label_studio(obj: dict, where: str) -> Record | None:
    """``data.text`` and the last annotation not cancelled; an unannotated task is skipped."""
    data = obj.get("data")
    annotations = _need(obj, "annotations", "label-studio", where)
    if not isinstance(data, dict):
        raise TaggerError(f"{where}: not a label-studio task: no 'data' object")
    kept = [
        i
        for i, a in enumerate(annotations)
        if isinstance(a, dict) and a.get("was_cancelled") is not True
    ]
    if not kept:
        return None
    spans, claims = [], []
    for item in _need(annotations[kept[-1]], "result", "label-studio", where):
        value = item.get("value") if isinstance(item, dict) else None
        if not isinstance(value, dict) or "labels" not in value:
            continue  # choices, relations, ratings: not spans
        labels = value["labels"]
        if not isinstance(labels, list) or len(labels) != 1:
            raise TaggerError(f"{where}: a span needs exactly one label, found {labels!r}")
        spans.append(_span(value.get("start"), value.get("end"), labels[0], where))
        claims.append(value.get("text"))
    record = Record(where, _text(data, where, "data.text"), spans, claims=claims)
    if len(annotations) > 1:
        record.chose = f"annotation {kept[-1] + 1} of {len(annotations)}"
    return record


PARSERS = {
    "doccano": _parse_doccano,
    "label-studio": _parse_label_studio,
    "prodigy": _parse_prodigy,
    "tagger": _parse_tagger,
}


def _show(text: str, start: int, end: int) -> str:
    return f"[{start}, {end}) {text[start:end]!r}"


def _check_spans(record: Record) -> list[str]:
    """Empty, out-of-range, overlapping and mis-counted spans of a record: one line each
    (a record with any of them is not used; the whole file is then refused)."""
    text, where = record.text, record.where
    found = []
    for start, end, label in record.spans:
        if start >= end:
            found.append(f"{where}: empty span [{start}, {end}) {label} (start >= end)")
        elif start < 0 or end > len(text):
            found.append(
                f"{where}: span [{start}, {end}) {label} is out of range "
                f"(the text has {len(text)} characters)"
            )
    if found:
        return found
    for (start, end, label), claim in zip(record.spans, record.claims):
        if isinstance(claim, str) and claim != text[start:end]:
            found.append(
                f"{where}: span [{start}, {end}) {label} is {claim!r} in the export but "
                f"{text[start:end]!r} in the text (offsets counted in UTF-16 units?)"
            )
    ordered = sorted(record.spans)
    for (s1, e1, l1), (s2, e2, l2) in zip(ordered, ordered[1:]):
        if s2 < e1:
            found.append(
                f"{where}: spans {_show(text, s1, e1)} {l1} and {_show(text, s2, e2)} {l2} "
                f"overlap (nested or overlapping spans cannot become IOB2 tags)"
            )
    return found


# --------------------------------------------------------------------------- tokens


def _record_doc(record: Record, nlp: Language) -> Doc:
    """The record's Doc: its text tokenized and split into sentences, or Prodigy's tokens
    kept as they are (one sentence: the tool's segmentation, no sentencizer)."""
    if record.tokens is None:
        return nlp(record.text)
    from spacy.tokens import Doc

    words = [str(t.get("text", "")) for t in record.tokens]
    spaces = [bool(t.get("ws", True)) for t in record.tokens]
    if any(not w for w in words):
        raise TaggerError(f"{record.where}: a token has no text")
    doc = Doc(nlp.vocab, words=words, spaces=spaces)
    for token, given in zip(doc, record.tokens):
        if (token.idx, token.idx + len(token)) != (given.get("start"), given.get("end")) or (
            record.text[token.idx : token.idx + len(token)] != token.text
        ):
            raise TaggerError(
                f"{record.where}: the record's tokens do not spell its text: token "
                f"{token.i} {token.text!r} does not match [{given.get('start')}, "
                f"{given.get('end')})"
            )
    return doc


def _nearest(doc: Doc, start: int, end: int) -> str:
    """The token-aligned span closest to ``[start, end)``, to show in the error."""
    for mode in ("contract", "expand"):
        span = doc.char_span(start, end, alignment_mode=mode)
        if span is not None and len(span):
            return _show(doc.text, span.start_char, span.end_char)
    return "none"


def _align(
    record: Record, doc: Doc, misaligned: str, problems: list[str]
) -> tuple[list[SpacySpan], int]:
    """The record's spans on ``doc``'s tokens, misaligned ones handled as ``misaligned``
    says, and how many of those were moved or dropped (for the notes)."""
    ents, moved = [], 0
    for start, end, label in record.spans:
        span = doc.char_span(start, end, label, alignment_mode="strict")
        if span is None:
            if misaligned == "error":
                problems.append(
                    f"{record.where}: span {_show(doc.text, start, end)} {MISALIGNED_TEXT} "
                    f"(nearest: {_nearest(doc, start, end)})"
                )
                continue
            moved += 1
            if misaligned == "drop":
                continue
            span = doc.char_span(start, end, label, alignment_mode=misaligned)
        if span is None or all(t.is_space for t in span):
            raise TaggerError(
                f"{record.where}: span {_show(doc.text, start, end)} {label} holds no whole "
                f"token (--misaligned {misaligned} cannot keep it; drop it or fix it)"
            )
        ents.append(span)
    ents.sort(key=lambda span: (span.start, span.end))
    for a, b in zip(ents, ents[1:]):
        if b.start < a.end:
            raise TaggerError(
                f"{record.where}: spans {_show(doc.text, a.start_char, a.end_char)} and "
                f"{_show(doc.text, b.start_char, b.end_char)} overlap once moved to token "
                f"boundaries (--misaligned {misaligned})"
            )
    return ents, moved
