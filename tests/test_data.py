"""Corpus readers: CoNLL files and folders, hub datasets (offline), DatasetDict output."""

from __future__ import annotations

from pathlib import Path

import datasets
import pytest
from conftest import CONLL2003
from hypothesis import given
from hypothesis import strategies as st
from seqeval.metrics.sequence_labeling import get_entities

from tagger import data
from tagger.errors import TaggerError

ALL_TYPES_IOB2 = ["O", "B-LOC", "I-LOC", "B-ORG", "I-ORG", "B-PER", "I-PER"]


def write(path: Path, text: str | bytes) -> Path:
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_bytes(text.encode("utf-8"))
    return path


def message(err: pytest.ExceptionInfo) -> str:
    return str(err.value)


# ----------------------------------------------------------------- parse_conll / read_conll


def test_parse_sentences_docstart_and_blank_lines():
    text = (
        "-DOCSTART- -X- O O\n"
        "\n"
        "EU NNP B-NP B-ORG\n"
        "rejects VBZ B-VP O\n"
        "\n\n\n"
        "Peter NNP B-NP B-PER\n"
        "Blackburn NNP I-NP I-PER\n"
        "\n"
        "-DOCSTART- -X- O O\n"
        "Bonn NNP B-NP B-LOC\n"
    )
    sentences = data.parse_conll(text, "f.txt")
    assert [s.tokens for s in sentences] == [["EU", "rejects"], ["Peter", "Blackburn"], ["Bonn"]]
    assert [s.tags for s in sentences] == [["B-ORG", "O"], ["B-PER", "I-PER"], ["B-LOC"]]
    assert [s.origin for s in sentences] == ["f.txt:3", "f.txt:8", "f.txt:12"]


def test_parse_tag_column():
    text = "EU NNP B-NP B-ORG\nrejects VBZ B-VP O\n"
    assert data.parse_conll(text, tag_column=2)[0].tags == ["B-NP", "B-VP"]
    assert data.parse_conll(text, tag_column=-2)[0].tags == ["B-NP", "B-VP"]
    assert data.parse_conll(text, tag_column=-1)[0].tags == ["B-ORG", "O"]


def test_parse_tag_column_out_of_range():
    with pytest.raises(TaggerError) as err:
        data.parse_conll("EU B-ORG\n", "f.txt", tag_column=5)
    assert message(err) == "f.txt:1: tag column 5 does not exist (the file has 2 columns)"


def test_read_crlf_bom_and_mixed_whitespace(tmp_path):
    raw = "\ufeffEU\tB-ORG\r\nrejects \t O\r\n\r\nBonn  B-LOC\r\n".encode()
    sentences = data.read_conll(write(tmp_path / "x.txt", raw))
    assert [s.tokens for s in sentences] == [["EU", "rejects"], ["Bonn"]]
    assert [s.tags for s in sentences] == [["B-ORG", "O"], ["B-LOC"]]
    assert sentences[0].tokens[0] == "EU"  # no byte-order mark left on the first token


def test_read_utf8_tokens(tmp_path):
    sentences = data.read_conll(write(tmp_path / "x.txt", "Müller B-PER\nZürich B-LOC\n"))
    assert sentences[0].tokens == ["Müller", "Zürich"]


def test_empty_file(tmp_path):
    path = write(tmp_path / "empty.txt", "")
    with pytest.raises(TaggerError) as err:
        data.read_conll(path)
    assert message(err) == (
        f"{path}: no sentences found (the file is empty or has only -DOCSTART-)"
    )


def test_only_docstart(tmp_path):
    path = write(tmp_path / "doc.txt", "-DOCSTART- -X- O O\n\n-DOCSTART- -X- O O\n\n")
    with pytest.raises(TaggerError) as err:
        data.read_conll(path)
    assert message(err) == (
        f"{path}: no sentences found (the file is empty or has only -DOCSTART-)"
    )


