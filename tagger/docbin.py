"""spaCy DocBin (``.spacy``) files: what ``spacy convert`` writes and ``spacy train`` reads.

A doc keeps its own tokens and its ``doc.ents`` become IOB2 tags through the same
``tagger.spans.doc_sentences`` as every other format: one sentence per sentence where the
doc has sentence boundaries, else one per doc; each doc is a document (``Sentence.doc``).
A doc without tokens, or without any entity annotation (spaCy's "missing", as in a
DocBin made for another component), is skipped and counted in the notes. DocBin bytes
are zlib-compressed msgpack: reading one never unpickles anything.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from tagger.data import READ_ERRORS, Sentence, open_binary, read_error
from tagger.errors import TaggerError
from tagger.spans import Annotated, check_label, doc_sentences, pipeline

if TYPE_CHECKING:
    from spacy.tokens import Doc


def read_docbin(
    path: str | Path, lang: str = "en", notes: list[str] | None = None
) -> list[Sentence]:
    """Read a ``.spacy`` file into IOB2 sentences (see ``read_docs``)."""
    return [sentence for item in read_docs(path, lang, notes) for sentence in doc_sentences(item)]


def read_docs(
    path: str | Path, lang: str = "en", notes: list[str] | None = None
) -> list[Annotated]:
    """The docs of a ``.spacy`` file, on the vocab of a blank ``lang`` pipeline, named
    ``FILE doc N`` (N from 1). What reading skipped is appended to ``notes``."""
    from spacy.tokens import DocBin

    name = str(path)
    raw = _read_bytes(path)
    if not raw:
        raise TaggerError(f"{name}: is empty, expected a spaCy DocBin (.spacy) file")
    try:
        doc_bin = DocBin().from_bytes(raw)
    except Exception as err:  # zlib, msgpack and spaCy's own errors alike
        raise TaggerError(
            f"{name}: not a spaCy DocBin (.spacy) file, or a damaged one ({_reason(err)})"
        ) from None
    docs = doc_bin.get_docs(pipeline(lang).vocab)
    items: list[Annotated] = []
    skipped: Counter[str] = Counter()
    unannotated_tokens = 0
    for n in range(1, len(doc_bin) + 1):
        where = f"{name} doc {n}"
        try:
            doc = next(docs)
        except Exception as err:
            raise TaggerError(f"{where}: damaged ({_reason(err)})") from None
        if not len(doc):
            skipped["without tokens"] += 1
            continue
        if not doc.has_annotation("ENT_IOB"):
            skipped["without entity annotation"] += 1
            continue
        for ent in doc.ents:
            check_label(ent.label_, where)
        unannotated_tokens += sum(token.ent_iob == 0 for token in doc)
        items.append(Annotated(doc, where, n - 1))
    if not items:
        why = ", ".join(f"{n} {what}" for what, n in skipped.items()) or "it holds no docs"
        raise TaggerError(f"{name}: no docs with entity annotation found ({why})")
    if notes is not None:
        notes += [f"{name}: {n} doc{'s' * (n != 1)} {what} skipped" for what, n in skipped.items()]
        if unannotated_tokens:
            notes.append(
                f"{name}: {unannotated_tokens} token{'s' * (unannotated_tokens != 1)} without "
                f"entity annotation (spaCy's missing value) read as O"
            )
    return items


def docbin_bytes(docs: Iterable[Doc]) -> bytes:
    """A DocBin of ``docs`` as ``spacy train`` reads it (without ``user_data``)."""
    from spacy.tokens import DocBin

    return DocBin(store_user_data=False, docs=docs).to_bytes()


def _read_bytes(path: str | Path) -> bytes:
    """The file's bytes; missing, a folder or unreadable is one line naming it."""
    if Path(path).is_dir():
        raise TaggerError(f"{path}: is a folder, expected a spaCy DocBin (.spacy) file")
    with open_binary(path) as f:
        try:
            return f.read()
        except READ_ERRORS as err:
            raise read_error(str(path), err) from None


def _reason(err: BaseException) -> str:
    """The first sentence of the error underneath (zlib's, under spaCy's "Error loading
    DocBin data"), for one short line."""
    while err.__context__ is not None:
        err = err.__context__
    text = str(err).strip().strip('"').split("\n")[0]  # a KeyError's str is quoted
    return text.split(". ")[0].rstrip(".") or type(err).__name__
