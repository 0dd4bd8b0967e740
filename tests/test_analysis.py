"""Error analysis: each error kind by hand, one-to-many overlaps, conlleval edge cases,
the report's JSON and text, and its counts against seqeval (random tags, a real model)."""

from __future__ import annotations

import json
import random

import pytest
from conftest import ORGS, PEOPLE, PLACES
from hypothesis import given
from hypothesis import strategies as st
from seqeval.metrics.sequence_labeling import get_entities

from tagger import schemes
from tagger.analysis import (
    KINDS,
    MISSED,
    PAIRED,
    SPURIOUS,
    WRONG_BOTH,
    WRONG_BOUNDARY,
    WRONG_TYPE,
    analyse,
    format_errors,
    match,
)
from tagger.evaluation import score

# Sentence a: every single-sided kind and two paired ones; sentence b: the third paired
# kind beside an exact match.
TOKENS = [
    ["Angela", "Vogt", "of", "the", "Fed", "visited", "New", "York", "City", "on", "Monday"],
    ["Red", "Cross", "staff", "reached", "Paris"],
]
GOLD = [
    ["B-PER", "I-PER", "O", "O", "B-ORG", "O", "B-LOC", "I-LOC", "I-LOC", "O", "O"],
    ["B-ORG", "I-ORG", "O", "O", "B-LOC"],
]
PRED = [
    ["B-ORG", "I-ORG", "O", "O", "O", "O", "B-LOC", "I-LOC", "O", "O", "B-DATE"],
    ["O", "B-LOC", "O", "O", "B-LOC"],
]
CONFIDENCES = [[0.5, 0.75, 0.25], [0.125, 0.875]]  # one per predicted mention


def kinds(report: dict) -> list[str]:
    return [e["kind"] for e in report["errors"]]


def check_accounting(report: dict) -> None:
    """What the one-to-one pairing promises: each mention counted exactly once."""
    counts = {kind: report["counts"][kind]["total"] for kind in KINDS}
    paired = sum(counts[kind] for kind in PAIRED)
    assert report["mentions"]["gold"] == report["correct"] + paired + counts[MISSED]
    assert report["mentions"]["pred"] == report["correct"] + paired + counts[SPURIOUS]
    assert len(report["errors"]) == sum(counts.values())
    matrix = report["confusion"]["matrix"]
    assert sum(sum(row.values()) for row in matrix.values()) == (
        report["correct"] + paired + counts[MISSED] + counts[SPURIOUS]
    )
    assert sum(matrix[SPURIOUS].values()) == counts[SPURIOUS]
    assert sum(row[MISSED] for row in matrix.values()) == counts[MISSED]