def test_wrong_column_count_in_the_middle(tmp_path):
    path = write(tmp_path / "bad.txt", "EU NNP B-ORG\nrejects VBZ O\n\nGerman JJ\ncall NN O\n")
    with pytest.raises(TaggerError) as err:
        data.read_conll(path)
    assert message(err) == (
        f"{path}:4: expected 3 columns like the first token line, found 2: 'German JJ'"
    )


def test_single_column(tmp_path):
    path = write(tmp_path / "one.txt", "\n\nEU\nrejects\n")
    with pytest.raises(TaggerError) as err:
        data.read_conll(path)
    assert message(err) == f"{path}:3: expected at least 2 columns (token and tag), found 1"


def test_invalid_tag(tmp_path):
    path = write(tmp_path / "tag.txt", "EU B-ORG\nrejects O\n\nPeter X-PER\n")
    with pytest.raises(TaggerError) as err:
        data.read_conll(path)
    assert message(err) == (
        f"{path}:4: tag 'X-PER' is not valid: expected O, or B-, I-, E- or S- followed by a type"
    )


def test_tag_without_type(tmp_path):
    path = write(tmp_path / "tag.txt", "EU I-\n")
    with pytest.raises(TaggerError) as err:
        data.read_conll(path)
    assert message(err) == f"{path}:1: tag 'I-' has no entity type after I-"


def test_latin1_bytes(tmp_path):
    path = write(tmp_path / "latin.txt", b"EU B-ORG\nrejects O\n\nM\xfcller B-PER\n")
    with pytest.raises(TaggerError) as err:
        data.read_conll(path)
    assert message(err) == (
        f"{path}:4: byte 0xfc at offset 21 is not valid utf-8; "
        "if the file is Latin-1, pass --encoding latin-1"
    )
    sentences = data.read_conll(path, encoding="latin-1")
    assert sentences[1].tokens == ["Müller"]


def test_latin1_bytes_after_bom(tmp_path):
    path = write(tmp_path / "bom.txt", b"\xef\xbb\xbfEU B-ORG\nrejects O\n\nM\xfcller B-PER\n")
    with pytest.raises(TaggerError) as err:
        data.read_conll(path)
    assert message(err).startswith(f"{path}:4: byte 0xfc at offset 24 ")


def test_line_numbers_count_newlines_only():
    text = "EU B-ORG\n\x0c\nrejects O\n\nPeter X-PER\n"  # a stray form feed on line 2
    with pytest.raises(TaggerError) as err:
        data.parse_conll(text, "f.txt")
    assert message(err).startswith("f.txt:5: tag 'X-PER'")


def test_unknown_encoding(tmp_path):
    path = write(tmp_path / "x.txt", "EU B-ORG\n")
    with pytest.raises(TaggerError) as err:
        data.read_conll(path, encoding="klingon")
    assert message(err) == "unknown encoding 'klingon'"


def test_read_missing_file_and_folder(tmp_path):
    with pytest.raises(TaggerError) as err:
        data.read_conll(tmp_path / "nope.txt")
    assert message(err) == f"{tmp_path / 'nope.txt'}: no such file"
    with pytest.raises(TaggerError) as err:
        data.read_conll(tmp_path)
    assert message(err) == f"{tmp_path}: is a folder, expected a text file"


# ----------------------------------------------------------------- read_source / load_data


def test_folder_without_train_file(tmp_path):
    write(tmp_path / "dev.txt", "EU B-ORG\n")
    with pytest.raises(TaggerError) as err:
        data.load_data(tmp_path)
    assert message(err) == (
        f"{tmp_path}: no training file found (expected one of train.txt, train.conll, "
        "eng.train, train.jsonl)"
    )


def test_missing_path(tmp_path):
    missing = tmp_path / "missing"
    with pytest.raises(TaggerError) as err:
        data.load_data(missing)
    assert message(err) == f"{missing}: no such file or folder"
    with pytest.raises(TaggerError) as err:
        data.load_data(str(missing))
    assert message(err) == f"{missing}: no such file or folder"


