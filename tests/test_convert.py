"""tagger convert: CoNLL columns, span JSONL and spaCy DocBin into one another, losslessly."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import CONLL2003, REPO, conll_text, make_sentences
from spacy.tokens import DocBin
from test_spans import DOCCANO, LABEL_STUDIO, PRODIGY, TAGGER

from tagger import data, schemes
from tagger.convert import convert
from tagger.errors import TaggerError
from tagger.spans import read_spans

# IOB1 as in CoNLL-2003's original files: a mention opens with I- unless it follows one
# of its own type ("Ian Smith" after "Peter Blackburn" is B-PER).
IOB1 = """-DOCSTART- -X- -X- O

EU NNP B-NP I-ORG
rejects VBZ B-VP O
German JJ B-NP I-MISC
call NN I-NP O
. . O O

Peter NNP B-NP I-PER
Blackburn NNP I-NP I-PER
met VBD B-VP O
Ian NNP B-NP B-PER
Smith NNP I-NP I-PER

-DOCSTART- -X- -X- O

BRUSSELS NNP B-NP I-LOC
1996-08-22 CD I-NP O
"""
IOB1_AS_IOB2 = """-DOCSTART- O

EU B-ORG
rejects O
German B-MISC
call O
. O

Peter B-PER
Blackburn I-PER
met O
Ian B-PER
Smith I-PER

-DOCSTART- O

BRUSSELS B-LOC
1996-08-22 O

"""


def spans_of(text: str, *mentions: tuple[str, str]) -> dict:
    """A doccano record with each ``(words, label)`` marked where it first occurs."""
    label = [[text.index(w), text.index(w) + len(w), etype] for w, etype in mentions]
    return {"text": text, "label": label}


TEXTS = [
    # Raw text, several sentences, a double space and a newline: spaCy tokenizes it.
    spans_of(
        "Mary lives in Oslo.  She works for Acme Corp today.",
        ("Mary", "PER"),
        ("Oslo", "LOC"),
        ("Acme Corp", "ORG"),
    ),
    spans_of("Nothing here."),
    spans_of("New York\nis big.", ("New York", "LOC")),
]


def write_jsonl(path: Path, records: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def char_spans(record: dict) -> list[tuple[int, int, str]]:
    """A record's spans as (start, end, label), whichever tool wrote it."""
    if "label" in record:
        return [tuple(x) for x in record["label"]]
    return [(s["start"], s["end"], s["label"]) for s in record["spans"]]


def iob2(sentences) -> list[tuple[list[str], list[str], int | None]]:
    return [(s.tokens, schemes.to_iob2(s.tags), s.doc) for s in sentences]


def documents(sentences) -> list[int | None]:
    """Which document each sentence is in, numbered from 0 in order (files number them
    differently: CoNLL from the first -DOCSTART-, JSON records from 0)."""
    order: dict[int, int] = {}
    return [None if s.doc is None else order.setdefault(s.doc, len(order)) for s in sentences]


def refused(*args, **kwargs) -> str:
    with pytest.raises(TaggerError) as info:
        convert(*args, **kwargs)
    assert "\n" not in str(info.value)
    return str(info.value)


# --------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("docstart", [True, False], ids=["documents", "no-documents"])
def test_conll_to_jsonl_to_conll_is_identical(tmp_path, docstart):
    sentences = make_sentences(40, seed=5)
    text = conll_text(sentences, docstart=docstart)
    source = tmp_path / "a.conll"
    source.write_text(text)
    counts = convert(source, tmp_path / "a.jsonl", "jsonl")
    assert counts == {
        "records": 40,
        "sentences": 40,
        "tokens": sum(len(tokens) for tokens, _ in sentences),
        "mentions": sum(len(schemes.spans(tags)) for _, tags in sentences),
    }
    convert(tmp_path / "a.jsonl", tmp_path / "b.conll", "conll")
    assert (tmp_path / "b.conll").read_text() == text