def test_every_kind_by_hand():
    report = analyse(TOKENS, GOLD, PRED, sentence_ids=["a", "b"])
    assert report["mentions"] == {"gold": 5, "pred": 5}
    assert report["correct"] == 1  # Paris
    assert report["types"] == ["DATE", "LOC", "ORG", "PER"]
    # In reading order within each sentence.
    assert kinds(report) == [WRONG_TYPE, MISSED, WRONG_BOUNDARY, SPURIOUS, WRONG_BOTH]
    vogt, fed, new_york, monday, cross = report["errors"]
    assert vogt == {
        "kind": WRONG_TYPE,
        "sentence": "a",
        "tokens": TOKENS[0],
        "gold": {"start": 0, "end": 2, "type": "PER", "text": "Angela Vogt"},
        "pred": {"start": 0, "end": 2, "type": "ORG", "text": "Angela Vogt"},
    }
    assert fed["gold"] == {"start": 4, "end": 5, "type": "ORG", "text": "Fed"}
    assert fed["pred"] is None
    assert new_york["gold"]["text"] == "New York City"
    assert new_york["pred"] == {"start": 6, "end": 8, "type": "LOC", "text": "New York"}
    assert monday["gold"] is None
    assert monday["pred"] == {"start": 10, "end": 11, "type": "DATE", "text": "Monday"}
    assert (cross["sentence"], cross["tokens"]) == ("b", TOKENS[1])
    assert (cross["gold"]["text"], cross["pred"]["text"]) == ("Red Cross", "Cross")
    assert report["counts"] == {
        WRONG_TYPE: {"total": 1, "gold": {"PER": 1}, "pred": {"ORG": 1}},
        WRONG_BOUNDARY: {"total": 1, "gold": {"LOC": 1}, "pred": {"LOC": 1}},
        WRONG_BOTH: {"total": 1, "gold": {"ORG": 1}, "pred": {"LOC": 1}},
        MISSED: {"total": 1, "gold": {"ORG": 1}},
        SPURIOUS: {"total": 1, "pred": {"DATE": 1}},
    }
    confusion = report["confusion"]
    assert confusion["rows"] == ["DATE", "LOC", "ORG", "PER", SPURIOUS]
    assert confusion["columns"] == ["DATE", "LOC", "ORG", "PER", MISSED]
    nonzero = {
        (row, col): n for row, cells in confusion["matrix"].items() for col, n in cells.items() if n
    }
    # Paris exact and New York City's boundary error both count LOC -> LOC.
    assert nonzero == {
        ("LOC", "LOC"): 2,
        ("ORG", "LOC"): 1,
        ("ORG", MISSED): 1,
        ("PER", "ORG"): 1,
        (SPURIOUS, "DATE"): 1,
    }
    check_accounting(report)


def test_sentence_ids_default_to_the_index():
    report = analyse(TOKENS, GOLD, PRED)
    assert [e["sentence"] for e in report["errors"]] == ["0", "0", "0", "0", "1"]


def test_frequent_errors_grouped_and_ranked():
    tokens = [["Vogt", "said"], ["Vogt", "left"], ["the", "Fed"], ["the", "Fed"], ["Vogt"]]
    gold = [["B-PER", "O"], ["B-PER", "O"], ["O", "B-ORG"], ["O", "B-ORG"], ["B-PER"]]
    pred = [["B-ORG", "O"], ["B-ORG", "O"], ["O", "O"], ["O", "O"], ["B-ORG"]]
    report = analyse(tokens, gold, pred)
    assert [(f["label"], f["count"]) for f in report["frequent"]] == [
        ('"Vogt" PER→ORG', 3),
        ('"Fed" missed ORG', 2),
    ]
    assert report["frequent"][0] == {
        "kind": WRONG_TYPE,
        "gold_text": "Vogt",
        "gold_type": "PER",
        "pred_text": "Vogt",
        "pred_type": "ORG",
        "count": 3,
        "label": '"Vogt" PER→ORG',
    }
    labels = {f["label"] for f in analyse(TOKENS, GOLD, PRED)["frequent"]}
    assert labels == {
        '"Angela Vogt" PER→ORG',
        '"Fed" missed ORG',
        '"New York City" LOC→"New York" LOC',
        '"Monday" spurious DATE',
        '"Red Cross" ORG→"Cross" LOC',
    }


# ---------------------------------------------------------------- one-to-many overlaps


def test_split_prediction_pairs_one_part_the_rest_is_spurious():
    tokens = [["New", "York", "City"]]
    report = analyse(tokens, [["B-LOC", "I-LOC", "I-LOC"]], [["B-LOC", "I-LOC", "B-LOC"]])
    assert kinds(report) == [WRONG_BOUNDARY, SPURIOUS]
    boundary, spurious = report["errors"]
    assert (boundary["gold"]["text"], boundary["pred"]["text"]) == ("New York City", "New York")
    assert spurious["gold"] is None and spurious["pred"]["text"] == "City"
    check_accounting(report)