def test_missing_dev_file(tmp_path):
    train = write(tmp_path / "train.txt", "EU B-ORG\n")
    with pytest.raises(TaggerError) as err:
        data.load_data(train, dev=tmp_path / "dev.txt")
    assert message(err) == f"{tmp_path / 'dev.txt'}: no such file"


def test_load_folder(tmp_path):
    write(
        tmp_path / "train.txt", "-DOCSTART- O\n\nEU B-ORG\nrejects O\n\nPeter B-PER\nSmith I-PER\n"
    )
    write(tmp_path / "dev.txt", "Bonn B-LOC\nsays O\n")
    write(tmp_path / "test.txt", "Smith B-PER\n\nEU B-ORG\n")
    # A train file with a LOC mention so that dev's B-LOC is known.
    write(tmp_path / "train.txt", "EU B-ORG\nrejects O\n\nPeter B-PER\nSmith I-PER\n\nBonn B-LOC\n")
    dd = data.load_data(tmp_path)
    assert isinstance(dd, datasets.DatasetDict)
    assert list(dd) == ["train", "validation", "test"]
    assert [len(dd[s]) for s in dd] == [3, 1, 2]
    train = dd["train"]
    assert train["tokens"][:] == [["EU", "rejects"], ["Peter", "Smith"], ["Bonn"]]
    feature = train.features["ner_tags"].feature
    assert isinstance(feature, datasets.ClassLabel)
    assert feature.names == ALL_TYPES_IOB2
    assert data.tag_names(train) == ALL_TYPES_IOB2
    assert data.decoded_tags(train) == [["B-ORG", "O"], ["B-PER", "I-PER"], ["B-LOC"]]
    assert train["ner_tags"][:][1] == [ALL_TYPES_IOB2.index("B-PER"), ALL_TYPES_IOB2.index("I-PER")]
    assert data.decoded_tags(dd["test"]) == [["B-PER"], ["B-ORG"]]
    assert dd["test"].features == train.features


def test_load_alternative_file_names(tmp_path):
    write(tmp_path / "eng.train", "EU I-ORG\n")
    write(tmp_path / "eng.testa", "UN I-ORG\n")
    write(tmp_path / "eng.testb", "EC I-ORG\n")
    corpus = data.read_source(tmp_path)
    assert corpus.sources == {
        "train": str(tmp_path / "eng.train"),
        "validation": str(tmp_path / "eng.testa"),
        "test": str(tmp_path / "eng.testb"),
    }


def test_load_single_file_with_dev_and_test(tmp_path):
    train = write(tmp_path / "a.conll", "EU B-ORG\n")
    dev = write(tmp_path / "b.conll", "UN B-ORG\n")
    dd = data.load_data(str(train), dev=dev)
    assert list(dd) == ["train", "validation"]
    assert dd["validation"]["tokens"][:] == [["UN"]]


def test_dev_argument_replaces_folder_split(tmp_path):
    write(tmp_path / "train.txt", "EU B-ORG\n")
    write(tmp_path / "dev.txt", "UN B-ORG\n")
    other = write(tmp_path / "other.txt", "EC B-ORG\n")
    dd = data.load_data(tmp_path, dev=other)
    assert dd["validation"]["tokens"][:] == [["EC"]]


def test_iob1_is_normalised_to_iob2(tmp_path):
    write(
        tmp_path / "train.txt",
        "U.N. I-ORG\nofficial O\nEkeus I-PER\nheads O\nfor O\nBaghdad I-LOC\n\n"
        "Peter I-PER\nBlackburn I-PER\nPaul B-PER\n",
    )
    raw = data.read_source(tmp_path)
    assert raw.scheme() == "IOB1"
    dd = data.load_data(tmp_path)
    assert data.decoded_tags(dd["train"]) == [
        ["B-ORG", "O", "B-PER", "O", "O", "B-LOC"],
        ["B-PER", "I-PER", "B-PER"],
    ]
    assert "train" in dd and "validation" not in dd


