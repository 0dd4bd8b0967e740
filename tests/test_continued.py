"""Continued training (``--init-from``, ``--replay``): the architecture comes from the
model, the vocabulary grows with old ids kept, old weights are carried by name, replay
mixes old sentences in reproducibly, a continued run resumes and records its start."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest
import torch
from conftest import conll_text, make_sentences, tiny_config

from tagger import schemes
from tagger.batching import encode, make_batch
from tagger.checkpoint import checkpoint_dir
from tagger.continued import carry_weights
from tagger.crf import CRF
from tagger.errors import TaggerError
from tagger.model import Ensemble, SequenceTagger
from tagger.predict import Tagger
from tagger.runtime import seed_everything
from tagger.training import Interrupted, build, train
from tagger.vocab import Vocab

# New data: a new entity type (PROD) and new words, next to two of the old types.
NEW_POOLS = {
    "PER": ["John Smith", "Zoe Quist", "Mary Jones"],
    "LOC": ["Paris", "Lima", "Berlin"],
    "PROD": ["iPhone", "Walkman", "Kindle", "Model T", "Game Boy"],
}
NEW_TEMPLATES = [
    "{PER} bought a {PROD} in {LOC} .",
    "The {PROD} sold well .",
    "{PROD} sales fell in {LOC} .",
    "{PER} likes the {PROD} .",
]


def new_sentences(n: int, seed: int) -> list[tuple[list[str], list[str]]]:
    return make_sentences(n, seed, NEW_TEMPLATES, NEW_POOLS)


@pytest.fixture(scope="module")
def new_corpus(tmp_path_factory):
    folder = tmp_path_factory.mktemp("new_corpus")
    for name, n, seed in (("train.txt", 40, 0), ("dev.txt", 10, 1), ("test.txt", 10, 2)):
        (folder / name).write_text(conll_text(new_sentences(n, seed)), encoding="utf-8")
    return folder


def continued(new_corpus, trained_model, tmp_path, **overrides):
    return tiny_config(
        data=str(new_corpus),
        init_from=str(trained_model),
        output=str(tmp_path / "continued"),
        **overrides,
    )


def test_grow_keeps_old_ids_and_appends_new_entries():
    old = Vocab.build([["Paris", "is", "big"], ["Paris"]], ["O", "B-LOC", "I-LOC"])
    new_labels = schemes.label_set(["LOC", "PROD"], "IOB2")
    grown = old.grow(
        [["Lima", "is", "Lima", "Kindle", "Kindle", "zz", "zz"]],
        new_labels,
        min_freq=2,
        max_size=2,
    )
    assert grown.words[: len(old.words)] == old.words  # old ids keep their words
    # new words only, seen twice or more, at most two of them, most frequent first
    assert grown.words[len(old.words) :] == ["kindle", "lima"]
    assert grown.chars[: len(old.chars)] == old.chars
    assert set(grown.chars[len(old.chars) :]) == set("LmKndlez") - set(old.chars)
    assert grown.labels == new_labels
    with pytest.raises(ValueError, match="lacks B-LOC, I-LOC"):
        old.grow([["x"]], ["O"])


def test_start_takes_the_architecture_and_carries_every_weight(
    new_corpus, trained_model, tagger_model, tmp_path
):
    said = []
    config = continued(new_corpus, trained_model, tmp_path, hidden_size=32, scheme="IOB2")
    setup = build(config, say=said.append)
    old, new = tagger_model, setup.model.eval()
    # the model's architecture (its scheme too), the new run's optimisation settings
    assert setup.config.hidden_size == old.config.hidden_size == 16
    assert setup.config.scheme == old.config.scheme == "BIOES"
    assert setup.config.lr == config.lr and setup.config.data == str(new_corpus)
    assert said[0].startswith(f"architecture from {trained_model}: lstm x1 bi, 16 hidden")
    assert said[0].endswith("not the config's hidden_size 32, scheme IOB2")
    assert "new entity types: PROD" in said[-1]
    # old ids kept, new words and chars appended, labels for old and new types
    assert setup.vocab.words[: len(old.vocab.words)] == old.vocab.words
    assert "kindle" in setup.vocab.words[len(old.vocab.words) :]
    assert setup.vocab.chars[: len(old.vocab.chars)] == old.vocab.chars
    assert setup.vocab.labels == schemes.label_set(["LOC", "ORG", "PER", "PROD"], "BIOES")
    assert setup.init_from["path"] == str(trained_model)
    assert setup.init_from["fingerprint"] == old.data["fingerprint"]
    assert setup.init_from["dev_f1"] == old.metrics["dev_f1"]

    # Before any step, old-vocabulary sentences get the old model's scores for old labels.
    sentences = [["John", "Smith", "visited", "Paris", "."], ["Shares", "of", "Globex", "rose"]]
    index = np.arange(len(sentences))
    ids = [setup.vocab.labels.index(t) for t in old.vocab.labels]
    with torch.no_grad():
        before = old.model.emissions(make_batch(encode(old.vocab, sentences), index))
        after = new.emissions(make_batch(encode(setup.vocab, sentences), index))
    torch.testing.assert_close(after[..., ids], before, rtol=1e-5, atol=1e-6)
    crf, old_crf = new.decoder.crf, old.model.decoder.crf
    assert torch.equal(crf.transitions[ids][:, ids], old_crf.transitions)
    assert torch.equal(crf.start_transitions[ids], old_crf.start_transitions)
    assert torch.equal(crf.end_transitions[ids], old_crf.end_transitions)
    # constraints from the new label set; new entries start as a new model's do
    fresh_crf = CRF(setup.vocab.labels, "BIOES")
    assert torch.equal(crf.trans_penalty, fresh_crf.trans_penalty)
    added = [i for i, t in enumerate(setup.vocab.labels) if t not in old.vocab.labels]
    assert not crf.transitions[added].any() and not crf.transitions[:, added].any()
    seed_everything(setup.config.seed)
    fresh = SequenceTagger(setup.config.model, setup.vocab)
    n_old = len(old.vocab.words)
    assert torch.equal(new.embedder.words.weight[n_old:], fresh.embedder.words.weight[n_old:])
    assert torch.equal(new.projection.weight[added], fresh.projection.weight[added])


def test_carry_weights_refuses_what_does_not_fit(tagger_model):
    old = tagger_model
    wider = SequenceTagger(replace(old.config, hidden_size=17).model, old.vocab)
    with pytest.raises(ValueError, match="cannot carry"):
        carry_weights(old.model, old.vocab, wider, old.vocab)
    smaller = Vocab(old.vocab.words[:-1], old.vocab.chars, old.vocab.labels)
    with pytest.raises(ValueError, match="lost 1 of the old words"):
        carry_weights(old.model, old.vocab, SequenceTagger(old.config.model, smaller), smaller)


def test_continued_model_learns_the_new_type_and_records_its_start(
    new_corpus, trained_model, tiny_corpus, tmp_path
):
    replay = str(tiny_corpus / "train.txt")
    path = train(
        continued(new_corpus, trained_model, tmp_path, max_epochs=6, replay=replay), progress=False
    )
    tagger = Tagger.load(path, device="cpu")
    assert tagger.entity_types == ["LOC", "ORG", "PER", "PROD"]
    tags = tagger.predict([["Zoe", "Quist", "bought", "a", "Kindle", "in", "Lima", "."]])[0]
    assert ("PROD", 4, 5) in [(t, s, e) for s, e, t in schemes.spans(tags)]
    header = json.loads((path / "config.json").read_text())
    assert header["config"]["init_from"] == str(trained_model)
    metrics = json.loads((path / "metrics.json").read_text())
    old = json.loads((trained_model / "metrics.json").read_text())
    assert metrics["init_from"] == {
        "path": str(trained_model),
        "fingerprint": json.loads((trained_model / "config.json").read_text())["data"][
            "fingerprint"
        ],
        "best_epoch": old["best_epoch"],
        "dev_f1": old["dev_f1"],
        "test_f1": old["test_f1"],
    }
    # the replayed file is the model's own training data, read the same way
    assert metrics["replay"] == {
        "source": replay,
        "fingerprint": metrics["init_from"]["fingerprint"],
        "sentences": 60,
        "per_epoch": 20,
    }


def test_replay_mixes_the_right_count_each_epoch(
    new_corpus, trained_model, tiny_corpus, tmp_path, monkeypatch
):
    config = continued(new_corpus, trained_model, tmp_path, replay=str(tiny_corpus), max_epochs=3)
    replay = build(config).replay
    assert (replay.new, replay.sentences, replay.per_epoch) == (40, 60, 20)  # 0.5 * 40
    draws = [replay.draw(np.random.default_rng(13)).type_ids.tolist() for _ in range(2)]
    assert draws[0] == draws[1]  # fixed by the seed
    rng = np.random.default_rng(13)
    first, second = replay.draw(rng), replay.draw(rng)
    assert len(first) == len(second) == 60
    assert first.type_ids.tolist() != second.type_ids.tolist()  # a new draw each epoch

    # the new sentences come first and whole, then 20 of the old ones
    def words(enc, i):
        return tuple(enc.type_words[enc.type_ids[enc.offsets[i] : enc.offsets[i + 1]]])

    whole = replay.encoded
    assert [words(first, i) for i in range(40)] == [words(whole, i) for i in range(40)]
    old = {words(whole, i) for i in range(40, 100)}
    assert all(words(first, i) in old for i in range(40, 60))
    assert build(replace(config, replay_fraction=100.0)).replay.per_epoch == 60  # capped

    import tagger.trainer as trainer

    seen = []
    real = trainer.rank_batches

    def counting(enc, *args, **kwargs):
        seen.append(len(enc))
        return real(enc, *args, **kwargs)

    monkeypatch.setattr(trainer, "rank_batches", counting)
    train(config, progress=False)
    assert seen == [60, 60, 60]


def test_replay_is_read_as_the_model_read_its_own(new_corpus, tiny_corpus, tmp_path):
    mapped = train(
        tiny_config(
            data=str(tiny_corpus), output=str(tmp_path / "no-org"), map_labels="ORG=O", max_epochs=1
        ),
        progress=False,
    )
    config = continued(new_corpus, mapped, tmp_path, replay=str(tiny_corpus))
    setup = build(config)
    assert setup.vocab.labels == schemes.label_set(["LOC", "PER", "PROD"], "BIOES")
    model_data = json.loads((mapped / "config.json").read_text())["data"]
    assert setup.replay.fingerprint == model_data["fingerprint"]


def test_an_interrupted_continued_run_resumes_as_if_never_stopped(
    new_corpus, trained_model, tiny_corpus, tmp_path, monkeypatch
):
    values = dict(replay=str(tiny_corpus), max_epochs=3, dropout=0.3, word_dropout=0.1)
    straight = train(continued(new_corpus, trained_model, tmp_path / "a", **values), progress=False)

    import tagger.trainer as trainer

    real, epochs = trainer.rank_batches, []

    def interrupting(*args, **kwargs):  # Ctrl-C at the 3rd batch of epoch 2
        epochs.append(1)
        for i, batch in enumerate(real(*args, **kwargs)):
            if len(epochs) == 2 and i == 2:
                raise KeyboardInterrupt
            yield batch

    config = continued(new_corpus, trained_model, tmp_path / "b", **values)
    monkeypatch.setattr(trainer, "rank_batches", interrupting)
    with pytest.raises(Interrupted, match="interrupted in epoch 2"):
        train(config, progress=False)
    monkeypatch.setattr(trainer, "rank_batches", real)
    resumed = train(resume=checkpoint_dir(config.output), progress=False)

    a, b = (json.loads((p / "metrics.json").read_text()) for p in (straight, resumed))
    strip = lambda m: [  # noqa: E731
        {k: v for k, v in e.items() if k not in ("seconds", "tokens_per_s")} for e in m["epochs"]
    ]
    assert strip(a) == strip(b) and len(strip(a)) == 3
    assert a["dev"] == b["dev"] and a["test"] == b["test"] and a["replay"] == b["replay"]
    sentences = [toks for toks, _ in new_sentences(20, 7)]
    assert Tagger.load(straight).predict(sentences) == Tagger.load(resumed).predict(sentences)


def test_cli_flags(new_corpus, trained_model, tiny_corpus, tmp_path):
    from typer.testing import CliRunner

    from tagger.cli import app

    out = tmp_path / "cli"
    args = ["train", "--data", str(new_corpus), "--init-from", str(trained_model), "-o", str(out)]
    args += ["--replay", str(tiny_corpus), "--replay-fraction", "0.25", "--max-epochs", "1"]
    result = CliRunner().invoke(app, [*args, "--device", "cpu", "--threads", "1"])
    assert result.exit_code == 0, result.output
    assert f"architecture from {trained_model}" in result.output
    assert "replaying 10 of the 60 sentences" in result.output
    assert json.loads((out / "metrics.json").read_text())["replay"]["per_epoch"] == 10


def test_refusals(new_corpus, trained_model, tmp_path):
    def refused(init_from, **overrides) -> str:
        config = tiny_config(data=str(new_corpus), init_from=str(init_from), **overrides)
        with pytest.raises(TaggerError) as err:
            build(config)
        assert "\n" not in str(err.value)
        return str(err.value)

    missing = tmp_path / "nothing"
    assert refused(missing) == (
        f"init_from: {missing}: no such model folder; train one with `tagger train`"
    )
    other = tmp_path / "other"
    other.mkdir()
    assert refused(other) == f"init_from: {other} is not a tagger model folder (no config.json)"
    damaged = tmp_path / "damaged"
    shutil.copytree(trained_model, damaged)
    weights = damaged / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    assert refused(damaged).startswith(f"init_from: {weights} does not match the checksum")
    assert refused(trained_model, embeddings=str(weights)).startswith(
        "embeddings: a continued run (init_from) keeps the model's word vectors"
    )
    tagger = Tagger.load(trained_model, device="cpu")
    config = replace(tagger.config, ensemble=2)
    ensemble = Ensemble.of([tagger.model, tagger.model], config.model, tagger.vocab)
    Tagger(ensemble, config, tagger.vocab).save(tmp_path / "ensemble")
    assert refused(tmp_path / "ensemble") == (
        f"init_from: {tmp_path / 'ensemble'} is an ensemble of 2 taggers; continued "
        "training starts from a single tagger's model folder"
    )


def test_new_dev_data_may_hold_types_only_the_model_knows(tmp_path, tiny_corpus):
    """New training data without ORG, dev/test with ORG: the continued model knows ORG,
    so the split is scored on it instead of being refused as an unseen label."""
    from tagger.data import load_data
    from tagger.training import train

    first = train(
        tiny_config(data=str(tiny_corpus), output=str(tmp_path / "first"), max_epochs=1),
        progress=False,
    )
    new = tmp_path / "new.txt"
    new.write_text(
        conll_text([(t, g) for t, g in make_sentences(40, 7) if not any("ORG" in x for x in g)])
    )
    with pytest.raises(TaggerError, match="entity type ORG does not occur in the training data"):
        load_data(new, dev=tiny_corpus / "dev.txt")
    out = train(
        tiny_config(
            data=str(new),
            dev=str(tiny_corpus / "dev.txt"),
            init_from=str(first),
            output=str(tmp_path / "second"),
            max_epochs=1,
        ),
        progress=False,
    )
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["dev"]["per_type"]["ORG"]["support"] > 0


def test_the_annotation_loop_predict_correct_train_again(tmp_path, trained_model):
    """tagger predict's JSONL, corrected as a person would in a tool (a new PRODUCT
    type, one person span fixed), trains a continued model that learns the correction."""
    from tagger.data import read_source

    texts = [
        f"{p} bought a Walkman in {c} ."
        for p in ("Anna Berg", "Wei Chen")
        for c in ("Paris", "Oslo", "Tokyo", "Madrid")
    ] * 5
    raw = tmp_path / "raw.txt"
    raw.write_text("\n".join(texts) + "\n")
    predicted = tmp_path / "predicted.jsonl"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "tagger",
            "predict",
            str(raw),
            "--model",
            str(trained_model),
            "-o",
            str(predicted),
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in predicted.read_text().splitlines()]
    corrected = tmp_path / "corrected.jsonl"
    with corrected.open("w") as f:
        for record in records:
            text = record["text"]
            person = text.split(" bought")[0]
            start = text.index("Walkman")
            city = text.split(" in ")[1].rstrip(" .")
            record["entities"] = [  # what the annotator leaves after correcting
                {"start": 0, "end": len(person), "label": "PER", "text": person},
                {"start": start, "end": start + 7, "label": "PRODUCT", "text": "Walkman"},
                {
                    "start": text.index(city),
                    "end": text.index(city) + len(city),
                    "label": "LOC",
                    "text": city,
                },
            ]
            f.write(json.dumps(record) + "\n")
    corpus = read_source(corrected)  # detected as tagger predict's own format
    assert corpus.splits["train"][0].tags == [
        "B-PER",
        "I-PER",
        "O",
        "O",
        "B-PRODUCT",
        "O",
        "B-LOC",
        "O",
    ]
    out = train(
        tiny_config(
            data=str(corrected),
            dev_fraction=0.25,
            init_from=str(trained_model),
            output=str(tmp_path / "again"),
            max_epochs=8,
            lr=0.05,
        ),
        progress=False,
    )
    again = Tagger.load(out)
    assert "PRODUCT" in again.entity_types
    assert again.predict([["Anna", "Berg", "bought", "a", "Walkman", "in", "Oslo", "."]]) == [
        ["B-PER", "I-PER", "O", "O", "B-PRODUCT", "O", "B-LOC", "O"]
    ]


def test_replayed_sentences_are_partially_labelled_for_the_new_types(
    new_corpus, trained_model, tiny_corpus, tmp_path
):
    """The model (LOC, ORG, PER) never saw PROD, so in its replayed data an O may be a
    PROD mention: only the replayed sentences are partial, their O tokens may be any
    PROD label, their entity tokens and every new sentence's tokens only their tag."""
    lines = []
    setup = build(
        continued(new_corpus, trained_model, tmp_path, replay=str(tiny_corpus)), lines.append
    )
    replay, labels = setup.replay, setup.vocab.labels
    assert replay.open_types == ("PROD",)
    assert any("(partial labels: their O may be PROD)" in line for line in lines)
    assert replay.encoded.partial.tolist() == [False] * 40 + [True] * 60
    relaxed = replay.encoded.relaxed
    outside = labels.index("O")
    assert {labels[k] for k in relaxed[outside].nonzero()[0]} == {
        "O",
        "B-PROD",
        "I-PROD",
        "E-PROD",
        "S-PROD",
    }
    others = np.delete(np.arange(len(labels)), outside)
    assert np.array_equal(relaxed[others], np.eye(len(labels), dtype=bool)[others])
    drawn = replay.draw(np.random.default_rng(3))
    assert drawn.partial.tolist() == [False] * 40 + [True] * 20
    batch = make_batch(drawn, np.arange(len(drawn)))
    exact = torch.nn.functional.one_hot(batch.tags, len(labels)).bool() & batch.mask[..., None]
    assert torch.equal(batch.allowed[:40], exact[:40])
    is_o = (batch.tags[40:] == outside) & batch.mask[40:]
    assert is_o.any()
    assert torch.equal(batch.allowed[40:][~is_o], exact[40:][~is_o])
    assert torch.equal(
        batch.allowed[40:][is_o], torch.from_numpy(relaxed[outside]).expand(int(is_o.sum()), -1)
    )


