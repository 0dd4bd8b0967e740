"""Using a trained tagger: token lists, raw text, streams of lines, atomic output."""

from __future__ import annotations

import itertools
import json
import math
import os

import numpy as np
import pytest
import torch
from conftest import conll_text, is_valid_bioes, is_valid_iob2, make_sentences, tiny_config

from tagger import schemes
from tagger.batching import encode, make_batch
from tagger.errors import TaggerError
from tagger.io import write_atomic
from tagger.predict import MentionReader, Tagger, predict_lines, read_lines
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
            assert 0 < e["score"] <= 1 and e["score"] == round(e["score"], 4)
    found = [{k: e[k] for k in ("text", "label", "start", "end")} for e in records[2]["entities"]]
    assert {"text": "Globex", "label": "ORG", "start": 10, "end": 16} in found


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
    spans = tagger_model.predict_spans([records[0]["tokens"]])[0]
    assert records[0]["entities"] == [
        {"text": "Angela Merkel", "label": "PER", "start": 0, "end": 2, "score": spans[0]["score"]},
        {"text": "Paris", "label": "LOC", "start": 3, "end": 4, "score": spans[1]["score"]},
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


# ----------------------------------------------------------------- entity scores


@pytest.fixture(scope="module")
def softmax_model(tiny_corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("softmax") / "model"
    config = tiny_config(data=str(tiny_corpus), output=str(out), decoder="softmax", max_epochs=4)
    return Tagger.load(train(config, progress=False), device="cpu")


def emissions_of(tagger, tokens):
    """The model's label scores for one sentence, (T, K) float64."""
    batch = make_batch(encode(tagger.vocab, [tokens]), np.arange(1))
    with torch.inference_mode():
        return tagger.model.emissions(batch)[0].double()


def test_predict_spans_are_the_mentions_of_the_tags(tagger_model, softmax_model):
    for model in (tagger_model, softmax_model):
        spans = model.predict_spans(SENTENCES)
        tags = model.predict(SENTENCES)
        assert len(spans) == len(SENTENCES) and spans[1] == []
        for found, tag_list in zip(spans, tags):
            assert [(s["start"], s["end"], s["label"]) for s in found] == schemes.spans(tag_list)
            assert all(0 < s["score"] <= 1 and s["score"] == round(s["score"], 4) for s in found)
            assert all(list(s) == ["start", "end", "label", "score"] for s in found)
    assert tagger_model.predict_spans([]) == []


def test_crf_entity_score_is_the_brute_force_span_probability(tagger_model):
    """Every valid BIOES path of a 3-token sentence enumerated with the trained CRF's
    scores (over the model's calibration temperature): the entity's score is the
    probability of the paths holding that mention."""
    tokens = ["Angela", "Merkel", "rose"]
    (spans,) = tagger_model.predict_spans([tokens])
    assert [(s["start"], s["end"], s["label"]) for s in spans] == [(0, 2, "PER")]
    labels = tagger_model.vocab.labels
    crf = tagger_model.model.decoder.crf
    emissions = emissions_of(tagger_model, tokens)
    params = (crf.start_transitions, crf.transitions, crf.end_transitions)
    start, trans, end = (p.detach().double() for p in params)
    total = held = 0.0
    for path in itertools.product(range(len(labels)), repeat=len(tokens)):
        named = [labels[i] for i in path]
        if not is_valid_bioes(named):
            continue
        score = start[path[0]] + end[path[-1]] + sum(emissions[t, path[t]] for t in range(3))
        score = score + trans[path[0], path[1]] + trans[path[1], path[2]]
        weight = math.exp(float(score) / tagger_model.temperature)
        total += weight
        if (0, 2, "PER") in schemes.spans(named):
            held += weight
    assert spans[0]["score"] == pytest.approx(held / total, abs=1e-4)  # 4 decimals, float32


def test_softmax_entity_score_is_the_product_of_its_token_probabilities(softmax_model):
    for tokens in [s for s in SENTENCES if s]:
        scores = emissions_of(softmax_model, tokens) / softmax_model.temperature
        probs = scores.softmax(1).max(1).values
        for span in softmax_model.predict_spans([tokens])[0]:
            want = float(probs[span["start"] : span["end"]].prod())
            assert span["score"] == pytest.approx(want, abs=1e-4)


@pytest.mark.parametrize("scheme", ["IOB2", "BIOES"])
def test_mention_reader_reads_what_the_printed_tags_say(scheme):
    """Any label ids, valid or not (softmax output), with padding: the mentions equal
    ``schemes.spans`` of the IOB2 tags ``Tagger`` prints for them."""
    labels = schemes.label_set(["A", "B"], scheme)
    reader = MentionReader.of(labels)
    gen = torch.Generator().manual_seed(len(labels))
    ids = torch.randint(len(labels), (200, 7), generator=gen)
    lengths = torch.randint(1, 8, (200,), generator=gen)
    mask = torch.arange(7)[None, :] < lengths[:, None]
    found = reader.mentions(ids, mask).tolist()
    want = []
    for b, n in enumerate(lengths.tolist()):
        tags = schemes.to_iob2([schemes.iob2_label(labels[i]) for i in ids[b, :n]])
        want += [[b, s, e] for s, e, _ in schemes.spans(tags)]
    assert found == want
    dropped = reader.drop(ids, torch.tensor(found[::2]).reshape(-1, 3))
    for b, s, e in found[::2]:
        assert (dropped[b, s:e] == labels.index("O")).all()
    kept = torch.ones_like(ids, dtype=torch.bool)
    for b, s, e in found[::2]:
        kept[b, s:e] = False
    assert torch.equal(dropped[kept], ids[kept])


def test_min_confidence_drops_entities_and_their_tags(tagger_model):
    spans = tagger_model.predict_spans(SENTENCES)
    scores = sorted({s["score"] for found in spans for s in found})
    assert len(scores) > 2, "the tiny model should be surer of some entities than others"
    cut = (scores[0] + scores[1]) / 2  # drops the least sure entity only
    kept = tagger_model.predict_spans(SENTENCES, min_confidence=cut)
    assert kept == [[s for s in found if s["score"] > cut] for found in spans]
    tags = tagger_model.predict(SENTENCES, min_confidence=cut)
    assert [schemes.spans(t) for t in tags] == [
        [(s["start"], s["end"], s["label"]) for s in found] for found in kept
    ]
    before, probs = tagger_model.predict_with_scores(SENTENCES)
    after, probs_cut = tagger_model.predict_with_scores(SENTENCES, min_confidence=cut)
    assert after == tags
    for b_tags, a_tags, p, q in zip(before, after, probs, probs_cut):
        for old, new, p_old, p_new in zip(b_tags, a_tags, p, q):
            if old != new:  # now O: its probability of O, an event disjoint from the old tag
                assert new == "O" and p_old + p_new <= 1 + 1e-5
            else:
                assert p_new == pytest.approx(p_old, abs=1e-6)
    assert tagger_model.predict_spans(SENTENCES, min_confidence=0.0) == spans
    sure = tagger_model.predict_spans(SENTENCES, min_confidence=1.0)
    assert all(s["score"] == 1.0 for found in sure for s in found)
    text = tagger_model.predict_text(TEXT)
    assert all(0 < e["score"] <= 1 for e in text)
    sure = tagger_model.predict_text(TEXT, min_confidence=1.0)
    assert all(e in text and e["score"] == 1.0 for e in sure)


@pytest.mark.parametrize("bad", [-0.1, 1.5, float("nan")])
def test_min_confidence_must_be_a_probability(tagger_model, bad):
    message = f"^min_confidence must be between 0 and 1, not {bad}$"
    for call in (
        lambda: tagger_model.predict(SENTENCES, min_confidence=bad),
        lambda: tagger_model.predict_spans(SENTENCES, min_confidence=bad),
        lambda: tagger_model.predict_text(TEXT, min_confidence=bad),
        lambda: list(predict_lines(tagger_model, iter([TEXT]), min_confidence=bad)),
    ):
        with pytest.raises(TaggerError, match=message):
            call()


def test_conll_scores_column(tagger_model):
    lines = ["Angela", "Merkel", "visited", "Paris", "", "Oslo", "rose", ""]
    sentences = [["Angela", "Merkel", "visited", "Paris"], ["Oslo", "rose"]]
    tags, probs = tagger_model.predict_with_scores(sentences)
    out = "".join(predict_lines(tagger_model, iter(lines), "conll", pretokenized=True, scores=True))
    assert out == "".join(
        "".join(f"{t} {g} {p:.4f}\n" for t, g, p in zip(toks, tg, pr)) + "\n"
        for toks, tg, pr in zip(sentences, tags, probs)
    )
    raw = "".join(predict_lines(tagger_model, iter([TEXT]), "conll", scores=True))
    rows = [line.split(" ") for line in raw.splitlines() if line]
    assert rows and all(len(r) == 3 and 0 < float(r[2]) <= 1 for r in rows)
    plain = "".join(predict_lines(tagger_model, iter([TEXT]), "conll"))
    assert [r[:2] for r in rows] == [line.split(" ") for line in plain.splitlines() if line]
    # Off in JSON lines on request; the CoNLL of dropped entities reads O.
    off = "".join(predict_lines(tagger_model, iter(lines), pretokenized=True, scores=False))
    assert all("score" not in e for r in off.splitlines() for e in json.loads(r)["entities"])
    cut = "".join(
        predict_lines(tagger_model, iter(lines), "conll", pretokenized=True, min_confidence=1.0)
    )
    assert cut.split() == [
        x
        for toks, tg in zip(sentences, tagger_model.predict(sentences, min_confidence=1.0))
        for pair in zip(toks, tg)
        for x in pair
    ]


def test_token_scores_are_of_the_printed_iob2_tag(tagger_model):
    """A BIOES model prints B-X for B-X and S-X: the token's score is their sum."""
    tokens = SENTENCES[3]
    tags, (probs,) = tagger_model.predict_with_scores([tokens])
    labels = tagger_model.vocab.labels
    batch = make_batch(encode(tagger_model.vocab, [tokens]), np.arange(1))
    with torch.inference_mode():
        emissions = tagger_model.model.emissions(batch)
        marg = tagger_model.model.decoder.marginals(
            emissions, batch.mask, temperature=tagger_model.temperature
        )[0]
    for t, tag in enumerate(tags[0]):
        same = [i for i, label in enumerate(labels) if schemes.iob2_label(label) == tag]
        want = min(float(marg[t, same].sum()), 1.0)  # float32 sums may pass 1 by ~1e-5
        assert probs[t] == pytest.approx(want, abs=1e-6)


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