def test_scheme_bioes(tmp_path):
    write(tmp_path / "train.txt", "Peter B-PER\nBlackburn I-PER\nand O\nBonn B-LOC\n")
    dd = data.load_data(tmp_path, scheme="BIOES")
    assert data.tag_names(dd["train"]) == [
        "O",
        "B-LOC",
        "I-LOC",
        "E-LOC",
        "S-LOC",
        "B-PER",
        "I-PER",
        "E-PER",
        "S-PER",
    ]
    assert data.decoded_tags(dd["train"]) == [["B-PER", "E-PER", "O", "S-LOC"]]


def test_unknown_scheme_and_unseen_option(tmp_path):
    write(tmp_path / "train.txt", "EU B-ORG\n")
    with pytest.raises(TaggerError) as err:
        data.load_data(tmp_path, scheme="IOB1")
    assert message(err) == "unknown scheme 'IOB1'; choose one of IOB2, BIOES"
    with pytest.raises(TaggerError) as err:
        data.load_data(tmp_path, unseen_labels="drop")
    assert message(err) == "unseen_labels must be 'error' or 'O', not 'drop'"


def test_unseen_label_in_dev(tmp_path):
    write(tmp_path / "train.txt", "EU B-ORG\nrejects O\n")
    dev = write(tmp_path / "dev.txt", "EU B-ORG\n\nThe O\nPeter B-PER\nsaid O\n")
    with pytest.raises(TaggerError) as err:
        data.load_data(tmp_path)
    assert message(err) == (
        f"{dev}:4: label B-PER: entity type PER does not occur in the training data; "
        "fix the data or map such labels to O (--unseen-labels O)"
    )
    dd = data.load_data(tmp_path, unseen_labels="O")
    assert data.decoded_tags(dd["validation"]) == [["B-ORG"], ["O", "O", "O"]]
    assert data.tag_names(dd["validation"]) == ["O", "B-ORG", "I-ORG"]


def test_unseen_check_is_per_type(tmp_path):
    write(tmp_path / "train.txt", "Peter B-PER\nsaid O\n")
    write(tmp_path / "dev.txt", "Peter B-PER\nBlackburn I-PER\n")
    dd = data.load_data(tmp_path)
    assert data.decoded_tags(dd["validation"]) == [["B-PER", "I-PER"]]


# ----------------------------------------------------------------- format_conll

TOKEN = st.text(
    alphabet=st.characters(blacklist_categories=("Cs", "Zs", "Zl", "Zp", "Cc")), min_size=1
).filter(lambda t: t.split() == [t] and t != data.DOCSTART)
TAG = st.sampled_from(["O", "B-PER", "I-PER", "B-LOC", "I-MISC", "E-ORG", "S-ORG"])


@given(
    st.lists(
        st.integers(min_value=1, max_value=6).flatmap(
            lambda n: st.tuples(
                st.lists(TOKEN, min_size=n, max_size=n), st.lists(TAG, min_size=n, max_size=n)
            )
        ),
        min_size=1,
        max_size=5,
    )
)
def test_format_conll_round_trip(sentences):
    parsed = data.parse_conll(data.format_conll(sentences))
    assert [(s.tokens, s.tags) for s in parsed] == [(list(t), list(g)) for t, g in sentences]


# ----------------------------------------------------------------- hub (offline)


@pytest.fixture
def fake_hub(tmp_path, monkeypatch):
    """Serve local Parquet files through the real ``datasets.load_dataset``."""
    real = datasets.load_dataset
    calls: list[tuple] = []

    def install(splits: dict[str, datasets.Dataset]) -> list[tuple]:
        files = {}
        for name, ds in splits.items():
            files[name] = str(tmp_path / f"{name}.parquet")
            ds.to_parquet(files[name])

        def load_dataset(path, *args, revision=None, **kwargs):
            calls.append((path, revision))
            return real("parquet", data_files=files, cache_dir=str(tmp_path / "hf-cache"))

        monkeypatch.setattr(datasets, "load_dataset", load_dataset)
        return calls

    return install