def test_prediction_over_two_gold_mentions_pairs_the_larger_overlap():
    tokens = [["Acme", "Corp", "Berlin"]]
    report = analyse(tokens, [["B-ORG", "I-ORG", "B-LOC"]], [["B-ORG", "I-ORG", "I-ORG"]])
    assert kinds(report) == [WRONG_BOUNDARY, MISSED]
    assert report["errors"][0]["gold"]["text"] == "Acme Corp"
    assert report["errors"][1]["gold"]["text"] == "Berlin"
    check_accounting(report)


def test_overlap_ties_prefer_the_same_type_then_the_earlier_gold():
    tokens = [["a", "b", "c", "d"]]
    gold = [["B-PER", "I-PER", "B-ORG", "I-ORG"]]  # [0,2) PER, [2,4) ORG
    same_type = analyse(tokens, gold, [["O", "B-ORG", "I-ORG", "O"]])  # [1,3): 1 token each
    assert [(e["kind"], e["gold"]["type"]) for e in same_type["errors"]] == [
        (MISSED, "PER"),
        (WRONG_BOUNDARY, "ORG"),
    ]
    other_type = analyse(tokens, gold, [["O", "B-LOC", "I-LOC", "O"]])
    assert [(e["kind"], e["gold"]["type"]) for e in other_type["errors"]] == [
        (WRONG_BOTH, "PER"),
        (MISSED, "ORG"),
    ]


def test_match_is_one_to_one_and_ordered():
    gold = [(0, 3, "LOC"), (5, 6, "PER")]
    pred = [(0, 2, "LOC"), (2, 3, "LOC"), (5, 6, "PER"), (8, 9, "ORG")]
    assert match(gold, pred) == [(0, 0), (1, 2), (None, 1), (None, 3)]
    assert match([], pred) == [(None, 0), (None, 1), (None, 2), (None, 3)]
    assert match(gold, []) == [(0, None), (1, None)]


# ---------------------------------------------------------------- tag edge cases


def test_i_after_o_opens_a_mention_as_in_conlleval():
    tokens = [["x", "John", "Smith"]]
    report = analyse(tokens, [["O", "B-PER", "I-PER"]], [["O", "I-PER", "I-PER"]])
    assert report["correct"] == 1 and report["errors"] == []
    # A type change inside a run of I- tags starts a new mention, as in conlleval.
    report = analyse(tokens, [["O", "B-PER", "I-PER"]], [["O", "I-PER", "I-LOC"]])
    assert kinds(report) == [WRONG_BOUNDARY, SPURIOUS]
    assert report["errors"][1]["pred"] == {"start": 2, "end": 3, "type": "LOC", "text": "Smith"}


def test_other_schemes_are_read_as_their_spans():
    tokens = [["John", "Smith", "Paris"]]
    report = analyse(tokens, [["B-PER", "E-PER", "S-LOC"]], [["I-PER", "I-PER", "I-LOC"]])
    assert report["correct"] == 2 and report["errors"] == []


def test_empty_inputs():
    for tokens, tags in (([], []), ([[]], [[]]), ([["a", "b"]], [["O", "O"]])):
        report = analyse(tokens, tags, tags, confidences=[[] for _ in tags])
        assert report["mentions"] == {"gold": 0, "pred": 0}
        assert report["correct"] == 0 and report["errors"] == [] and report["frequent"] == []
        assert report["types"] == []
        assert report["counts"][MISSED] == {"total": 0, "gold": {}}
        assert report["confusion"] == {
            "rows": [SPURIOUS],
            "columns": [MISSED],
            "matrix": {SPURIOUS: {MISSED: 0}},
        }
        text = format_errors(report)
        assert "0 gold mentions, 0 predicted, 0 correct, 0 errors" in text
        assert "Most frequent" not in text


