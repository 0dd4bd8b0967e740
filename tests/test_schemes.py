"""Tag schemes: parsing, detection, IOB1/IOB2/BIOES conversion, spans."""

from __future__ import annotations

import pytest
from conftest import is_valid_bioes, is_valid_iob2
from hypothesis import given
from hypothesis import strategies as st
from seqeval.metrics.sequence_labeling import get_entities

from tagger import schemes

# ----------------------------------------------------------------- parse_tag


@pytest.mark.parametrize(
    ("tag", "expected"),
    [
        ("O", ("O", None)),
        ("B-PER", ("B", "PER")),
        ("I-LOC", ("I", "LOC")),
        ("E-ORG", ("E", "ORG")),
        ("S-MISC", ("S", "MISC")),
        ("L-PER", ("E", "PER")),  # BILOU spellings
        ("U-PER", ("S", "PER")),
        ("B-WORK-OF-ART", ("B", "WORK-OF-ART")),  # the type may hold dashes
    ],
)
def test_parse_tag_valid(tag, expected):
    assert schemes.parse_tag(tag) == expected


@pytest.mark.parametrize(
    ("tag", "message"),
    [
        ("X-PER", "tag 'X-PER' is not valid: expected O, or B-, I-, E- or S- followed by a type"),
        ("B", "tag 'B' is not valid: expected O, or B-, I-, E- or S- followed by a type"),
        ("PER", "tag 'PER' is not valid: expected O, or B-, I-, E- or S- followed by a type"),
        ("o", "tag 'o' is not valid: expected O, or B-, I-, E- or S- followed by a type"),
        ("", "tag '' is not valid: expected O, or B-, I-, E- or S- followed by a type"),
        ("I-", "tag 'I-' has no entity type after I-"),
        ("B-", "tag 'B-' has no entity type after B-"),
    ],
)
def test_parse_tag_errors(tag, message):
    with pytest.raises(ValueError) as err:
        schemes.parse_tag(tag)
    assert str(err.value) == message


# ----------------------------------------------------------------- detect_scheme


def test_detect_iob2():
    assert schemes.detect_scheme([["B-PER", "I-PER", "O"], ["B-LOC", "B-LOC"]]) == "IOB2"


def test_detect_iob1_mention_opened_by_i():
    assert schemes.detect_scheme([["B-PER", "I-PER"], ["O", "I-LOC", "I-LOC"]]) == "IOB1"


def test_detect_iob1_type_change_inside_i():
    assert schemes.detect_scheme([["I-PER", "I-LOC"]]) == "IOB1"


def test_detect_bioes_and_bilou():
    assert schemes.detect_scheme([["B-PER", "E-PER", "O", "S-LOC"]]) == "BIOES"
    assert schemes.detect_scheme([["O"], ["U-LOC"]]) == "BIOES"
    assert schemes.detect_scheme([["B-PER", "L-PER"]]) == "BIOES"


def test_detect_only_o_and_empty_is_iob2():
    assert schemes.detect_scheme([["O", "O"], []]) == "IOB2"
    assert schemes.detect_scheme([]) == "IOB2"


def test_detect_rejects_invalid_tags():
    with pytest.raises(ValueError, match="X-PER"):
        schemes.detect_scheme([["O", "X-PER"]])


# ----------------------------------------------------------------- conversion


def test_to_iob2_from_iob1_opening_i():
    assert schemes.to_iob2(["I-PER", "I-PER", "O", "I-LOC"]) == ["B-PER", "I-PER", "O", "B-LOC"]


def test_to_iob2_from_iob1_b_between_same_type():
    # IOB1: B- marks a mention directly following another of the same type.
    tags = ["I-PER", "I-PER", "B-PER", "I-PER", "I-LOC"]
    assert schemes.to_iob2(tags) == ["B-PER", "I-PER", "B-PER", "I-PER", "B-LOC"]


def test_to_iob2_type_change_opens_mention():
    assert schemes.to_iob2(["B-PER", "I-LOC"]) == ["B-PER", "B-LOC"]


def test_to_iob2_keeps_iob2():
    tags = ["B-ORG", "I-ORG", "O", "B-PER", "B-PER", "I-PER"]
    assert schemes.to_iob2(tags) == tags


def test_to_iob2_from_bioes_and_bilou():
    bioes = ["B-PER", "I-PER", "E-PER", "S-PER", "O", "S-LOC", "B-ORG", "E-ORG"]
    iob2 = ["B-PER", "I-PER", "I-PER", "B-PER", "O", "B-LOC", "B-ORG", "I-ORG"]
    assert schemes.to_iob2(bioes) == iob2
    bilou = ["B-PER", "L-PER", "U-PER", "U-PER"]
    assert schemes.to_iob2(bilou) == ["B-PER", "I-PER", "B-PER", "B-PER"]


def test_iob2_to_bioes_examples():
    iob2 = ["B-PER", "I-PER", "I-PER", "B-PER", "O", "B-LOC", "B-LOC", "I-LOC", "O"]
    bioes = ["B-PER", "I-PER", "E-PER", "S-PER", "O", "S-LOC", "B-LOC", "E-LOC", "O"]
    assert schemes.iob2_to_bioes(iob2) == bioes
    assert schemes.to_iob2(bioes) == iob2
    assert schemes.convert(iob2, "BIOES") == bioes
    assert schemes.convert(bioes, "IOB2") == iob2