def test_iob1_conll_to_jsonl_to_conll_keeps_sentences_mentions_and_documents(tmp_path):
    source = tmp_path / "eng.train"
    source.write_text(IOB1)
    convert(source, tmp_path / "a.jsonl", "jsonl")
    first = records(tmp_path / "a.jsonl")[1]
    assert first["text"] == "Peter Blackburn met Ian Smith"
    assert first["tokens"][1] == {"text": "Blackburn", "start": 6, "end": 15, "id": 1, "ws": True}
    assert first["spans"] == [
        {"start": 0, "end": 15, "label": "PER", "token_start": 0, "token_end": 1},
        {"start": 20, "end": 29, "label": "PER", "token_start": 3, "token_end": 4},
    ]
    assert [r["meta"] for r in records(tmp_path / "a.jsonl")] == [
        {"doc": 1},
        {"doc": 1},
        {"doc": 2},
    ]
    counts = convert(tmp_path / "a.jsonl", tmp_path / "b.conll", "conll")
    assert (tmp_path / "b.conll").read_text() == IOB1_AS_IOB2
    assert counts == {"docs": 3, "sentences": 3, "tokens": 12, "mentions": 5}
    assert iob2(data.read_conll(tmp_path / "b.conll")) == iob2(data.read_conll(source))


@pytest.mark.parametrize("text", [IOB1, IOB1_AS_IOB2], ids=["iob1", "iob2"])
def test_conll_to_spacy_to_conll_keeps_sentences(tmp_path, text):
    source = tmp_path / "a.conll"
    source.write_text(text)
    counts = convert(source, tmp_path / "a.spacy", "spacy")
    assert counts == {"docs": 3, "sentences": 3, "tokens": 12, "mentions": 5}
    assert len(DocBin().from_bytes((tmp_path / "a.spacy").read_bytes())) == 3
    convert(tmp_path / "a.spacy", tmp_path / "b.conll", "conll")
    back, original = data.read_conll(tmp_path / "b.conll"), data.read_conll(source)
    # A DocBin holds no document numbers: each doc (here a sentence) is its own.
    assert [(s.tokens, s.tags) for s in back] == [(t, g) for t, g, _ in iob2(original)]
    assert "-DOCSTART-" not in (tmp_path / "b.conll").read_text()


def test_jsonl_text_to_spacy_to_jsonl_keeps_text_and_spans(tmp_path):
    source = write_jsonl(tmp_path / "a.jsonl", TEXTS)
    counts = convert(source, tmp_path / "a.spacy", "spacy")
    assert counts["docs"] == 3 and counts["mentions"] == 4
    assert counts["sentences"] == len(read_spans(source)) == 4
    convert(tmp_path / "a.spacy", tmp_path / "b.jsonl", "jsonl")
    back = records(tmp_path / "b.jsonl")
    assert [r["text"] for r in back] == [r["text"] for r in TEXTS]
    assert [char_spans(r) for r in back] == [char_spans(r) for r in TEXTS]
    # Read back, the tokens are spaCy's own, whitespace tokens left out as before.
    assert [s.tokens for s in read_spans(tmp_path / "b.jsonl")] == [
        ["Mary", "lives", "in", "Oslo", ".", "She", "works", "for", "Acme", "Corp", "today", "."],
        ["Nothing", "here", "."],
        ["New", "York", "is", "big", "."],
    ]


def test_docbin_sentences_and_documents_to_conll(tmp_path):
    # Text records split by the sentencizer: a record is a document of two sentences.
    source = write_jsonl(tmp_path / "a.jsonl", TEXTS[:2])
    convert(source, tmp_path / "a.spacy", "spacy")
    convert(tmp_path / "a.spacy", tmp_path / "a.conll", "conll")
    assert (tmp_path / "a.conll").read_text() == (
        "-DOCSTART- O\n\nMary B-PER\nlives O\nin O\nOslo B-LOC\n. O\n\n"
        "She O\nworks O\nfor O\nAcme B-ORG\nCorp I-ORG\ntoday O\n. O\n\n"
        "-DOCSTART- O\n\nNothing O\nhere O\n. O\n\n"
    )
    back, original = data.read_conll(tmp_path / "a.conll"), read_spans(source)
    assert [(s.tokens, s.tags) for s in back] == [(s.tokens, s.tags) for s in original]
    assert documents(back) == documents(original) == [0, 0, 1]


