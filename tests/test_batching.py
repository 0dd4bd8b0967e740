"""Encoding token lists into type tables, padded batches, length buckets."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tagger.batching import (
    CASINGS,
    MAX_WORD_CHARS,
    UNCUT,
    bucket_batches,
    bucket_indices,
    casing,
    encode,
    make_batch,
)
from tagger.vocab import PAD_ID, UNK_ID, Vocab

SENTENCES = [
    ["Peter", "Blackburn", "visited", "Bonn", "."],
    ["EU", "rejects", "German", "call"],
    ["Bonn"],
    ["The", "EU", "said", "1996", "was", "fine", "."],
]
TAGS = [
    ["B-PER", "I-PER", "O", "B-LOC", "O"],
    ["B-ORG", "O", "B-MISC", "O"],
    ["B-LOC"],
    ["O", "B-ORG", "O", "O", "O", "O", "O"],
]
LABELS = ["O", "B-LOC", "I-LOC", "B-MISC", "I-MISC", "B-ORG", "I-ORG", "B-PER", "I-PER"]


@pytest.fixture(scope="module")
def vocab():
    return Vocab.build(SENTENCES[:3], LABELS)  # the last sentence has unknown words


def strip_pad(row) -> list[int]:
    return [int(c) for c in row if int(c) != PAD_ID]


@pytest.mark.parametrize(
    ("word", "name"),
    [
        ("1996", "numeric"),
        ("12-3", "mostly_numeric"),
        ("cat", "lower"),
        ("EU", "upper"),
        ("Bonn", "title"),
        ("mP3", "has_digit"),
        ("iPhone", "mixed"),
        (".", "other"),
    ],
)
def test_casing(word, name):
    assert CASINGS[casing(word)] == name


def test_encode_type_table(vocab):
    enc = encode(vocab, SENTENCES, TAGS)
    assert len(enc) == 4
    assert enc.offsets.tolist() == [0, 5, 9, 10, 17]
    assert enc.lengths.tolist() == [5, 4, 1, 7]
    # Each distinct token string is one type; "Bonn", "EU" and "." repeat.
    assert len(enc.type_words) == len({t for s in SENTENCES for t in s})
    flat = [t for s in SENTENCES for t in s]
    types = {}
    for tok, row in zip(flat, enc.type_ids.tolist()):
        assert types.setdefault(tok, row) == row
    for tok, row in types.items():
        assert enc.type_words[row] == vocab.word_id(tok)
        assert enc.type_casing[row] == casing(tok)
        assert strip_pad(enc.type_chars[row]) == vocab.char_ids(tok)
    assert enc.tag_ids.tolist() == vocab.label_ids([t for s in TAGS for t in s])


def test_encode_without_tags_and_empty(vocab):
    assert encode(vocab, SENTENCES).tag_ids is None
    enc = encode(vocab, [])
    assert len(enc) == 0 and enc.type_ids.shape == (0,)


def test_long_words_are_cut_for_characters_only(vocab):
    long = "x" * 100
    enc = encode(vocab, [["a", long]])
    assert enc.type_chars.shape == (2, MAX_WORD_CHARS)
    assert enc.type_words[1] == vocab.word_id(long)


def test_make_batch_shapes_padding_and_mask(vocab):
    enc = encode(vocab, SENTENCES, TAGS)
    index = np.array([3, 2, 0])
    batch = make_batch(enc, index)
    B, T = 3, 7
    for tensor in (batch.word_ids, batch.casing_ids, batch.type_index, batch.mask, batch.tags):
        assert tensor.shape == (B, T)
    assert batch.mask.dtype == torch.bool
    assert batch.lengths.tolist() == [7, 1, 5]
    assert batch.mask.sum(1).tolist() == [7, 1, 5]
    assert batch.mask[1].tolist() == [True] + [False] * 6
    pad = ~batch.mask
    assert (batch.word_ids[pad] == PAD_ID).all()
    assert (batch.tags[pad] == 0).all()
    assert (batch.casing_ids[pad] == 0).all()
    assert batch.index.tolist() == [3, 2, 0]
    # Distinct types of the batch only, characters trimmed to the longest of them.
    batch_tokens = {t for i in index for t in SENTENCES[i]}
    assert batch.char_ids.shape == (len(batch_tokens), max(len(t) for t in batch_tokens))


def test_make_batch_gathers_the_right_rows(vocab):
    enc = encode(vocab, SENTENCES, TAGS)
    index = np.array([1, 3, 0])
    batch = make_batch(enc, index)
    for b, i in enumerate(index):
        for t, (token, tag) in enumerate(zip(SENTENCES[i], TAGS[i])):
            assert batch.word_ids[b, t] == vocab.word_id(token)
            assert batch.casing_ids[b, t] == casing(token)
            assert batch.tags[b, t] == LABELS.index(tag)
            chars = batch.char_ids[batch.type_index[b, t]]
            assert strip_pad(chars) == vocab.char_ids(token)
    assert batch.word_ids[1, 2] == UNK_ID  # "said" is not in the vocabulary


def test_make_batch_without_tags(vocab):
    batch = make_batch(encode(vocab, SENTENCES), np.array([0]))
    assert batch.tags is None
    moved = batch.to(torch.device("cpu"))
    assert moved.tags is None and torch.equal(moved.word_ids, batch.word_ids)
    assert moved.lengths.device.type == "cpu"


def test_make_batch_allows_more_labels_only_in_partial_sentences(vocab):
    """Sentences 1 and 3 are partially annotated, MISC not among their types: their O
    tokens may be O, B-MISC or I-MISC, their entity tokens only their tag; the other
    sentences allow their tag alone; padding nothing. A batch without a partial sentence
    has no ``allowed`` at all (the ordinary loss)."""
    enc = encode(vocab, SENTENCES, TAGS)
    enc.partial = np.array([False, True, False, True])
    enc.relaxed = np.eye(len(LABELS), dtype=bool)
    enc.relaxed[0] = [t in ("O", "B-MISC", "I-MISC") for t in LABELS]
    assert make_batch(enc, np.array([0, 2])).allowed is None
    assert make_batch(encode(vocab, SENTENCES, TAGS), np.arange(4)).allowed is None
    index = np.array([3, 2, 1])
    batch = make_batch(enc, index)
    assert batch.allowed.shape == (3, 7, len(LABELS)) and batch.allowed.dtype == torch.bool
    for b, i in enumerate(index):
        for t in range(7):
            names = {LABELS[k] for k in batch.allowed[b, t].nonzero().flatten().tolist()}
            if t >= len(TAGS[i]):
                assert names == set()
            elif TAGS[i][t] == "O" and enc.partial[i]:
                assert names == {"O", "B-MISC", "I-MISC"}
            else:
                assert names == {TAGS[i][t]}
    assert torch.equal(batch.to(torch.device("cpu")).allowed, batch.allowed)


def random_sentences(n: int, seed: int = 0) -> list[list[str]]:
    rng = np.random.default_rng(seed)
    words = [f"w{i}" for i in range(50)]
    return [list(rng.choice(words, size=int(rng.integers(1, 41)))) for _ in range(n)]


@pytest.fixture(scope="module")
def many():
    sentences = random_sentences(400)
    vocab = Vocab.build(sentences, ["O"])
    return encode(vocab, sentences)


@pytest.mark.parametrize("shuffle", [False, True])
def test_bucket_batches_cover_every_sentence_once(many, shuffle):
    rng = np.random.default_rng(1)
    batches = list(bucket_batches(many, 16, shuffle=shuffle, rng=rng))
    seen = np.concatenate([b.index for b in batches])
    assert sorted(seen.tolist()) == list(range(len(many)))
    assert all(len(b.index) <= 16 for b in batches)
    assert len(batches) == -(-len(many) // 16)
    for b in batches:
        assert b.lengths.tolist() == many.lengths[b.index].tolist()


def test_unshuffled_batches_are_sorted_by_length(many):
    lengths = np.concatenate([b.lengths.numpy() for b in bucket_batches(many, 16)])
    assert (np.diff(lengths) >= 0).all()


def padding(batches) -> float:
    cells = sum(b.mask.numel() for b in batches)
    tokens = sum(int(b.mask.sum()) for b in batches)
    return (cells - tokens) / tokens


def test_shuffled_batches_have_little_padding(many):
    bucketed = list(bucket_batches(many, 16, shuffle=True, rng=np.random.default_rng(0)))
    rng = np.random.default_rng(0)
    order = rng.permutation(len(many))
    unsorted = [make_batch(many, order[i : i + 16]) for i in range(0, len(many), 16)]
    assert padding(bucketed) < 0.15
    assert padding(unsorted) > 3 * padding(bucketed)
    for b in bucketed:
        assert int(b.lengths.max() - b.lengths.min()) <= 4


def test_shuffle_is_deterministic_with_a_seeded_rng(many):
    def order(seed):
        rng = np.random.default_rng(seed)
        return [b.index.tolist() for b in bucket_batches(many, 16, shuffle=True, rng=rng)]

    assert order(7) == order(7)
    assert order(7) != order(8)
    # Successive epochs from one generator differ.
    rng = np.random.default_rng(7)
    first = [b.index.tolist() for b in bucket_batches(many, 16, shuffle=True, rng=rng)]
    second = [b.index.tolist() for b in bucket_batches(many, 16, shuffle=True, rng=rng)]
    assert first != second


def test_prediction_batches_keep_padding_tight():
    """Unshuffled batches (prediction): every sentence once, and no batch's longest
    sentence is more than 1.5x (+8) its shortest, whatever mix of lengths comes in."""
    rng = np.random.default_rng(0)
    lengths = np.concatenate([rng.integers(1, 15, 500), rng.integers(50, 400, 20)])
    rng.shuffle(lengths)
    chunks = bucket_indices(lengths, 64)
    assert sorted(np.concatenate(chunks).tolist()) == list(range(len(lengths)))
    for chunk in chunks:
        assert 1 <= len(chunk) <= 64
        assert lengths[chunk].max() <= 1.5 * lengths[chunk].min() + 8
    assert len(chunks) < 30  # ...without falling apart into tiny batches


def test_small_prediction_batches_are_not_cut():
    """Up to UNCUT sentences are one batch whatever their lengths (a cut only adds
    time steps there); one more and the length rule cuts again."""
    lengths = np.array([3] * (UNCUT - 1) + [120])
    assert [sorted(c.tolist()) for c in bucket_indices(lengths, 64)] == [list(range(UNCUT))]
    assert max(len(c) for c in bucket_indices(lengths, 8)) == 8  # batch_size still holds
    more = np.append(lengths, 3)
    assert len(bucket_indices(more, 64)) == 2