def test_convert_unknown_scheme():
    with pytest.raises(ValueError, match="unknown tag scheme 'IOB1'"):
        schemes.convert(["O"], "IOB1")


def test_conversions_of_empty_sequences():
    assert schemes.to_iob2([]) == []
    assert schemes.iob2_to_bioes([]) == []
    assert schemes.spans([]) == []


# ----------------------------------------------------------------- spans


def test_spans_iob2():
    tags = ["B-PER", "I-PER", "O", "B-LOC", "B-LOC", "I-LOC"]
    assert schemes.spans(tags) == [(0, 2, "PER"), (3, 4, "LOC"), (4, 6, "LOC")]


def test_spans_mention_at_end_and_start():
    assert schemes.spans(["I-ORG"]) == [(0, 1, "ORG")]
    assert schemes.spans(["O", "O", "B-ORG", "I-ORG"]) == [(2, 4, "ORG")]


def test_spans_iob1_and_bioes_give_conlleval_boundaries():
    assert schemes.spans(["I-PER", "I-PER", "B-PER", "O"]) == [(0, 2, "PER"), (2, 3, "PER")]
    assert schemes.spans(["S-PER", "B-LOC", "E-LOC"]) == [(0, 1, "PER"), (1, 3, "LOC")]


def test_label_set_order():
    assert schemes.label_set(["PER", "LOC", "PER"], "IOB2") == [
        "O",
        "B-LOC",
        "I-LOC",
        "B-PER",
        "I-PER",
    ]
    assert schemes.label_set(["LOC"], "BIOES") == ["O", "B-LOC", "I-LOC", "E-LOC", "S-LOC"]


def test_allowed_transitions_iob2():
    assert schemes.allowed_transition(None, "B-PER", "IOB2")
    assert not schemes.allowed_transition(None, "I-PER", "IOB2")
    assert not schemes.allowed_transition("O", "I-PER", "IOB2")
    assert not schemes.allowed_transition("B-LOC", "I-PER", "IOB2")
    assert schemes.allowed_transition("B-PER", "I-PER", "IOB2")
    assert schemes.allowed_transition("I-PER", "I-PER", "IOB2")
    assert schemes.allowed_end("I-PER", "IOB2")


def test_allowed_transitions_bioes():
    assert not schemes.allowed_transition(None, "E-PER", "BIOES")
    assert not schemes.allowed_transition("B-PER", "O", "BIOES")
    assert not schemes.allowed_transition("B-PER", "E-LOC", "BIOES")
    assert schemes.allowed_transition("B-PER", "E-PER", "BIOES")
    assert schemes.allowed_transition("E-PER", "S-LOC", "BIOES")
    assert not schemes.allowed_transition("S-PER", "I-PER", "BIOES")
    assert not schemes.allowed_end("B-PER", "BIOES")
    assert not schemes.allowed_end("I-PER", "BIOES")
    assert schemes.allowed_end("E-PER", "BIOES")
    assert schemes.allowed_end("S-PER", "BIOES")


# ----------------------------------------------------------------- properties

TYPES = ["PER", "LOC", "ORG"]


@st.composite
def iob2_with_spans(draw):
    """A valid IOB2 sequence and the mentions it was built from."""
    pieces = draw(
        st.lists(
            st.one_of(
                st.just(None),
                st.tuples(st.sampled_from(TYPES), st.integers(min_value=1, max_value=4)),
            ),
            max_size=12,
        )
    )
    tags, expected = [], []
    for piece in pieces:
        if piece is None:
            tags.append("O")
        else:
            etype, length = piece
            expected.append((len(tags), len(tags) + length, etype))
            tags += [f"B-{etype}"] + [f"I-{etype}"] * (length - 1)
    return tags, expected


@given(iob2_with_spans())
def test_iob2_bioes_round_trip_is_lossless(case):
    iob2, expected = case
    assert is_valid_iob2(iob2)
    bioes = schemes.iob2_to_bioes(iob2)
    assert len(bioes) == len(iob2)
    assert is_valid_bioes(bioes)
    assert schemes.to_iob2(bioes) == iob2
    assert schemes.spans(iob2) == expected
    assert schemes.spans(bioes) == expected
    assert schemes.to_iob2(iob2) == iob2
    # Single-token mentions become S-, longer ones B- ... E-.
    for start, end, etype in expected:
        if end - start == 1:
            assert bioes[start] == f"S-{etype}"
        else:
            assert (bioes[start], bioes[end - 1]) == (f"B-{etype}", f"E-{etype}")


ANY_IOB_TAG = st.sampled_from(["O", "B-PER", "I-PER", "B-LOC", "I-LOC"])


@given(st.lists(ANY_IOB_TAG, max_size=15))
def test_to_iob2_output_is_valid_and_keeps_seqeval_mentions(tags):
    out = schemes.to_iob2(tags)
    assert len(out) == len(tags)
    assert is_valid_iob2(out)
    assert get_entities(out) == get_entities(tags)
    # spans() counts mentions as seqeval's default (conlleval) mode does.
    assert schemes.spans(tags) == [(s, e + 1, t) for t, s, e in get_entities(tags)]
    assert schemes.to_iob2(out) == out  # idempotent


@given(st.lists(ANY_IOB_TAG, max_size=15))
def test_detect_scheme_iob2_exactly_for_valid_iob2(tags):
    assert (schemes.detect_scheme([tags]) == "IOB2") == is_valid_iob2(tags)
