"""Using a trained tagger: token lists, raw text, streams of lines, atomic output."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from conftest import conll_text, is_valid_iob2, make_sentences, tiny_config

from tagger import schemes
from tagger.errors import TaggerError
from tagger.io import write_atomic
from tagger.predict import Tagger, predict_lines, read_lines
from tagger.training import train

SENTENCES = [
    ["Angela", "Merkel", "visited", "Paris", "on", "Monday", "."],
    [],
    ["Shares", "of", "Globex", "rose", "5", "percent", "."],
    ["Wei", "Chen", "works", "for", "United", "Nations", "in", "Oslo", "."],
    ["completely", "unseen", "Zyxwv", "words"],
]
TEXT = "Angela Merkel visited Paris on Monday. Wei Chen works for Globex in Tokyo."


def test_predict_tags_are_valid_iob2_of_the_right_lengths(tagger_model):
    tags = tagger_model.predict(SENTENCES)
    assert len(tags) == len(SENTENCES)
    for tokens, tag_list in zip(SENTENCES, tags):
        assert len(tag_list) == len(tokens)
        assert is_valid_iob2(tag_list)
        assert set(tag_list) <= set(tagger_model.vocab.labels)
    assert tags[1] == []


def test_predict_learned_the_tiny_corpus(tagger_model):
    tags = tagger_model.predict([SENTENCES[0], SENTENCES[3]])
    assert schemes.spans(tags[0]) == [(0, 2, "PER"), (3, 4, "LOC")]
    assert schemes.spans(tags[1]) == [(0, 2, "PER"), (4, 6, "ORG"), (7, 8, "LOC")]


def test_predict_edge_cases(tagger_model):
    assert tagger_model.predict([]) == []
    assert tagger_model.predict([[], []]) == [[], []]
    # Batching and order: one by one equals all at once, whatever the batch size.
    together = tagger_model.predict(SENTENCES, batch_size=2)
    assert together == [tagger_model.predict([s])[0] for s in SENTENCES]
    long = ["Paris"] * 300  # longer than any training sentence
    assert len(tagger_model.predict([long])[0]) == 300


def test_predict_with_scores(tagger_model):
    tags, probs = tagger_model.predict_with_scores(SENTENCES)
    assert tags == tagger_model.predict(SENTENCES)
    for tokens, p in zip(SENTENCES, probs):
        assert isinstance(p, np.ndarray) and p.shape == (len(tokens),)
        assert ((p > 0) & (p <= 1 + 1e-6)).all()
    assert tagger_model.predict_with_scores(SENTENCES, scores=False)[1] is None


def test_predict_empty_token(tagger_model):
    try:
        tags = tagger_model.predict([["Paris", ""]])
    except TaggerError:
        return  # a clear refusal is fine too
    assert len(tags[0]) == 2


def test_entity_types(tagger_model):
    assert tagger_model.entity_types == ["LOC", "ORG", "PER"]


def test_predict_text_offsets(tagger_model):
    entities = tagger_model.predict_text(TEXT)
    assert [(e["text"], e["label"]) for e in entities] == [
        ("Angela Merkel", "PER"),
        ("Paris", "LOC"),
        ("Wei Chen", "PER"),
        ("Globex", "ORG"),
        ("Tokyo", "LOC"),
    ]
    for e in entities:
        assert TEXT[e["start"] : e["end"]] == e["text"]
    assert tagger_model.predict_text("") == []
    assert tagger_model.predict_text("   \n  ") == []


def test_predict_text_offsets_with_odd_whitespace(tagger_model):
    text = "  Angela   Merkel\tvisited\n\nParis .  "
    entities = tagger_model.predict_text(text)
    assert entities, "the model should find Merkel and Paris"
    for e in entities:
        assert text[e["start"] : e["end"]] == e["text"]
        assert e["text"] == e["text"].strip()


def test_predict_lines_jsonl(tagger_model):
    lines = [TEXT, "", "Shares of Globex rose 5 percent."]
    out = "".join(predict_lines(tagger_model, iter(lines), "jsonl"))
    records = [json.loads(line) for line in out.splitlines()]
    assert [r["text"] for r in records] == lines
    assert records[1]["entities"] == []
    assert records[0]["entities"] == tagger_model.predict_text(TEXT)
    for r in records:
        for e in r["entities"]:
            assert r["text"][e["start"] : e["end"]] == e["text"]
    assert {"text": "Globex", "label": "ORG", "start": 10, "end": 16} in records[2]["entities"]


def test_predict_lines_conll(tagger_model):
    lines = [TEXT, "", "Shares of Globex rose."]
    out = "".join(predict_lines(tagger_model, iter(lines), "conll"))
    assert out.endswith("\n\n")
    blocks = [b.splitlines() for b in out.strip("\n").split("\n\n")]
    assert len(blocks) == 3  # two sentences in the first line, one in the third
    tokens = []
    for block in blocks:
        rows = [line.split(" ") for line in block]
        assert all(len(r) == 2 for r in rows)
        assert is_valid_iob2([r[1] for r in rows])
        tokens += [r[0] for r in rows]
    assert "".join(tokens) == "".join("".join(lines).split())
    last = ["Shares", "of", "Globex", "rose", "."]
    expected = tagger_model.predict([last])[0]
    assert blocks[2] == [f"{t} {g}" for t, g in zip(last, expected)]


def test_predict_lines_pretokenized(tagger_model):
    lines = ["Angela", "Merkel", "visited", "Paris", "", "", "Oslo ignored columns", "rose", ""]
    records = [
        json.loads(r)
        for r in "".join(
            predict_lines(tagger_model, iter(lines), "jsonl", pretokenized=True)
        ).splitlines()
    ]
    assert [r["tokens"] for r in records] == [
        ["Angela", "Merkel", "visited", "Paris"],
        ["Oslo", "rose"],
    ]
    assert records[0]["tags"] == ["B-PER", "I-PER", "O", "B-LOC"]
    assert records[0]["entities"] == [
        {"text": "Angela Merkel", "label": "PER", "start": 0, "end": 2},
        {"text": "Paris", "label": "LOC", "start": 3, "end": 4},
    ]
    second = tagger_model.predict([["Oslo", "rose"]])[0]
    assert records[1]["tags"] == second
    conll = "".join(predict_lines(tagger_model, iter(lines), "conll", pretokenized=True))
    assert conll == (
        "Angela B-PER\nMerkel I-PER\nvisited O\nParis B-LOC\n\n"
        f"Oslo {second[0]}\nrose {second[1]}\n\n"
    )


def test_predict_lines_unknown_format(tagger_model):
    with pytest.raises(TaggerError) as err:
        list(predict_lines(tagger_model, iter(["x"]), "html"))
    assert str(err.value) == "unknown output format 'html'; choose one of conll, jsonl"


def test_predict_lines_streams_in_chunks(tagger_model, monkeypatch):
    monkeypatch.setattr("tagger.predict.CHUNK_LINES", 2)
    chunks = list(predict_lines(tagger_model, iter(["Paris ."] * 5), "jsonl"))
    assert [c.count("\n") for c in chunks] == [2, 2, 1]


# ----------------------------------------------------------------- read_lines / write_atomic


def test_read_lines(tmp_path):
    path = tmp_path / "in.txt"
    path.write_bytes("\ufeffone\r\ntwo\n\nthree".encode())
    assert list(read_lines(path)) == ["one", "two", "", "three"]
    path.write_bytes(b"caf\xe9\n")
    assert list(read_lines(path, "latin-1")) == ["café"]


def test_read_lines_nul_bytes(tmp_path):
    path = tmp_path / "bin.txt"
    path.write_bytes(b"fine\nstill fine\nbad\x00line\n")
    with pytest.raises(TaggerError) as err:
        list(read_lines(path))
    assert str(err.value) == (
        f"{path}:3: contains NUL bytes; is this a binary file "
        "(or UTF-16 without a byte-order mark)?"
    )


def test_read_lines_bad_utf8(tmp_path):
    path = tmp_path / "latin.txt"
    path.write_bytes(b"first\nM\xfcller\n")
    lines = read_lines(path)
    assert next(lines) == "first"  # lines stream before the bad one is reached
    with pytest.raises(TaggerError) as err:
        next(lines)
    assert str(err.value) == (
        f"{path}:2: byte 0xfc at offset 7 is not valid utf-8; "
        "if the file is Latin-1, pass --encoding latin-1"
    )


def test_read_lines_missing(tmp_path):
    with pytest.raises(TaggerError) as err:
        list(read_lines(tmp_path / "nope.txt"))
    assert str(err.value) == f"{tmp_path / 'nope.txt'}: no such file"
    with pytest.raises(TaggerError) as err:
        list(read_lines(tmp_path))
    assert str(err.value) == f"{tmp_path}: is a folder, expected a text file"


def test_write_atomic(tmp_path):
    out = tmp_path / "out.txt"
    write_atomic(iter(["a\n", "b\n"]), out)
    assert out.read_text() == "a\nb\n"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def failing_chunks():
    yield "partial\n"
    raise TaggerError("input.txt:2: broken")


def test_write_atomic_failure_leaves_no_output(tmp_path):
    out = tmp_path / "out.txt"
    with pytest.raises(TaggerError, match="broken"):
        write_atomic(failing_chunks(), out)
    assert list(tmp_path.iterdir()) == []


def test_write_atomic_failure_keeps_old_output(tmp_path):
    out = tmp_path / "out.txt"
    out.write_text("old\n")
    with pytest.raises(TaggerError):
        write_atomic(failing_chunks(), out)
    assert out.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_write_atomic_to_missing_folder(tmp_path):
    with pytest.raises(TaggerError) as err:
        write_atomic(iter(["x"]), tmp_path / "no" / "out.txt")
    assert str(err.value).startswith(f"cannot write {tmp_path / 'no' / 'out.txt'}: ")


def test_write_atomic_stdout(capsys):
    write_atomic(iter(["a\n", "b\n"]), None)
    write_atomic(iter(["c\n"]), "-")
    assert capsys.readouterr().out == "a\nb\nc\n"


def test_write_atomic_permissions_follow_umask(tmp_path):
    mask = os.umask(0)
    os.umask(mask)
    out = tmp_path / "out.txt"
    write_atomic(iter(["x\n"]), out)
    assert out.stat().st_mode & 0o777 == 0o666 & ~mask


def test_a_very_long_line_is_split_into_sentences_not_truncated(tagger_model, tmp_path):
    """One 30,000-token line: spaCy's sentencizer splits it, every sentence is tagged,
    and the record holds the whole line with entity offsets into it."""
    sentence = "John Smith visited Paris on Monday ."
    line = " ".join([sentence] * 4300)
    records = [json.loads(r) for r in "".join(predict_lines(tagger_model, [line])).splitlines()]
    assert len(records) == 1 and records[0]["text"] == line
    entities = records[0]["entities"]
    assert len(entities) == 2 * 4300  # John Smith and Paris in every sentence
    assert entities[-1]["end"] > len(line) - len(sentence)  # tagged up to the end
    assert all(line[e["start"] : e["end"]] == e["text"] for e in entities)


def test_a_5000_token_sentence_trains_and_predicts(tmp_path):
    """A 5,000-token sentence in training and in prediction: no length limit, no
    truncation, and the CRF and batching stay linear in its length."""
    long_tokens, long_tags = [], []
    for tokens, tags in make_sentences(800, seed=3):
        long_tokens += tokens
        long_tags += tags
    long_tokens, long_tags = long_tokens[:5000], long_tags[:5000]
    folder = tmp_path / "corpus"
    folder.mkdir()
    train_sents = make_sentences(40, seed=0) + [(long_tokens, long_tags)]
    (folder / "train.txt").write_text(conll_text(train_sents))
    (folder / "dev.txt").write_text(conll_text(make_sentences(10, seed=1)))
    path = train(
        tiny_config(data=str(folder), output=str(tmp_path / "m"), max_epochs=2), progress=False
    )
    model = Tagger.load(path, device="cpu")
    tags = model.predict([long_tokens])[0]
    assert len(tags) == 5000
    assert is_valid_iob2(tags)