@pytest.mark.parametrize("to", ["conll", "jsonl", "spacy"])
def test_every_span_format_converts_as_the_reader_reads_it(tmp_path, to):
    sources = [
        write_jsonl(tmp_path / "doccano.jsonl", [DOCCANO]),
        write_jsonl(tmp_path / "tagger.jsonl", [TAGGER]),
        write_jsonl(tmp_path / "prodigy.jsonl", [PRODIGY]),
        tmp_path / "ls.json",
    ]
    sources[-1].write_text(json.dumps(LABEL_STUDIO))
    for source in sources:
        output = tmp_path / f"{source.stem}.out"
        notes: list[str] = []
        convert(source, output, to, notes=notes)
        read_back = data.read_file(output, {"jsonl": "prodigy"}.get(to, to))
        assert [(s.tokens, s.tags) for s in read_back] == [
            (s.tokens, s.tags) for s in read_spans(source)
        ]
        if source.suffix == ".json":
            assert notes == [
                f"{source}: 1 task without an annotation (or only cancelled ones) skipped",
                f"{source}: 1 task: took the last non-cancelled annotation (task 7: "
                f"annotation 1 of 2)",
            ]


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("record", "message"),
    [
        ({"text": "Berlin!", "label": [[0, 3, "LOC"]]}, "span [0, 3) 'Ber' does not line up"),
        (
            {"text": "EU rejects", "label": [[0, 10, "ORG"], [3, 10, "X"]]},
            "spans [0, 10) 'EU rejects' ORG and [3, 10) 'rejects' X overlap",
        ),
        ({"text": "EU", "label": [[0, 3, "ORG"]]}, "span [0, 3) ORG is out of range"),
    ],
    ids=["misaligned", "overlap", "out-of-range"],
)
@pytest.mark.parametrize("to", ["conll", "spacy"])
def test_bad_spans_write_nothing(tmp_path, record, message, to):
    source = write_jsonl(tmp_path / "a.jsonl", [TEXTS[1], record])
    output = tmp_path / "out"
    assert refused(source, output, to).startswith(f"{source}:2: {message}")
    assert not output.exists()
    assert os.listdir(tmp_path) == ["a.jsonl"]  # no temporary left either
    # An old output is left as it was, even with overwrite.
    output.write_text("old")
    refused(source, output, to, overwrite=True)
    assert output.read_text() == "old"


def test_misaligned_expand_is_noted(tmp_path):
    source = write_jsonl(tmp_path / "a.jsonl", [{"text": "Berlin!", "label": [[0, 3, "LOC"]]}])
    notes: list[str] = []
    convert(source, tmp_path / "a.conll", "conll", misaligned="expand", notes=notes)
    assert (tmp_path / "a.conll").read_text() == "Berlin B-LOC\n! O\n\n"
    assert notes == [f"{source}: 1 misaligned span expanded to token boundaries"]


def test_existing_output_is_refused_unless_overwrite(tmp_path):
    source = tmp_path / "a.conll"
    source.write_text(IOB1_AS_IOB2)
    output = tmp_path / "b.jsonl"
    output.write_text("mine")
    assert (
        refused(source, output, "jsonl")
        == f"{output} already exists; pass --overwrite to replace it"
    )
    assert output.read_text() == "mine"
    convert(source, output, "jsonl", overwrite=True)
    assert len(records(output)) == 3