def hub_dataset(rows, names=("O", "B-PER", "I-PER", "B-LOC", "I-LOC")) -> datasets.Dataset:
    features = datasets.Features(
        {
            "id": datasets.Value("string"),
            "tokens": datasets.Sequence(datasets.Value("string")),
            "ner_tags": datasets.Sequence(datasets.ClassLabel(names=list(names))),
        }
    )
    return datasets.Dataset.from_dict(
        {
            "id": [str(i) for i in range(len(rows))],
            "tokens": [r[0] for r in rows],
            "ner_tags": [r[1] for r in rows],
        },
        features=features,
    )


HUB_TRAIN = [(["John", "Smith", "visited", "Paris"], [1, 2, 0, 3]), (["Hello"], [0]), ([], [])]
HUB_DEV = [(["Anna", "left", "Rome"], [1, 0, 3])]


def test_hub_alias_conll2003(fake_hub):
    calls = fake_hub(
        {
            "train": hub_dataset(HUB_TRAIN),
            "validation": hub_dataset(HUB_DEV),
            "test": hub_dataset(HUB_DEV),
        }
    )
    dd = data.load_data("conll2003")
    assert calls == [("eriktks/conll2003", "refs/convert/parquet")]
    assert list(dd) == ["train", "validation", "test"]
    # Empty sentences are dropped; ClassLabel ids become label names.
    assert dd["train"]["tokens"][:] == [["John", "Smith", "visited", "Paris"], ["Hello"]]
    assert data.decoded_tags(dd["train"]) == [["B-PER", "I-PER", "O", "B-LOC"], ["O"]]
    assert data.decoded_tags(dd["validation"]) == [["B-PER", "O", "B-LOC"]]
    assert list(dd["train"].features) == ["tokens", "ner_tags"]


def test_hub_user_revision_overrides_alias(fake_hub):
    calls = fake_hub({"train": hub_dataset(HUB_TRAIN)})
    data.load_data("conll2003", revision="main")
    assert calls == [("eriktks/conll2003", "main")]


def test_hub_plain_id_and_dev_split_name(fake_hub):
    calls = fake_hub({"train": hub_dataset(HUB_TRAIN), "dev": hub_dataset(HUB_DEV)})
    corpus = data.read_source("my_ner_corpus", revision="v1.0")
    assert calls == [("my_ner_corpus", "v1.0")]
    assert set(corpus.splits) == {"train", "validation"}
    assert corpus.sources["validation"] == "my_ner_corpus (dev)"
    assert corpus.splits["train"][0].origin == "my_ner_corpus train row 0"


def test_hub_owner_slash_name(fake_hub):
    calls = fake_hub({"train": hub_dataset(HUB_TRAIN)})
    data.load_data("someuser/ner-corpus")
    assert calls == [("someuser/ner-corpus", None)]


def test_hub_string_tags(fake_hub):
    ds = datasets.Dataset.from_dict(
        {"tokens": [["Peter", "Blackburn"], ["Bonn"]], "ner_tags": [["I-PER", "I-PER"], ["I-LOC"]]}
    )
    fake_hub({"train": ds})
    dd = data.load_data("iob1_strings")
    assert data.decoded_tags(dd["train"]) == [["B-PER", "I-PER"], ["B-LOC"]]
    assert data.tag_names(dd["train"]) == ["O", "B-LOC", "I-LOC", "B-PER", "I-PER"]


def test_hub_invalid_string_tag(fake_hub):
    ds = datasets.Dataset.from_dict({"tokens": [["a"], ["b"]], "ner_tags": [["O"], ["PER"]]})
    fake_hub({"train": ds})
    with pytest.raises(TaggerError) as err:
        data.load_data("bad_tags")
    assert message(err) == (
        "bad_tags train row 1 token 1: tag 'PER' is not valid: expected O, or B-, I-, E- or S- "
        "followed by a type"
    )


def test_hub_missing_tokens_column(fake_hub):
    ds = datasets.Dataset.from_dict({"words": [["a"]], "ner_tags": [["O"]]})
    fake_hub({"train": ds})
    with pytest.raises(TaggerError) as err:
        data.load_data("no_tokens")
    assert message(err) == "no_tokens split 'train' has no tokens column (columns: words, ner_tags)"


