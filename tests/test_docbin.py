"""spaCy DocBin (.spacy) files read as IOB2 sentences, built with spaCy's own API."""

from __future__ import annotations

import os
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
import spacy
import srsly
from spacy.tokens import Doc, DocBin, Span

from tagger import data, schemes
from tagger.docbin import docbin_bytes, read_docbin, read_docs
from tagger.errors import TaggerError

NLP = spacy.blank("en")


def make_doc(words, ents=(), sent_starts=None, spaces=None) -> Doc:
    """A Doc with ``ents`` given as ``(start, end, label)`` token offsets."""
    doc = Doc(NLP.vocab, words=words, spaces=spaces, sent_starts=sent_starts)
    doc.ents = [Span(doc, s, e, label) for s, e, label in ents]
    return doc


def write_docbin(path: Path, docs, **kwargs) -> Path:
    path.write_bytes(DocBin(docs=docs, **kwargs).to_bytes())
    return path


def pairs(sentences) -> list[tuple[list[str], list[str]]]:
    return [(s.tokens, s.tags) for s in sentences]


def error_line(path, **kwargs) -> str:
    with pytest.raises(TaggerError) as info:
        read_docbin(path, **kwargs)
    assert "\n" not in str(info.value)
    return str(info.value)


EU = ["EU", "rejects", "German", "call", "."]
EU_ENTS = [(0, 1, "ORG"), (2, 3, "MISC")]
EU_TAGS = ["B-ORG", "O", "B-MISC", "O", "O"]


def test_docs_become_sentences_with_their_own_tokens(tmp_path):
    two = make_doc(
        ["Peter", "Blackburn", "spoke", ".", "He", "left", "."],
        [(0, 2, "PER")],
        sent_starts=[True, False, False, False, True, False, False],
    )
    path = write_docbin(tmp_path / "a.spacy", [make_doc(EU, EU_ENTS), two])
    sentences = read_docbin(path)
    assert pairs(sentences) == [
        (EU, EU_TAGS),
        (["Peter", "Blackburn", "spoke", "."], ["B-PER", "I-PER", "O", "O"]),
        (["He", "left", "."], ["O", "O", "O"]),
    ]
    assert [s.origin for s in sentences] == [
        f"{path} doc 1",
        f"{path} doc 2",
        f"{path} doc 2 sentence 2",
    ]
    assert [s.doc for s in sentences] == [0, 1, 1]


def test_doc_without_sentence_boundaries_is_one_sentence(tmp_path):
    doc = make_doc(["Hi", ".", "Oslo", "!"], [(2, 3, "LOC")])
    assert not doc.has_annotation("SENT_START")
    path = write_docbin(tmp_path / "a.spacy", [doc])
    assert pairs(read_docbin(path)) == [(["Hi", ".", "Oslo", "!"], ["O", "O", "B-LOC", "O"])]


def test_boundary_inside_an_entity_and_whitespace_tokens(tmp_path):
    # Whitespace tokens are left out as prediction leaves them out; a sentence boundary
    # inside an entity is ignored, so the entity is never cut in two.
    doc = make_doc(
        ["We", "met", "Yahoo", "!", "Inc", "\n", "staff"],
        [(2, 5, "ORG")],
        sent_starts=[True, False, False, False, True, False, True],
        spaces=[True, True, False, True, False, False, False],
    )
    path = write_docbin(tmp_path / "a.spacy", [doc])
    assert pairs(read_docbin(path)) == [
        (["We", "met", "Yahoo", "!", "Inc"], ["O", "O", "B-ORG", "I-ORG", "I-ORG"]),
        (["staff"], ["O"]),
    ]


def test_adjacent_entities_of_one_type_stay_two(tmp_path):
    doc = make_doc(["Paris", "Berlin", "Oslo"], [(0, 1, "LOC"), (1, 3, "LOC")])
    path = write_docbin(tmp_path / "a.spacy", [doc])
    assert pairs(read_docbin(path)) == [(["Paris", "Berlin", "Oslo"], ["B-LOC", "B-LOC", "I-LOC"])]


def test_docbin_bytes_round_trip(tmp_path):
    docs = [make_doc(EU, EU_ENTS), make_doc(["Oslo"], [(0, 1, "LOC")])]
    path = tmp_path / "a.spacy"
    path.write_bytes(docbin_bytes(docs))
    items = read_docs(path)
    assert [[(e.start, e.end, e.label_) for e in item.doc.ents] for item in items] == [
        EU_ENTS,
        [(0, 1, "LOC")],
    ]
    assert [(item.origin, item.number) for item in items] == [
        (f"{path} doc 1", 0),
        (f"{path} doc 2", 1),
    ]
    # No user data is stored: spacy train reads the file as it is.
    assert DocBin().from_bytes(path.read_bytes()).store_user_data is False


def test_skipped_docs_and_missing_values_are_noted(tmp_path):
    unannotated = Doc(NLP.vocab, words=["No", "entities", "set"])  # e.g. a textcat corpus
    partial = Doc(NLP.vocab, words=["Oslo", "is", "cold"])
    partial.set_ents([Span(partial, 0, 1, "LOC")], default="unmodified")
    empty = Doc(NLP.vocab, words=[])
    path = write_docbin(tmp_path / "a.spacy", [unannotated, make_doc(EU, EU_ENTS), empty, partial])
    notes: list[str] = []
    sentences = read_docbin(path, notes=notes)
    assert pairs(sentences) == [(EU, EU_TAGS), (["Oslo", "is", "cold"], ["B-LOC", "O", "O"])]
    assert [s.origin for s in sentences] == [f"{path} doc 2", f"{path} doc 4"]
    assert notes == [
        f"{path}: 1 doc without entity annotation skipped",
        f"{path}: 1 doc without tokens skipped",
        f"{path}: 2 tokens without entity annotation (spaCy's missing value) read as O",
    ]


