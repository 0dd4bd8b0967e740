"""Pretrained vectors: reading GloVe / word2vec / fastText text files, and training with them."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pytest
from conftest import tiny_config

from tagger.embeddings import find_vectors, read_vectors
from tagger.errors import TaggerError
from tagger.vocab import Vocab


def test_glove_format_keeps_the_words_as_spelt(tmp_path):
    path = tmp_path / "glove.txt"
    path.write_text("the 0.1 0.2 0.3\nParis 1 2 3\nparis 4 5 6\nunused 7 8 9\n", encoding="utf-8")
    vec = read_vectors(path, {"the", "paris"})
    assert vec.dim == 3 and vec.total == 4
    assert sorted(vec.vectors) == ["paris", "the"]
    np.testing.assert_allclose(vec.vectors["paris"], [4, 5, 6])


def test_tokens_find_their_vector_exact_then_lower_cased_then_by_digit_shape(tmp_path):
    """Numbers keep their own rows: "1996" is not "2008" (digits as 0 is the last resort)."""
    path = tmp_path / "glove.txt"
    rows = ["2008 1 1", "1996 2 2", "0000 3 3", "paris 4 4", "Paris 5 5", "u.s. 6 6", "0.0 7 7"]
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    tokens = ["1996", "2008", "1789", "Paris", "PARIS", "paris", "U.S.", "2.5", "Oslo"]
    vec = find_vectors(path, tokens)
    assert vec.forms == {
        "1996": "1996",
        "2008": "2008",
        "1789": "0000",
        "Paris": "Paris",
        "PARIS": "paris",
        "paris": "paris",
        "U.S.": "u.s.",
        "2.5": "0.0",
    }
    assert vec.rules == {"exact": 4, "lower-cased": 2, "digits as 0": 2}
    assert vec.coverage(["Oslo", "1996", "Oslo", "PARIS"]) == 0.5
    vocab = Vocab.build([["1996", "Paris", "Oslo"]], ["O"], vector_forms=vec.forms)
    ids = {t: vocab.word_id(t) for t in tokens}
    assert len({ids["1996"], ids["2008"], ids["1789"]}) == 3  # own rows, not one for "0000"
    assert ids["PARIS"] == ids["paris"] != ids["Paris"]
    assert vocab.words[vocab.word_id("1234")] == "0000"
    assert vocab.words[vocab.word_id("Oslo")] == "oslo"  # no vector: the normalised form


def test_word2vec_header_and_gzip(tmp_path):
    path = tmp_path / "vectors.vec.gz"
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.write("2 2\nberlin 0.5 -0.5\noslo 1.5 2.5\n")
    vec = read_vectors(path, {"berlin", "oslo"})
    assert vec.dim == 2 and vec.total == 2
    np.testing.assert_allclose(vec.vectors["oslo"], [1.5, 2.5])


def test_word_with_spaces_takes_the_tail_as_vector(tmp_path):
    path = tmp_path / "glove840.txt"
    path.write_text("a 1 2\n. . . 3 4\n", encoding="utf-8")
    vec = read_vectors(path, {". . ."})
    np.testing.assert_allclose(vec.vectors[". . ."], [3, 4])


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("a 1 2 3\nb 1 2\n", "vec.txt:2: 2 values, expected 3"),
        ("a 1 2\nb 1 x\n", "vec.txt:2: not a vector of numbers"),
        ("", "vec.txt: no vectors found"),
    ],
)
def test_bad_vector_files(tmp_path, content, message):
    path = tmp_path / "vec.txt"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(TaggerError) as err:
        read_vectors(path, {"a", "b"})
    assert str(err.value) == f"{path.parent}/{message}"


def test_missing_file(tmp_path):
    with pytest.raises(TaggerError, match="no such embeddings file"):
        read_vectors(tmp_path / "nope.txt", set())


def test_training_with_vectors_covers_dev_words(tiny_corpus, tmp_path, capsys):
    """Words with a vector join the vocabulary even when absent from train; rows are copied."""
    from tagger.predict import Tagger
    from tagger.training import train

    words = {}
    for split in ("train.txt", "dev.txt", "test.txt"):
        for line in (tiny_corpus / split).read_text().splitlines():
            if line and not line.startswith("-DOCSTART-"):
                words.setdefault(line.split()[0].lower(), len(words))
    rng = np.random.default_rng(0)
    table = {w: rng.normal(size=8).round(4) for w in words}
    table["zanzibar"] = rng.normal(size=8).round(4)  # in no split: must not be kept
    path = tmp_path / "vectors.txt"
    path.write_text(
        f"{len(table)} 8\n" + "".join(f"{w} {' '.join(map(str, v))}\n" for w, v in table.items())
    )
    out = train(
        tiny_config(
            data=str(tiny_corpus),
            output=str(tmp_path / "m"),
            embeddings=str(path),
            freeze_embeddings=True,
            normalize_digits=False,  # keys above are only lower-cased
            max_epochs=1,
        ),
        progress=True,
    )
    printed = capsys.readouterr().out
    assert f"{len(words)} / {len(table)} vectors used (dim 8)" in printed
    assert "validation 100.0%" in printed
    model = Tagger.load(out, device="cpu")
    assert model.config.word_dim == 8  # taken from the file
    vocab: Vocab = model.vocab
    assert "zanzibar" not in vocab.words
    weight = model.model.embedder.words.weight.detach().numpy()
    for word, vector in table.items():
        if word != "zanzibar":
            np.testing.assert_allclose(weight[vocab.words.index(word)], vector, rtol=1e-5)
    assert json.loads((out / "config.json").read_text())["config"]["embeddings"] == str(path)


def test_words_with_a_vector_are_never_replaced_by_unk(tiny_corpus, tmp_path):
    """Rare-word replacement teaches the UNK row; a word with a pretrained vector keeps
    its vector instead (word dropout still applies to it)."""
    from tagger.training import build

    path = tmp_path / "vectors.txt"
    path.write_text("paris 1 2 3 4\nglobex 5 6 7 8\n", encoding="utf-8")
    config = tiny_config(
        data=str(tiny_corpus), embeddings=str(path), unk_replace=2.0, word_dropout=0.05
    )
    setup = build(config)
    drop = setup.model.embedder.drop_prob
    vocab = setup.vocab
    assert float(drop[vocab.word_id("Paris")]) == pytest.approx(0.05)
    assert float(drop[vocab.word_id("Globex")]) == pytest.approx(0.05)
    assert float(drop[vocab.word_id("Tokyo")]) > 0.05  # no vector: replaced when rare