def test_output_that_is_the_input_is_refused(tmp_path):
    source = tmp_path / "a.conll"
    source.write_text(IOB1_AS_IOB2)
    message = refused(source, source, "conll", overwrite=True)
    assert message.startswith(f"OUTPUT {source} is the input {source}: writing it would destroy it")
    link = tmp_path / "link.conll"
    link.symlink_to(source)
    assert "writing it would destroy it" in refused(source, link, "conll", overwrite=True)
    assert source.read_text() == IOB1_AS_IOB2


def test_token_that_conll_cannot_hold(tmp_path):
    tokens = [
        {"text": "New York", "start": 0, "end": 8, "id": 0, "ws": True},
        {"text": "x", "start": 9, "end": 10, "id": 1, "ws": False},
    ]
    record = {
        "text": "New York x",
        "tokens": tokens,
        "spans": [{"start": 0, "end": 8, "label": "LOC"}],
    }
    source = write_jsonl(tmp_path / "a.jsonl", [record])
    assert refused(source, tmp_path / "a.conll", "conll") == (
        f"{source}:1 token 1: token 'New York' cannot be written as a CoNLL column "
        f"(whitespace inside)"
    )
    assert not (tmp_path / "a.conll").exists()
    convert(source, tmp_path / "a.spacy", "spacy")  # a DocBin holds it
    assert [s.tokens for s in data.read_file(tmp_path / "a.spacy")] == [["New York", "x"]]


def test_unknown_target_and_binary_to_stdout(tmp_path):
    source = tmp_path / "a.conll"
    source.write_text(IOB1_AS_IOB2)
    assert refused(source, tmp_path / "b", "xml") == (
        "unknown output format 'xml'; choose one of conll, jsonl, spacy"
    )
    assert "not '-'" in refused(source, "-", "spacy")


def test_missing_input(tmp_path):
    assert refused(tmp_path / "no.conll", tmp_path / "b.jsonl", "jsonl") == (
        f"{tmp_path / 'no.conll'}: no such file"
    )
    assert not (tmp_path / "b.jsonl").exists()


# --------------------------------------------------------------------------- CLI


def test_cli_convert(tmp_path):
    source = tmp_path / "a.conll"
    source.write_text(IOB1)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}

    def run(*args):
        return subprocess.run(
            [sys.executable, "-m", "tagger", "convert", *args],
            capture_output=True,
            text=True,
            cwd=REPO,
            env=env,
            timeout=120,
        )

    result = run(str(source), str(tmp_path / "a.spacy"), "--to", "spacy")
    assert result.returncode == 0, result.stderr
    assert (
        f"wrote {tmp_path / 'a.spacy'}: 3 docs, 3 sentences, 12 tokens, 5 mentions" in result.stderr
    )
    result = run(str(source), str(tmp_path / "a.spacy"), "--to", "spacy")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"error: {tmp_path / 'a.spacy'} already exists; pass --overwrite to replace it"
    ]


# --------------------------------------------------------------------------- CoNLL-2003


@pytest.mark.slow
def test_conll2003_train_to_jsonl_and_back(tmp_path):
    source = CONLL2003 / "train.txt"
    if not source.is_file():
        pytest.skip(f"CoNLL-2003 is not in {CONLL2003}")
    counts = convert(source, tmp_path / "train.jsonl", "jsonl")
    assert counts == {"records": 14041, "sentences": 14041, "tokens": 203621, "mentions": 23499}
    convert(tmp_path / "train.jsonl", tmp_path / "train.conll", "conll")
    original = data.read_conll(source)
    assert iob2(data.read_conll(tmp_path / "train.conll")) == iob2(original)
    # Text only: spaCy tokenizes it again and every mention still lines up.
    text_only = tmp_path / "text.jsonl"
    with text_only.open("w", encoding="utf-8") as out:
        for record in records(tmp_path / "train.jsonl"):
            del record["tokens"]
            out.write(json.dumps(record) + "\n")
    sentences = read_spans(text_only)  # misaligned="error": one stray span would raise
    assert sum(len(schemes.spans(s.tags)) for s in sentences) == 23499
