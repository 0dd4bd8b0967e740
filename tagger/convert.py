"""``tagger convert``: annotations between CoNLL columns, span JSONL and spaCy DocBin.

Every input becomes spaCy Docs with ``doc.ents`` through the functions the training
readers use (``tagger.spans``, ``tagger.docbin``), so a converted file trains as its
source does. CoNLL input is one Doc per sentence, tokens joined by single spaces, its
mentions read from tags of any scheme with conlleval's boundaries. Outputs:

- ``conll``: ``TOKEN TAG`` lines in IOB2, a blank line after each sentence, whitespace
  tokens left out. Where some document holds more than one sentence, a ``-DOCSTART-``
  line opens each document (a ``-DOCSTART-`` block, a JSON record, a DocBin doc).
- ``jsonl``: one Prodigy-style record per Doc: ``text``, ``tokens``, ``spans``
  (``token_end`` inclusive, as Prodigy writes it) and ``meta.doc``, the document. Read
  back, its tokens are kept as they are and the record is one sentence.
- ``spacy``: a DocBin, as ``spacy train`` reads it.

So CoNLL -> JSONL -> CoNLL gives back the same sentences and documents, and CoNLL ->
DocBin -> CoNLL the same sentences (a DocBin without user data holds no document
number: each doc is one). The output is checked before anything is read (never the
input; an existing file only with ``overwrite``) and written atomically afterwards, so
a failed read writes nothing.
"""

from __future__ import annotations

import json
from itertools import groupby
from pathlib import Path

from tagger import schemes
from tagger.data import DOCSTART, Sentence, file_format, format_conll, read_conll
from tagger.docbin import docbin_bytes, read_docs
from tagger.errors import TaggerError
from tagger.io import check_output_file, write_atomic
from tagger.spans import Annotated, doc_sentences, pipeline, read_span_docs

TARGETS = ("conll", "jsonl", "spacy")


def convert(
    source: str | Path,
    output: str | Path,
    to: str,
    *,
    data_format: str = "auto",
    lang: str = "en",
    misaligned: str = "error",
    tag_column: int = -1,
    encoding: str = "utf-8",
    overwrite: bool = False,
    notes: list[str] | None = None,
) -> dict[str, int]:
    """Convert ``source`` into ``output`` in the format ``to`` (one of ``TARGETS``).

    Reading options are ``tagger.data.read_file``'s; what reading changed is appended to
    ``notes``. Returns what was written, counted as tagger reads it back: records (JSONL)
    or docs, sentences, tokens and mentions.
    """
    if to not in TARGETS:
        raise TaggerError(f"unknown output format {to!r}; choose one of {', '.join(TARGETS)}")
    if to == "spacy" and str(output) == "-":
        raise TaggerError("a DocBin is binary: give --to spacy an output file, not '-'")
    check_output_file(output, [source], flag="OUTPUT", overwrite=overwrite)
    items = read_annotated(
        source,
        data_format,
        lang=lang,
        misaligned=misaligned,
        tag_column=tag_column,
        encoding=encoding,
        notes=notes,
    )
    per_doc = [doc_sentences(item) for item in items]
    sentences = [sentence for group in per_doc for sentence in group]
    if to == "conll":
        chunks = [conll_text(sentences)]
    elif to == "jsonl":
        chunks = (json.dumps(prodigy_record(item), ensure_ascii=False) + "\n" for item in items)
    else:
        chunks = [docbin_bytes(item.doc for item in items)]
    write_atomic(chunks, output)
    return {
        "records" if to == "jsonl" else "docs": len(items),
        # a JSONL record carries its tokens, so it is read back as one sentence
        "sentences": sum(map(bool, per_doc)) if to == "jsonl" else len(sentences),
        "tokens": sum(len(s.tokens) for s in sentences),
        "mentions": sum(len(schemes.spans(s.tags)) for s in sentences),
    }


def read_annotated(
    source: str | Path,
    data_format: str = "auto",
    *,
    lang: str = "en",
    misaligned: str = "error",
    tag_column: int = -1,
    encoding: str = "utf-8",
    notes: list[str] | None = None,
) -> list[Annotated]:
    """Any data file as Docs with entities, read as ``tagger.data.read_file`` reads it."""
    fmt = file_format(source, data_format)
    if fmt == "spacy":
        return read_docs(source, lang, notes)
    if fmt != "conll":
        span_format = None if fmt == "spans" else fmt
        return read_span_docs(source, lang, span_format, misaligned, encoding, notes)
    from spacy.tokens import Doc, Span

    vocab = pipeline(lang).vocab
    items = []
    for sentence in read_conll(source, tag_column, encoding):
        words = sentence.tokens
        doc = Doc(vocab, words=words, spaces=[True] * (len(words) - 1) + [False])
        doc.ents = [Span(doc, s, e, label) for s, e, label in schemes.spans(sentence.tags)]
        items.append(Annotated(doc, sentence.origin, sentence.doc))
    return items


def conll_text(sentences: list[Sentence]) -> str:
    """Two-column IOB2 CoNLL text; ``-DOCSTART-`` lines only where documents say more
    than sentences do (a document of one sentence each is the same as none)."""
    for sentence in sentences:
        for i, token in enumerate(sentence.tokens):
            if token == DOCSTART or any(c.isspace() for c in token):
                why = "a document mark" if token == DOCSTART else "whitespace inside"
                raise TaggerError(
                    f"{sentence.where(i)}: token {token!r} cannot be written as a CoNLL "
                    f"column ({why})"
                )
    numbers = [sentence.doc for sentence in sentences]
    if not any(a is not None and a == b for a, b in zip(numbers, numbers[1:])):
        return format_conll((s.tokens, s.tags) for s in sentences)
    return "".join(
        f"{DOCSTART} O\n\n" + format_conll((s.tokens, s.tags) for s in document)
        for _, document in groupby(sentences, key=lambda s: s.doc)
    )


def prodigy_record(item: Annotated) -> dict:
    """The Doc as a Prodigy ``ner_manual`` task, which ``tagger.spans`` reads back."""
    doc = item.doc
    record: dict = {
        "text": doc.text,
        "tokens": [
            {
                "text": t.text,
                "start": t.idx,
                "end": t.idx + len(t),
                "id": t.i,
                "ws": bool(t.whitespace_),
            }
            for t in doc
        ],
        "spans": [
            {
                "start": ent.start_char,
                "end": ent.end_char,
                "label": ent.label_,
                "token_start": ent.start,
                "token_end": ent.end - 1,
            }
            for ent in doc.ents
        ],
    }
    if item.number is not None:
        record["meta"] = {"doc": item.number}
    return record