def test_mismatched_inputs_are_refused():
    with pytest.raises(ValueError, match="2 token lists but 1 gold"):
        analyse(TOKENS, GOLD[:1], PRED)
    with pytest.raises(ValueError, match="2 token lists but 3 sentence_ids"):
        analyse(TOKENS, GOLD, PRED, sentence_ids=["a", "b", "c"])
    with pytest.raises(ValueError, match="sentence 1: 5 tokens, 5 gold tags, 4 predicted"):
        analyse(TOKENS, GOLD, [PRED[0], PRED[1][:4]])
    with pytest.raises(ValueError, match="sentence 0: 3 predicted mentions but 2 confidences"):
        analyse(TOKENS, GOLD, PRED, confidences=[[0.5, 0.5], [0.5, 0.5]])
    with pytest.raises(ValueError, match="not valid"):
        analyse([["a"]], [["X-PER"]], [["O"]])


# ---------------------------------------------------------------- confidences, JSON, text


def test_confidences_follow_their_predicted_mentions():
    report = analyse(TOKENS, GOLD, PRED, confidences=CONFIDENCES)
    found = {e["kind"]: e["pred"] for e in report["errors"]}
    assert found[WRONG_TYPE]["confidence"] == 0.5  # Angela Vogt, first predicted mention
    assert found[WRONG_BOUNDARY]["confidence"] == 0.75  # New York
    assert found[SPURIOUS]["confidence"] == 0.25  # Monday
    assert found[WRONG_BOTH]["confidence"] == 0.125  # Cross; Paris (0.875) is correct
    assert found[MISSED] is None
    without = analyse(TOKENS, GOLD, PRED)
    assert all("confidence" not in e["pred"] for e in without["errors"] if e["pred"])


def test_report_survives_a_json_round_trip():
    report = analyse(TOKENS, GOLD, PRED, confidences=CONFIDENCES, sentence_ids=["a", "b"])
    assert json.loads(json.dumps(report)) == report


def test_format_errors_lines():
    report = analyse(TOKENS, GOLD, PRED)
    lines = format_errors(report, top=2).splitlines()
    assert lines[:8] == [
        "5 gold mentions, 5 predicted, 1 correct, 5 errors",
        "",
        "Errors by kind",
        "  wrong type                   1  gold PER 1; predicted ORG 1",
        "  wrong boundary               1  LOC 1",
        "  wrong type and boundary      1  gold ORG 1; predicted LOC 1",
        "  missed                       1  ORG 1",
        "  spurious                     1  DATE 1",
    ]
    assert lines[8:16] == [
        "",
        "Confusion (rows: gold type, columns: predicted type)",
        "  gold \\ predicted  DATE  LOC  ORG  PER  missed",
        "  DATE                 0    0    0    0       0",
        "  LOC                  0    2    0    0       0",
        "  ORG                  0    1    0    0       1",
        "  PER                  0    0    1    0       0",
        "  spurious             1    0    0    0       0",
    ]
    # Five errors seen once each: ties ranked by kind, then label.
    assert lines[16:] == [
        "",
        "Most frequent errors (top 2 of 5)",
        '  "Angela Vogt" PER→ORG ×1',
        '  "New York City" LOC→"New York" LOC ×1',
    ]


# ---------------------------------------------------------------- against seqeval

TAG = st.sampled_from(["O", "O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-ORG", "I-ORG"])


@given(
    st.lists(
        st.integers(min_value=0, max_value=12).flatmap(
            lambda n: st.tuples(
                st.lists(TAG, min_size=n, max_size=n), st.lists(TAG, min_size=n, max_size=n)
            )
        ),
        max_size=6,
    )
)
def test_counts_agree_with_seqeval_on_random_tags(sentences):
    gold = [g for g, _ in sentences]
    pred = [p for _, p in sentences]
    tokens = [[f"w{i}" for i in range(len(g))] for g in gold]
    report = analyse(tokens, gold, pred)
    check_accounting(report)
    gold_ents = {(i, *e) for i, tags in enumerate(gold) for e in get_entities(tags)}
    pred_ents = {(i, *e) for i, tags in enumerate(pred) for e in get_entities(tags)}
    assert report["mentions"] == {"gold": len(gold_ents), "pred": len(pred_ents)}
    assert report["correct"] == len(gold_ents & pred_ents)
    # Each type's row (less spurious) sums to its gold mentions, its column to its predictions.
    matrix = report["confusion"]["matrix"]
    for etype in report["types"]:
        assert sum(matrix[etype].values()) == sum(e[1] == etype for e in gold_ents)
        assert sum(row[etype] for row in matrix.values()) == sum(e[1] == etype for e in pred_ents)