def test_replay_of_data_that_annotates_every_type_trains_as_before(
    trained_model, tiny_corpus, tmp_path
):
    """New data of the model's own types: nothing is partial, no batch has ``allowed``."""
    config = continued(tiny_corpus, trained_model, tmp_path, replay=str(tiny_corpus))
    replay = build(config).replay
    assert replay.open_types == ()
    assert replay.encoded.partial is None and replay.encoded.relaxed is None
    drawn = replay.draw(np.random.default_rng(0))
    assert drawn.partial is None
    assert make_batch(drawn, np.arange(len(drawn))).allowed is None


def test_replay_with_partial_labels_does_not_unlearn_the_new_type(
    new_corpus, trained_model, tmp_path
):
    """Replayed data that has PROD mentions tagged O (annotated before PROD existed),
    twice as much as the new data each epoch: with partial labels the model still gives
    PROD to those mentions; trained as if the O were certain (``partial`` taken away,
    all else equal) it learns they are O about half the time."""
    from tagger.trainer import TrainingRun

    old_annotation = [
        (tokens, ["O" if tag.endswith("PROD") else tag for tag in tags])
        for tokens, tags in new_sentences(80, 5)
    ]
    replay = tmp_path / "replay.txt"
    replay.write_text(conll_text(make_sentences(60, 0) + old_annotation), encoding="utf-8")
    config = continued(
        new_corpus, trained_model, tmp_path, replay=str(replay), replay_fraction=2.0, max_epochs=6
    )
    probe = new_sentences(30, 11)  # held out, as the replayed ones but for their tags

    def prod_probability(partial: bool) -> float:
        """Mean probability of a PROD label on the probe's PROD tokens after training."""
        setup = build(config)
        assert setup.replay.open_types == ("PROD",)
        if not partial:
            setup.replay.encoded.partial = None
        run = TrainingRun(setup)
        for epoch in range(1, config.max_epochs + 1):
            run.epoch(epoch, progress=False)
        model, labels = run.final_model.eval(), setup.vocab.labels
        enc = encode(setup.vocab, [t for t, _ in probe], [g for _, g in probe])
        batch = make_batch(enc, np.arange(len(probe)))
        with torch.no_grad():
            marginals = model.decoder.marginals(model.emissions(batch), batch.mask)
        prod = torch.tensor([label.endswith("-PROD") for label in labels])
        gold = torch.zeros_like(batch.mask)
        for b, (_, tags) in enumerate(probe):
            gold[b, : len(tags)] = torch.tensor([tag.endswith("-PROD") for tag in tags])
        return marginals[..., prod].sum(-1)[gold].mean().item()

    with_partial, without = prod_probability(True), prod_probability(False)
    assert with_partial > 0.9  # measured 0.99
    assert without < with_partial - 0.3  # measured 0.49
