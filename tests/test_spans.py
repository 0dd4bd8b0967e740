"""Span annotation files (doccano, Label Studio, Prodigy, tagger predict) read as IOB2."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, conll_text, make_sentences

from tagger import data, schemes
from tagger.errors import TaggerError
from tagger.spans import detect_format, read_span_docs, read_spans

TEXT = "EU rejects German call to boycott British lamb."
TOKENS = ["EU", "rejects", "German", "call", "to", "boycott", "British", "lamb", "."]
TAGS = ["B-ORG", "O", "B-MISC", "O", "O", "O", "B-MISC", "O", "O"]

# doccano's "Export" docs (sequence labeling, JSONL): text plus [start, end, label] triples.
# https://doccano.github.io/doccano/tutorial/#export-data ("JSONL" for sequence labeling)
DOCCANO = {
    "id": 1,
    "text": TEXT,
    "label": [[0, 2, "ORG"], [11, 17, "MISC"], [34, 41, "MISC"]],
    "Comments": [],
}
# Newer doccano exports (relation-capable projects): entities with *_offset keys, as in
# https://doccano.github.io/doccano/tutorial/#import-dataset ("Sequence Labeling / relation")
DOCCANO_ENTITIES = {
    "id": 2,
    "text": TEXT,
    "entities": [
        {"id": 10, "label": "ORG", "start_offset": 0, "end_offset": 2},
        {"id": 11, "label": "MISC", "start_offset": 11, "end_offset": 17},
        {"id": 12, "label": "MISC", "start_offset": 34, "end_offset": 41},
    ],
    "relations": [],
    "Comments": [],
}


def _ls_result(start: int, end: int, label: str, text: str = TEXT) -> dict:
    """One Label Studio region, as in its "Export annotations" JSON format."""
    return {
        "value": {"start": start, "end": end, "text": text[start:end], "labels": [label]},
        "id": f"r{start}",
        "from_name": "label",
        "to_name": "text",
        "type": "labels",
        "origin": "manual",
    }


# https://labelstud.io/guide/export#JSON and https://labelstud.io/guide/task_format:
# Label Studio's "Export annotations" JSON format: an array of tasks with data.text and
# annotations[*].result[*].value; the cancelled (skipped) annotation comes last here and
# must be ignored, and a task without annotations is not training data.
LABEL_STUDIO = [
    {
        "id": 7,
        "data": {"text": TEXT},
        "annotations": [
            {
                "id": 1,
                "completed_by": 1,
                "result": [_ls_result(0, 2, "ORG"), _ls_result(11, 17, "MISC")]
                + [_ls_result(34, 41, "MISC")],
                "was_cancelled": False,
                "ground_truth": False,
                "lead_time": 4.2,
            },
            {
                "id": 2,
                "completed_by": 2,
                "result": [_ls_result(0, 2, "LOC")],
                "was_cancelled": True,
            },
        ],
        "predictions": [],
        "meta": {},
        "project": 1,
    },
    {"id": 8, "data": {"text": "Unlabelled."}, "annotations": [], "predictions": []},
]

# https://prodi.gy/docs/api-interfaces#ner_manual:
# Prodigy's "Annotation task formats" for ner_manual: text, tokens (text, start, end, id,
# ws) and spans (start, end, label, token_start, token_end), answer. The tokens differ from
# spaCy's ("York-based" is one token) to show that they are used as given.
PRODIGY = {
    "text": "New York-based Acme",
    "tokens": [
        {"text": "New", "start": 0, "end": 3, "id": 0, "ws": True},
        {"text": "York-based", "start": 4, "end": 14, "id": 1, "ws": True},
        {"text": "Acme", "start": 15, "end": 19, "id": 2, "ws": False},
    ],
    "spans": [{"start": 15, "end": 19, "token_start": 2, "token_end": 2, "label": "ORG"}],
    "_input_hash": 1,
    "_task_hash": 2,
    "answer": "accept",
}
# `tagger predict --format jsonl` output (tagger/predict.py: predict_lines).
TAGGER = {
    "text": TEXT,
    "entities": [
        {"text": "EU", "label": "ORG", "start": 0, "end": 2},
        {"text": "German", "label": "MISC", "start": 11, "end": 17},
        {"text": "British", "label": "MISC", "start": 34, "end": 41},
    ],
}


def write_jsonl(path: Path, records: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def pairs(sentences) -> list[tuple[list[str], list[str]]]:
    return [(s.tokens, s.tags) for s in sentences]


def error_message(path, **kwargs) -> str:
    with pytest.raises(TaggerError) as info:
        read_spans(path, **kwargs)
    return str(info.value)


def error_line(path, **kwargs) -> str:
    message = error_message(path, **kwargs)
    assert "\n" not in message
    return message


# --------------------------------------------------------------------------- formats


@pytest.mark.parametrize("record", [DOCCANO, DOCCANO_ENTITIES, TAGGER], ids=["label", "ent", "tg"])
def test_jsonl_formats_read_into_tokens_and_tags(tmp_path, record):
    path = write_jsonl(tmp_path / "a.jsonl", [record])
    [sentence] = read_spans(path)
    assert (sentence.tokens, sentence.tags) == (TOKENS, TAGS)
    assert sentence.origin == f"{path}:1"


def test_label_studio_takes_last_annotation_not_cancelled(tmp_path):
    path = tmp_path / "export.json"
    path.write_text(json.dumps(LABEL_STUDIO, indent=2))
    notes: list[str] = []
    [sentence] = read_spans(path, notes=notes)
    assert (sentence.tokens, sentence.tags) == (TOKENS, TAGS)
    assert sentence.origin == f"{path} task 7"
    assert notes == [
        f"{path}: 1 task without an annotation (or only cancelled ones) skipped",
        f"{path}: 1 task: took the last non-cancelled annotation (task 7: annotation 1 of 2)",
    ]


def test_label_studio_note_counts_tasks_with_several_annotations(tmp_path):
    task = json.loads(json.dumps(LABEL_STUDIO[0]))
    second = {**task["annotations"][0], "id": 3, "result": [_ls_result(0, 2, "LOC")]}
    task["annotations"].append(second)  # two annotators: the last one wins
    other = {**task, "id": 9}
    path = tmp_path / "export.json"
    path.write_text(json.dumps([task, other]))
    notes: list[str] = []
    sentences = read_spans(path, notes=notes)
    assert [s.tags[0] for s in sentences] == ["B-LOC", "B-LOC"]
    assert notes == [
        f"{path}: 2 tasks: took the last non-cancelled annotation (task 7: annotation 3 of 3 ...)"
    ]


def test_prodigy_tokens_are_used_as_given(tmp_path):
    rejected = {**PRODIGY, "answer": "reject"}
    ignored = {**PRODIGY, "answer": "ignore"}
    path = write_jsonl(tmp_path / "p.jsonl", [PRODIGY, rejected, ignored])
    notes: list[str] = []
    assert pairs(read_spans(path, notes=notes)) == [
        (["New", "York-based", "Acme"], ["O", "O", "B-ORG"])
    ]
    assert notes == [f"{path}: 2 rejected/ignored Prodigy answers skipped"]


def test_prodigy_tokens_are_one_sentence_as_the_tool_segmented_them(tmp_path):
    # The sentencizer would split after "Oslo ."; a record with its own tokens is kept
    # as one sentence, as CoNLL -> JSONL -> CoNLL needs.
    words = ["Mary", "lives", "in", "Oslo", ".", "She", "likes", "it", "."]
    text, tokens, at = " ".join(words), [], 0
    for i, word in enumerate(words):
        tokens.append({"text": word, "start": at, "end": at + len(word), "id": i, "ws": True})
        at += len(word) + 1
    record = {"text": text, "tokens": tokens, "spans": [{"start": 14, "end": 18, "label": "LOC"}]}
    path = write_jsonl(
        tmp_path / "p.jsonl", [record, {k: v for k, v in record.items() if k != "tokens"}]
    )
    one, *split = read_spans(path)
    assert (one.tokens, one.tags) == (words, ["O", "O", "O", "B-LOC"] + ["O"] * 5)
    assert [s.tokens for s in split] == [words[:5], words[5:]]
    assert (one.doc, split[0].doc, split[1].doc) == (0, 1, 1)


def test_prodigy_without_tokens_is_tokenized_by_spacy(tmp_path):
    record = {k: v for k, v in PRODIGY.items() if k != "tokens"}
    path = write_jsonl(tmp_path / "p.jsonl", [record])
    assert pairs(read_spans(path)) == [
        (["New", "York", "-", "based", "Acme"], ["O"] * 4 + ["B-ORG"])
    ]


def test_prodigy_tokens_that_do_not_spell_the_text(tmp_path):
    tokens = [dict(t) for t in PRODIGY["tokens"]]
    tokens[1]["start"] = 5
    path = write_jsonl(tmp_path / "p.jsonl", [{**PRODIGY, "tokens": tokens}])
    assert error_line(path) == (
        f"{path}:1: the record's tokens do not spell its text: token 1 'York-based' "
        f"does not match [5, 14)"
    )


def test_record_splits_into_sentences_with_spans_kept_whole(tmp_path):
    text = "Mary lives in Oslo. She likes it."
    record = {"text": text, "label": [[0, 4, "PER"], [14, 18, "LOC"]]}
    path = write_jsonl(tmp_path / "a.jsonl", [record])
    sentences = read_spans(path)
    assert pairs(sentences) == [
        (["Mary", "lives", "in", "Oslo", "."], ["B-PER", "O", "O", "B-LOC", "O"]),
        (["She", "likes", "it", "."], ["O"] * 4),
    ]
    assert [s.origin for s in sentences] == [f"{path}:1", f"{path}:1 sentence 2"]
    # A sentencizer boundary inside a span is ignored: the entity is never cut in two.
    record = {"text": "We met Yahoo! Inc staff.", "label": [[7, 17, "ORG"]]}
    path = write_jsonl(tmp_path / "b.jsonl", [record])
    assert pairs(read_spans(path)) == [
        (
            ["We", "met", "Yahoo", "!", "Inc", "staff", "."],
            ["O", "O", "B-ORG", "I-ORG", "I-ORG", "O", "O"],
        )
    ]


def test_records_are_docs_with_entities_and_documents(tmp_path):
    # Each record is a document (Sentence.doc, kept whole by --dev-fraction): its place
    # among the records, or meta.doc where tagger convert wrote the CoNLL document.
    two = {"text": "Mary lives in Oslo. She likes it.", "label": [[14, 18, "LOC"]]}
    path = write_jsonl(tmp_path / "a.jsonl", [DOCCANO, two, DOCCANO])
    [a, b] = read_span_docs(path)[:2]
    assert [(e.text, e.label_) for e in b.doc.ents] == [("Oslo", "LOC")]
    assert (a.origin, a.number, b.origin, b.number) == (f"{path}:1", 0, f"{path}:2", 1)
    assert [s.doc for s in read_spans(path)] == [0, 1, 1, 2]
    tokens = [{"text": "Oslo", "start": 0, "end": 4, "id": 0, "ws": False}]
    record = {"text": "Oslo", "tokens": tokens, "spans": [], "meta": {"doc": 5}}
    path = write_jsonl(tmp_path / "p.jsonl", [record, {**record, "meta": {"doc": "x"}}, record])
    assert [s.doc for s in read_spans(path)] == [5, 1, 5]


def test_whitespace_tokens_are_left_out_as_prediction_does(tmp_path):
    record = {"text": "Visit  New York now", "label": [[7, 15, "LOC"]]}
    path = write_jsonl(tmp_path / "a.jsonl", [record])
    assert pairs(read_spans(path)) == [
        (["Visit", "New", "York", "now"], ["O", "B-LOC", "I-LOC", "O"])
    ]


# --------------------------------------------------------------------------- detection


@pytest.mark.parametrize(
    ("record", "fmt"),
    [
        (DOCCANO, "doccano"),
        (DOCCANO_ENTITIES, "doccano"),
        (LABEL_STUDIO[0], "label-studio"),
        (PRODIGY, "prodigy"),
        (TAGGER, "tagger"),
        ({"text": "x", "entities": []}, "tagger"),
    ],
)
def test_detect_format(record, fmt):
    assert detect_format(record, "f:1") == fmt


def test_forced_format_that_does_not_fit(tmp_path):
    path = write_jsonl(tmp_path / "a.jsonl", [DOCCANO])
    assert (
        error_line(path, fmt="prodigy") == f"{path}:1: not a prodigy record: no list under 'spans'"
    )
    assert pairs(read_spans(path, fmt="doccano")) == [(TOKENS, TAGS)]


def test_format_is_fixed_by_the_first_record(tmp_path):
    path = write_jsonl(tmp_path / "a.jsonl", [DOCCANO, DOCCANO_ENTITIES, TAGGER])
    assert error_line(path) == f"{path}:3: not a doccano record: a span has no 'start_offset' key"


def test_unknown_format_and_mode_names(tmp_path):
    path = write_jsonl(tmp_path / "a.jsonl", [DOCCANO])
    assert "unknown span format 'brat'" in error_line(path, fmt="brat")
    assert "misaligned must be one of error, expand, contract, drop" in error_line(
        path, misaligned="move"
    )


# --------------------------------------------------------------------------- misaligned

MISALIGNED = {
    "text": "John Smith lives in Paris, France. He works for Acme Corp.",
    "label": [[0, 10, "PER"], [20, 27, "LOC"], [49, 58, "ORG"]],
}


def test_misaligned_span_is_an_error_naming_it_and_counting_the_rest(tmp_path):
    also = {"text": "Berlin!", "label": [[0, 3, "LOC"]]}
    path = write_jsonl(tmp_path / "a.jsonl", [MISALIGNED, DOCCANO, also])
    assert error_message(path).splitlines() == [
        f"{path}:1: span [20, 27) 'Paris, ' does not line up with token boundaries "
        "(nearest: [20, 26) 'Paris,')",
        f"{path}:1: span [49, 58) 'cme Corp.' does not line up with token boundaries "
        "(nearest: [53, 58) 'Corp.')",
        f"{path}:3: span [0, 3) 'Ber' does not line up with token boundaries "
        "(nearest: [0, 6) 'Berlin')",
        f"{path}: 3 problems, nothing read (3 misaligned: --misaligned "
        "expand|contract|drop chooses what to do instead)",
    ]
    one = write_jsonl(tmp_path / "one.jsonl", [also])
    assert error_line(one) == (
        f"{one}:1: span [0, 3) 'Ber' does not line up with token boundaries "
        "(nearest: [0, 6) 'Berlin'); --misaligned expand|contract|drop chooses what to do instead"
    )


def test_every_bad_record_and_span_is_one_line_and_nothing_is_read(tmp_path):
    records = [
        {"text": "I flew to Paris, France last May.", "label": [[10, 17, "LOC"]]},
        {"text": "Angela Merkel met Obama.", "label": [[0, 13, "PER"], [7, 13, "PER"]]},
        {"text": "Shares of Siemens rose.", "label": [[10, 40, "ORG"]]},
        {"text": "Nothing here.", "label": [[3, 3, "MISC"]]},
        {"text": "Bonn is nice.", "labels": [[0, 4, "LOC"]]},
        DOCCANO,
    ]
    path = write_jsonl(tmp_path / "bad.jsonl", records)
    lines = error_message(path).splitlines()
    assert [line.split(": ")[0] for line in lines] == [f"{path}:{n}" for n in range(1, 6)] + [
        str(path)
    ]
    assert "does not line up" in lines[0] and "overlap" in lines[1]
    assert "out of range" in lines[2] and "empty span" in lines[3]
    assert "unknown record shape" in lines[4]
    assert lines[5] == (
        f"{path}: 5 problems, nothing read (1 misaligned: --misaligned "
        "expand|contract|drop chooses what to do instead)"
    )
    many = write_jsonl(tmp_path / "many.jsonl", [records[3]] * 25)
    lines = error_message(many).splitlines()
    assert len(lines) == 22 and lines[20] == "... and 5 more"


def test_one_misaligned_span_has_no_count(tmp_path):
    path = write_jsonl(tmp_path / "a.jsonl", [{"text": "Berlin!", "label": [[0, 3, "LOC"]]}])
    assert error_line(path) == (
        f"{path}:1: span [0, 3) 'Ber' does not line up with token boundaries "
        f"(nearest: [0, 6) 'Berlin'); --misaligned expand|contract|drop chooses what to do instead"
    )


SENT1 = ["John", "Smith", "lives", "in", "Paris", ",", "France", "."]
SENT2 = ["He", "works", "for", "Acme", "Corp."]


@pytest.mark.parametrize(
    ("mode", "tags1", "tags2"),
    [
        (
            "expand",
            ["B-PER", "I-PER", "O", "O", "B-LOC", "I-LOC", "O", "O"],
            ["O"] * 3 + ["B-ORG", "I-ORG"],
        ),
        (
            "contract",
            ["B-PER", "I-PER", "O", "O", "B-LOC", "I-LOC", "O", "O"],
            ["O"] * 4 + ["B-ORG"],
        ),
        ("drop", ["B-PER", "I-PER"] + ["O"] * 6, ["O"] * 5),
    ],
)
def test_misaligned_modes(tmp_path, mode, tags1, tags2):
    path = write_jsonl(tmp_path / "a.jsonl", [MISALIGNED])
    notes: list[str] = []
    assert pairs(read_spans(path, misaligned=mode, notes=notes)) == [(SENT1, tags1), (SENT2, tags2)]
    done = {"expand": "expanded to token boundaries", "contract": "contracted to token boundaries"}
    assert notes == [f"{path}: 2 misaligned spans {done.get(mode, 'dropped')}"]


def test_contract_that_keeps_no_token_is_an_error(tmp_path):
    path = write_jsonl(tmp_path / "a.jsonl", [{"text": "Berlin!", "label": [[0, 3, "LOC"]]}])
    assert error_line(path, misaligned="contract") == (
        f"{path}:1: span [0, 3) 'Ber' LOC holds no whole token "
        f"(--misaligned contract cannot keep it; drop it or fix it)"
    )


def test_expand_that_makes_spans_overlap_is_an_error(tmp_path):
    record = {"text": "Foo-bar baz", "label": [[0, 2, "A"], [2, 3, "B"]]}
    path = write_jsonl(tmp_path / "a.jsonl", [record])
    assert "overlap once moved to token boundaries (--misaligned expand)" in error_line(
        path, misaligned="expand"
    )


# --------------------------------------------------------------------------- bad records


@pytest.mark.parametrize(
    ("record", "message"),
    [
        (
            {"text": TEXT, "label": [[0, 17, "ORG"], [11, 17, "MISC"]]},
            "spans [0, 17) 'EU rejects German' ORG and [11, 17) 'German' MISC overlap "
            "(nested or overlapping spans cannot become IOB2 tags)",
        ),
        (
            {"text": TEXT, "label": [[34, 99, "MISC"]]},
            "span [34, 99) MISC is out of range (the text has 47 characters)",
        ),
        ({"text": TEXT, "label": [[-1, 2, "ORG"]]}, "span [-1, 2) ORG is out of range"),
        ({"text": TEXT, "label": [[5, 5, "ORG"]]}, "empty span [5, 5) ORG (start >= end)"),
        ({"text": TEXT, "label": [[6, 2, "ORG"]]}, "empty span [6, 2) ORG (start >= end)"),
        ({"label": [[0, 2, "ORG"]]}, "record has no text"),
        ({"text": 5, "label": []}, "record has no text (no string under 'text')"),
        ({"text": "", "label": [[0, 1, "ORG"]]}, "span [0, 1) ORG is out of range"),
        (
            {"text": TEXT, "labels": []},
            "unknown record shape: no 'label', 'entities', 'spans' or 'annotations' key "
            "(keys: text, labels)",
        ),
        ({"text": TEXT, "label": [["0", 2, "ORG"]]}, "span offsets must be integers"),
        ({"text": TEXT, "label": [[0, 2, "B ORG"]]}, "span label 'B ORG' contains whitespace"),
        ({"text": TEXT, "label": ["pos"]}, "doccano 'label' must hold [start, end, label] triples"),
        ([1, 2], "expected a JSON object, found list"),
    ],
)
def test_bad_record_is_one_line_with_file_and_line(tmp_path, record, message):
    path = write_jsonl(tmp_path / "a.jsonl", [DOCCANO, record])
    line = error_line(path)
    assert line.startswith(f"{path}:2: ")
    assert message in line


def test_invalid_json_names_the_line(tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_text(json.dumps(DOCCANO) + "\n\n" + '{"text": "x", "label": [}\n')
    assert error_line(path) == f"{path}:3: invalid JSON: Expecting value (column 25)"
    array = tmp_path / "b.json"
    array.write_text('[\n  {"id": 1,\n   "data": }\n]\n')
    assert error_line(array) == f"{array}:3: invalid JSON: Expecting value (column 12)"


def test_label_studio_errors_name_the_task(tmp_path):
    task = json.loads(json.dumps(LABEL_STUDIO[0]))
    task["annotations"][0]["result"][0]["value"]["end"] = 500
    untitled = {k: v for k, v in task.items() if k != "id"}
    path = tmp_path / "export.json"
    path.write_text(json.dumps([task]))
    assert error_line(path).startswith(f"{path} task 7: span [0, 500) ORG is out of range")
    path.write_text(json.dumps([LABEL_STUDIO[1], untitled]))
    assert error_line(path).startswith(f"{path} task #2: span [0, 500) ORG")


def test_span_text_that_the_offsets_do_not_select(tmp_path):
    # Label Studio counts offsets in UTF-16 units, so they drift after an emoji
    # (HumanSignal/label-studio issue 1347): caught by the region's own "text".
    text = "\U0001f4a9This is an annotation."
    task = {
        "id": 3,
        "data": {"text": text},
        "annotations": [{"result": [_ls_result(13, 23, "X", " " + text)], "was_cancelled": False}],
    }
    path = tmp_path / "export.json"
    path.write_text(json.dumps([task]))
    assert error_line(path) == (
        f"{path} task 3: span [13, 23) X is 'annotation' in the export but 'nnotation.' "
        f"in the text (offsets counted in UTF-16 units?)"
    )


def test_blank_text_yields_no_sentence(tmp_path):
    # `tagger predict` writes {"text": "", "entities": []} for a blank input line.
    path = write_jsonl(tmp_path / "a.jsonl", [{"text": "", "entities": []}, TAGGER])
    assert pairs(read_spans(path)) == [(TOKENS, TAGS)]


def test_label_studio_task_without_data_text(tmp_path):
    path = tmp_path / "export.json"
    path.write_text(json.dumps([{**LABEL_STUDIO[0], "data": {"content": TEXT}}]))
    assert error_line(path) == f"{path} task 7: record has no text (no string under 'data.text')"


def test_file_without_records(tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_text("\n")
    assert error_line(path) == f"{path}: no annotated records found"


# --------------------------------------------------------------------------- corpus


def spans_record(tokens: list[str], tags: list[str]) -> dict:
    """Tokens joined by single spaces, spans from IOB2 tags: what an annotation tool keeps."""
    offsets, at = [], 0
    for token in tokens:
        offsets.append(at)
        at += len(token) + 1
    label = [
        [offsets[s], offsets[e - 1] + len(tokens[e - 1]), etype]
        for s, e, etype in schemes.spans(tags)
    ]
    return {"text": " ".join(tokens), "label": label}


def test_round_trip_from_conll_tags(tmp_path):
    sentences = make_sentences(60, seed=3)
    path = write_jsonl(tmp_path / "a.jsonl", [spans_record(t, g) for t, g in sentences])
    assert pairs(read_spans(path)) == sentences


def test_load_data_folder_of_jsonl_matches_conll(tmp_path):
    train, dev = make_sentences(30, seed=1), make_sentences(10, seed=2)
    spans_dir, conll_dir = tmp_path / "spans", tmp_path / "conll"
    spans_dir.mkdir()
    conll_dir.mkdir()
    write_jsonl(spans_dir / "train.jsonl", [spans_record(t, g) for t, g in train])
    write_jsonl(spans_dir / "dev.jsonl", [spans_record(t, g) for t, g in dev])
    (conll_dir / "train.txt").write_text(conll_text(train))
    (conll_dir / "dev.txt").write_text(conll_text(dev))
    from_spans, from_conll = data.load_data(spans_dir), data.load_data(conll_dir)
    assert list(from_spans) == list(from_conll) == ["train", "validation"]
    for split in from_spans:
        assert from_spans[split].features == from_conll[split].features
        assert from_spans[split].to_dict() == from_conll[split].to_dict()


def test_read_source_file_and_dev_extra(tmp_path):
    train = write_jsonl(tmp_path / "mine.jsonl", [DOCCANO])
    dev = tmp_path / "dev.json"
    dev.write_text(json.dumps(LABEL_STUDIO))
    corpus = data.read_source(train, dev=dev)
    assert pairs(corpus.splits["train"]) == pairs(corpus.splits["validation"]) == [(TOKENS, TAGS)]


# --------------------------------------------------------------------------- CLI


def run_cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", "tagger", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=120,
    )


def test_cli_data_report_and_misaligned_error(tmp_path):
    good = write_jsonl(tmp_path / "good.jsonl", [DOCCANO, DOCCANO_ENTITIES])
    result = run_cli("data", str(good))
    assert result.returncode == 0, result.stderr
    assert f"train: {good}" in result.stdout
    assert "labels (3): B-MISC B-ORG O" in result.stdout
    bad = write_jsonl(tmp_path / "bad.jsonl", [MISALIGNED])
    result = run_cli("data", str(bad))
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 3, result.stderr  # one line per span, then the count
    assert lines[0].startswith(f"error: {bad}:1: span [20, 27) 'Paris, ' does not line up")
    assert all(line.startswith("error: ") for line in lines)
    assert "Traceback" not in result.stderr


def test_cli_bad_spans_exit_1_and_write_nothing(tmp_path):
    records = [
        {"text": "I flew to Paris, France last May.", "label": [[10, 17, "LOC"]]},
        {"text": "Angela Merkel met Obama.", "label": [[0, 13, "PER"], [7, 13, "PER"]]},
        {"text": "Shares of Siemens rose.", "label": [[10, 40, "ORG"]]},
        {"text": "Nothing here.", "label": [[3, 3, "MISC"]]},
    ]
    bad = write_jsonl(tmp_path / "bad.jsonl", records)
    for args in (
        ("train", "--data", str(bad), "-o", str(tmp_path / "model")),
        ("convert", str(bad), str(tmp_path / "out.conll"), "--to", "conll"),
    ):
        result = run_cli(*args)
        assert result.returncode == 1, result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 5 and all(line.startswith(f"error: {bad}") for line in lines)
        assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.jsonl"]