def renamed(
    tokens: list[list[str]], gold: list[list[str]], seed: int
) -> tuple[list[list[str]], list[list[str]]]:
    """Sentences with every gold mention's name replaced by a random one, of any type or
    unseen, and gold tags that keep the mention's type: the model goes by the name, so
    it errs in type and boundaries, as it never does on the tiny corpus itself."""
    rng = random.Random(seed)
    names = [n.split() for n in PEOPLE + PLACES + ORGS] + [["Zork"], ["Blat", "Quux", "Corp"]]
    out_tokens, out_tags = [], []
    for words, tags in zip(tokens, gold):
        new_words, new_tags, last = [], [], 0
        for start, end, etype in schemes.spans(tags):
            new_words += words[last:start]
            new_tags += tags[last:start]
            name = rng.choice(names)
            new_words += name
            new_tags += [f"B-{etype}"] + [f"I-{etype}"] * (len(name) - 1)
            last = end
        out_tokens.append(new_words + words[last:])
        out_tags.append(new_tags + tags[last:])
    return out_tokens, out_tags


def test_real_model_errors_agree_with_score(tiny_corpus, tagger_model):
    from tagger.data import decoded_tags, load_data

    test = load_data(str(tiny_corpus))["test"]
    tokens = test["tokens"]
    gold = [schemes.to_iob2(tags) for tags in decoded_tags(test)]
    # The model is (nearly) perfect on its test split, so errors are provoked: names
    # lower-cased (missed), gold without mentions (spurious), names of other types.
    cases = [
        (tokens, gold),
        ([[w.lower() for w in s] for s in tokens], gold),
        (tokens, [["O"] * len(s) for s in gold]),
        *(renamed(tokens, gold, seed) for seed in range(4)),
    ]
    seen = set()
    for words, truth in cases:
        pred = tagger_model.predict(words)
        found = tagger_model.predict_spans(words)
        # What lets a caller pass predict_spans' scores as the confidences.
        assert [[(e["start"], e["end"], e["label"]) for e in s] for s in found] == [
            schemes.spans(p) for p in pred
        ]
        confidences = [[e["score"] for e in s] for s in found]
        report = analyse(words, truth, pred, confidences=confidences)
        check_accounting(report)
        json.dumps(report)
        seen.update(kinds(report))

        scores = score(truth, pred)
        matrix = report["confusion"]["matrix"]
        assert report["mentions"]["gold"] == scores["support"]
        for etype, row in scores["per_type"].items():
            true_positives = round(row["recall"] * row["support"])
            # The diagonal holds the exact matches and the same-type boundary errors.
            boundary = report["counts"][WRONG_BOUNDARY]["gold"].get(etype, 0)
            assert matrix[etype][etype] - boundary == true_positives
            assert sum(matrix[etype].values()) == row["support"]
            if row["precision"]:
                predicted = sum(cells[etype] for cells in matrix.values())
                assert row["precision"] == pytest.approx(true_positives / predicted)
        if report["mentions"]["pred"]:
            assert scores["precision"] == pytest.approx(
                report["correct"] / report["mentions"]["pred"]
            )
        if report["mentions"]["gold"]:
            assert scores["recall"] == pytest.approx(report["correct"] / report["mentions"]["gold"])
        for error in report["errors"]:
            if error["pred"] is not None:
                assert 0.0 <= error["pred"]["confidence"] <= 1.0
    # Boundary errors are too rare in a model this small to be sure of one; the
    # hand-built cases above cover them.
    assert {WRONG_TYPE, MISSED, SPURIOUS} <= seen