def test_read_through_data_read_source_with_notes(tmp_path):
    path = write_docbin(tmp_path / "train.spacy", [make_doc(EU, EU_ENTS), Doc(NLP.vocab, words=[])])
    corpus = data.read_source(path)
    assert pairs(corpus.splits["train"]) == [(EU, EU_TAGS)]
    assert corpus.notes == [f"{path}: 1 doc without tokens skipped"]
    assert data.report(corpus)["splits"]["train"]["mentions"] == {"MISC": 1, "ORG": 1}


# --------------------------------------------------------------------------- errors


def test_not_a_docbin(tmp_path):
    path = tmp_path / "a.spacy"
    path.write_text("EU B-ORG\nrejects O\n")
    assert error_line(path) == (
        f"{path}: not a spaCy DocBin (.spacy) file, or a damaged one "
        f"(Error -3 while decompressing data: incorrect header check)"
    )
    path.write_bytes(b"")
    assert error_line(path) == f"{path}: is empty, expected a spaCy DocBin (.spacy) file"
    path.write_bytes(zlib.compress(srsly.msgpack_dumps([1, 2])))
    assert error_line(path).startswith(f"{path}: not a spaCy DocBin (.spacy) file")


def test_truncated_docbin(tmp_path):
    whole = docbin_bytes([make_doc(EU, EU_ENTS)])
    path = tmp_path / "a.spacy"
    path.write_bytes(whole[: len(whole) // 2])
    assert error_line(path) == (
        f"{path}: not a spaCy DocBin (.spacy) file, or a damaged one "
        f"(Error -5 while decompressing data: incomplete or truncated stream)"
    )


def test_damaged_doc_names_its_index(tmp_path):
    # Words no vocab of this process has seen, so that their hashes cannot resolve.
    words = [f"damaged-{os.getpid()}-{i}" for i in range(3)]
    msg = srsly.msgpack_loads(zlib.decompress(docbin_bytes([make_doc(words)] * 2)))
    msg["strings"] = []
    path = tmp_path / "a.spacy"
    path.write_bytes(zlib.compress(srsly.msgpack_dumps(msg)))
    assert error_line(path).startswith(f"{path} doc 1: damaged (")


def test_missing_file_folder_and_empty(tmp_path):
    assert error_line(tmp_path / "no.spacy") == f"{tmp_path / 'no.spacy'}: no such file"
    assert error_line(tmp_path) == f"{tmp_path}: is a folder, expected a spaCy DocBin (.spacy) file"
    empty = write_docbin(tmp_path / "empty.spacy", [])
    assert error_line(empty) == f"{empty}: no docs with entity annotation found (it holds no docs)"
    unannotated = write_docbin(tmp_path / "u.spacy", [Doc(NLP.vocab, words=["a"])] * 2)
    assert error_line(unannotated) == (
        f"{unannotated}: no docs with entity annotation found (2 without entity annotation)"
    )


def test_label_that_cannot_be_a_tag(tmp_path):
    path = write_docbin(
        tmp_path / "a.spacy", [make_doc(EU, EU_ENTS), make_doc(EU, [(0, 1, "NEW ORG")])]
    )
    assert error_line(path) == f"{path} doc 2: span label 'NEW ORG' contains whitespace"


# --------------------------------------------------------------------------- spacy convert

# CoNLL-2003's own layout: token, POS, chunk and IOB1 NER columns, documents opened by
# the delimiter line spaCy's converter looks for.
IOB1 = """-DOCSTART- -X- O O

EU NNP B-NP I-ORG
rejects VBZ B-VP O
German JJ B-NP I-MISC
call NN I-NP O
. . O O

Peter NNP B-NP I-PER
Blackburn NNP I-NP I-PER
met VBD B-VP O
Ian NNP B-NP I-PER
Smith NNP I-NP B-PER

-DOCSTART- -X- O O

BRUSSELS NNP B-NP I-LOC
1996-08-22 CD I-NP O
"""


def test_docbin_from_spacy_convert_matches_the_conll_reading(tmp_path):
    source = tmp_path / "small.iob"
    source.write_text(IOB1)
    out = tmp_path / "out"
    out.mkdir()
    try:
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "spacy",
                "convert",
                str(source),
                str(out),
                "-c",
                "ner",
                "-n",
                "1",
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
    except (OSError, subprocess.TimeoutExpired) as err:
        pytest.skip(f"python -m spacy convert did not start or finish: {err}")
    if result.returncode != 0:
        pytest.skip(f"python -m spacy convert failed: {result.stderr.strip()[-300:]}")
    conll = data.read_conll(source)
    sentences = read_docbin(out / "small.spacy")
    # spaCy groups sentences into documents at -DOCSTART-: two docs, three sentences.
    assert [s.doc for s in sentences] == [0, 0, 1]
    assert [s.tokens for s in sentences] == [s.tokens for s in conll]
    assert [s.tags for s in sentences] == [schemes.to_iob2(s.tags) for s in conll]

    def mentions(items):
        return sum(len(schemes.spans(s.tags)) for s in items)

    assert mentions(sentences) == mentions(conll) == 6