def test_hub_without_train_split(fake_hub):
    fake_hub({"test": hub_dataset(HUB_DEV)})
    with pytest.raises(TaggerError) as err:
        data.load_data("only_test")
    assert message(err) == "only_test: no train split (splits: test)"


def test_hub_load_failure_is_one_line(monkeypatch):
    def unreachable(*args, **kwargs):
        raise ConnectionError(
            "Couldn't reach 'x' on the Hub (LocalEntryNotFoundError)\nmore detail"
        )

    monkeypatch.setattr(datasets, "load_dataset", unreachable)
    with pytest.raises(TaggerError) as err:
        data.load_data("conll2003")
    assert message(err) == (
        "'conll2003' is no file or folder here, and loading it from the Hugging Face hub failed: "
        "Couldn't reach 'x' on the Hub (LocalEntryNotFoundError)"
    )
    assert err.value.__cause__ is None and err.value.__suppress_context__


def test_hub_load_failure_without_message(monkeypatch):
    def fail(*args, **kwargs):
        raise ConnectionError()

    monkeypatch.setattr(datasets, "load_dataset", fail)
    with pytest.raises(TaggerError) as err:
        data.load_data("conll2003")
    assert message(err) == (
        "'conll2003' is no file or folder here, and loading it from the Hugging Face hub "
        "failed: ConnectionError"
    )


# ----------------------------------------------------------------- report


def test_report(tmp_path):
    write(tmp_path / "train.txt", "Peter I-PER\nBlackburn I-PER\nin O\nBonn I-LOC\n\nPaul I-PER\n")
    write(tmp_path / "dev.txt", "Bonn B-LOC\n")
    rep = data.report(data.read_source(tmp_path))
    assert rep["scheme"] == "IOB1"
    assert rep["splits"]["train"] == {
        "source": str(tmp_path / "train.txt"),
        "sentences": 2,
        "tokens": 5,
        "mentions": {"LOC": 1, "PER": 2},
        "total_mentions": 3,
        "scheme": "IOB1",
        "labels": ["I-LOC", "I-PER", "O"],
    }
    assert rep["splits"]["validation"]["scheme"] == "IOB2"
    assert "test" not in rep["splits"]


# ----------------------------------------------------------------- the real CoNLL-2003


@pytest.fixture(scope="module")
def conll2003():
    if not CONLL2003.is_dir():
        pytest.skip(f"CoNLL-2003 is not in {CONLL2003}")
    return CONLL2003


@pytest.mark.slow
def test_conll2003_sizes_and_mentions(conll2003):
    dd = data.load_data(conll2003)
    expected = {
        "train": (14041, 203621, 23499),
        "validation": (3250, 51362, 5942),
        "test": (3453, 46435, 5648),
    }
    for split, (n_sentences, n_tokens, n_mentions) in expected.items():
        ds = dd[split]
        tags = data.decoded_tags(ds)
        assert len(ds) == n_sentences
        assert sum(len(t) for t in ds["tokens"]) == n_tokens
        assert sum(len(get_entities(t)) for t in tags) == n_mentions
        assert all(t in ALL_TYPES_IOB2 + ["B-MISC", "I-MISC"] for s in tags for t in s)


@pytest.mark.slow
def test_conll2003_report(conll2003):
    rep = data.report(data.read_source(conll2003))
    assert rep["scheme"] == "IOB1"
    train = rep["splits"]["train"]
    assert train["mentions"] == {"LOC": 7140, "MISC": 3438, "ORG": 6321, "PER": 6600}
    assert train["scheme"] == "IOB1"
    assert rep["splits"]["validation"]["mentions"] == {
        "LOC": 1837,
        "MISC": 922,
        "ORG": 1341,
        "PER": 1842,
    }
    assert rep["splits"]["test"]["mentions"] == {"LOC": 1668, "MISC": 702, "ORG": 1661, "PER": 1617}
