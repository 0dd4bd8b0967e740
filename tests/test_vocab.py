"""Vocab: fixed PAD/UNK ids, counting, normalisation, labels, JSON round-trip."""

from __future__ import annotations

import json

import pytest

from tagger.errors import TaggerError
from tagger.vocab import PAD, PAD_ID, UNK, UNK_ID, Vocab

SENTENCES = [
    ["The", "cat", "sat", "in", "1996"],
    ["the", "Cat", "ran", "in", "2004"],
    ["the", "dog", "sat"],
]
LABELS = ["O", "B-PER", "I-PER"]


def test_pad_and_unk_come_first():
    vocab = Vocab.build(SENTENCES, LABELS)
    assert (PAD_ID, UNK_ID) == (0, 1)
    assert vocab.words[:2] == [PAD, UNK]
    assert vocab.chars[:2] == [PAD, UNK]
    assert vocab.labels == LABELS  # labels have no PAD/UNK


def test_counts_lowercase_and_digits_by_default():
    vocab = Vocab.build(SENTENCES, LABELS)
    # the x4, then cat/in/sat/0000 x2 (ties alphabetical), then dog/ran x1
    assert vocab.words[2:] == ["the", "0000", "cat", "in", "sat", "dog", "ran"]
    assert vocab.word_id("THE") == vocab.word_id("the") == 2
    assert vocab.word_id("1789") == vocab.words.index("0000")
    assert vocab.normalize("Route66") == "route00"


def test_min_freq_and_max_size():
    vocab = Vocab.build(SENTENCES, LABELS, min_freq=2)
    assert vocab.words[2:] == ["the", "0000", "cat", "in", "sat"]
    assert vocab.word_id("dog") == UNK_ID
    vocab = Vocab.build(SENTENCES, LABELS, max_size=2)
    assert vocab.words == [PAD, UNK, "the", "0000"]
    vocab = Vocab.build(SENTENCES, LABELS, min_freq=5)
    assert vocab.words == [PAD, UNK]


def test_case_and_digits_kept_when_asked():
    vocab = Vocab.build(SENTENCES, LABELS, lowercase=False, normalize_digits=False)
    assert "The" in vocab.words and "the" in vocab.words and "1996" in vocab.words
    assert vocab.word_id("The") != vocab.word_id("the")
    assert vocab.word_id("THE") == vocab.word_id("the")  # an unknown casing backs off
    assert vocab.word_id("CAT") == vocab.word_id("cat") != vocab.word_id("Cat")
    assert vocab.word_id("1789") == vocab.word_id("ZEBRA") == UNK_ID


def test_unknown_word_and_char_map_to_unk():
    vocab = Vocab.build(SENTENCES, LABELS)
    assert vocab.word_id("zebra") == UNK_ID
    ids = vocab.char_ids("cZ")
    assert ids[0] == vocab.chars.index("c")
    assert ids[1] == UNK_ID
    assert vocab.char_ids("") == []


def test_chars_are_case_sensitive_and_counted_on_raw_tokens():
    vocab = Vocab.build([["Ab", "a1"]], LABELS)
    assert set(vocab.chars[2:]) == {"A", "b", "a", "1"}
    vocab = Vocab.build([["aab"]], LABELS, char_min_freq=2)
    assert vocab.chars == [PAD, UNK, "a"]


def test_vector_forms_counted_under_their_form_and_always_kept():
    forms = {"Zebra": "Zebra", "the": "the", "42": "42", "dog": "dog"}
    vocab = Vocab.build(SENTENCES, LABELS, min_freq=2, vector_forms=forms)
    assert vocab.words[-3:] == ["Zebra", "42", "dog"]
    assert vocab.words.count("the") == 1
    assert vocab.word_id("Zebra") != vocab.word_id("zebra") == UNK_ID
    assert vocab.word_id("42") != vocab.word_id("17")


def test_format_1_looks_up_the_normalised_form_only():
    vocab = Vocab([PAD, UNK, "paris", "Paris"], [PAD, UNK], LABELS, lowercase=False)
    assert vocab.word_id("PARIS") == 2  # lower-cased when the exact form is unknown
    data = vocab.to_dict()
    data["format_version"] = 1
    old = Vocab.from_dict(data)
    assert not old.exact_first and old.word_id("PARIS") == UNK_ID
    assert old.to_dict()["format_version"] == 1


def test_label_ids_and_unknown_label():
    vocab = Vocab.build(SENTENCES, LABELS)
    assert vocab.label_ids(["O", "I-PER", "B-PER"]) == [0, 2, 1]
    with pytest.raises(TaggerError) as err:
        vocab.label_ids(["O", "B-LOC"])
    assert str(err.value) == "label B-LOC is not one the model knows (O, B-PER, I-PER)"


def test_build_is_deterministic():
    assert Vocab.build(SENTENCES, LABELS) == Vocab.build(list(reversed(SENTENCES)), LABELS)


def test_json_round_trip():
    vocab = Vocab.build(SENTENCES, LABELS, lowercase=False, normalize_digits=True)
    restored = Vocab.from_dict(json.loads(json.dumps(vocab.to_dict())))
    assert restored == vocab
    assert restored.lowercase is False and restored.normalize_digits is True
    for word in ["The", "the", "1789", "zebra"]:
        assert restored.word_id(word) == vocab.word_id(word)
    assert restored.char_ids("Cat!") == vocab.char_ids("Cat!")
    assert vocab.to_dict()["format_version"] == 2


def test_wrong_format_version():
    data = Vocab.build(SENTENCES, LABELS).to_dict()
    data["format_version"] = 3
    with pytest.raises(TaggerError) as err:
        Vocab.from_dict(data)
    assert str(err.value) == (
        "vocabulary format version 3 is not supported (this tagger reads versions 1, 2)"
    )
    del data["format_version"]
    with pytest.raises(TaggerError, match="format version None"):
        Vocab.from_dict(data)


def test_missing_key_and_missing_pad():
    data = Vocab.build(SENTENCES, LABELS).to_dict()
    del data["chars"]
    with pytest.raises(TaggerError) as err:
        Vocab.from_dict(data)
    assert str(err.value) == "vocabulary is missing the key 'chars'"
    data = Vocab.build(SENTENCES, LABELS).to_dict()
    data["words"] = data["words"][1:]
    with pytest.raises(TaggerError) as err:
        Vocab.from_dict(data)
    assert str(err.value) == "vocabulary does not start with the PAD and UNK entries"
