"""The ``tagger_ner`` spaCy component, with real spaCy: entities, batching, modes,
serialization, the exported pipeline in a fresh interpreter, spaCy's own scorer."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from importlib.metadata import entry_points

import datasets
import pytest
import spacy
import srsly
from conftest import make_sentences

from tagger import schemes
from tagger.errors import TaggerError
from tagger.evaluation import evaluate
from tagger.spacy_component import (
    MODEL_FILES,
    build_pipeline,
    export_spacy,
    render_html,
    spacy_scores,
)

TEXT = (
    "Angela Merkel visited Paris on Monday. Wei Chen works for Globex in Tokyo.\n\n"
    "Shares of  Initech rose 5 percent. Zyxwv Qwerty met John Smith yesterday."
)


def ents(doc) -> list[tuple[int, int, str]]:
    return [(e.start_char, e.end_char, e.label_) for e in doc.ents]


def texts() -> list[str]:
    """50 varied texts: one to three template sentences, plus empty and odd ones."""
    sentences = [" ".join(tokens) for tokens, _ in make_sentences(150, seed=7)]
    out = [" ".join(sentences[i : i + 1 + i % 3]) for i in range(0, 150, 3)]
    out[5], out[17], out[30] = "", "  \n ", "Paris.Berlin!!  Tokyo\n\nOslo"
    return out


@pytest.fixture(scope="module")
def nlp(trained_model):
    """A blank English pipeline with a sentencizer and the component, as a user adds it."""
    nlp = spacy.blank("en")
    nlp.add_pipe("sentencizer")
    nlp.add_pipe("tagger_ner", config={"model": str(trained_model)})
    return nlp


@pytest.fixture
def model_copy(trained_model, tmp_path):
    """A throwaway copy of the trained model folder, for tests that delete it."""
    return shutil.copytree(trained_model, tmp_path / "model-copy")


def entry_point_installed() -> bool:
    return any(ep.name == "tagger_ner" for ep in entry_points(group="spacy_factories"))


# --------------------------------------------------------------------------- tagging


def test_entities_equal_predict_text(nlp, tagger_model):
    doc = nlp(TEXT)
    expected = [(e["start"], e["end"], e["label"]) for e in tagger_model.predict_text(TEXT)]
    assert ents(doc) == expected
    assert ("Angela Merkel", "PER") in [(e.text, e.label_) for e in doc.ents]
    for ent in doc.ents:
        assert [t.ent_iob_ for t in ent] == ["B"] + ["I"] * (len(ent) - 1)
        assert {t.ent_type_ for t in ent} == {ent.label_}
        assert 0 < ent._.tagger_confidence <= 1
    inside = {t.i for e in doc.ents for t in e}
    assert all(t.ent_iob_ == "O" and t.ent_type_ == "" for t in doc if t.i not in inside)
    assert all(t.ent_iob_ == "O" for t in doc if t.is_space)


def test_confidence_is_the_span_probability(nlp, tagger_model):
    doc = nlp("Angela Merkel visited Paris on Monday.")
    tokens = [t.text for t in doc]
    (spans,) = tagger_model.predict_spans([tokens])
    assert [(e.start, e.end, e.label_) for e in doc.ents] == [
        (s["start"], s["end"], s["label"]) for s in spans
    ]
    assert [round(e._.tagger_confidence, 4) for e in doc.ents] == [s["score"] for s in spans]


def test_without_sentence_boundaries_the_doc_is_one_sentence(trained_model, tagger_model):
    nlp = spacy.blank("en")
    nlp.add_pipe("tagger_ner", config={"model": str(trained_model)})
    doc = nlp(TEXT)
    assert not doc.has_annotation("SENT_START")
    tokens = [t for t in doc if not t.is_space]
    (tags,) = tagger_model.predict([[t.text for t in tokens]])
    expected = [
        (tokens[s].idx, tokens[e - 1].idx + len(tokens[e - 1]), label)
        for s, e, label in schemes.spans(tags)
    ]
    assert ents(doc) == expected and expected


def test_pipe_equals_per_doc_with_one_model_call_per_group(nlp, monkeypatch):
    from tagger import spacy_component

    batch = texts()
    single = [nlp(text) for text in batch]
    tagger = nlp.get_pipe("tagger_ner").tagger
    calls = []
    original = tagger.predict_encoded

    def counting(enc, *args, **kwargs):
        calls.append(len(enc))
        return original(enc, *args, **kwargs)

    monkeypatch.setattr(tagger, "predict_encoded", counting)
    assert len(list(nlp.pipe(batch, batch_size=8))) == 50
    assert len(calls) == 1  # 50 short docs hold far fewer than CALL_TOKENS tokens
    calls.clear()
    n_tokens = sum(len(d) for d in single)
    monkeypatch.setattr(spacy_component, "CALL_TOKENS", n_tokens // 2)
    assert len(list(nlp.pipe(batch, batch_size=8))) == 50
    assert len(calls) == 2  # half the tokens, then the rest
    calls.clear()
    monkeypatch.setattr(spacy_component, "CALL_TOKENS", 1)
    piped = list(nlp.pipe(batch, batch_size=8))
    assert len(calls) == 7  # ceil(50 / 8): one forward pass per batch_size docs
    assert [d.text for d in piped] == batch
    assert [ents(d) for d in piped] == [ents(d) for d in single]
    assert sum(len(d.ents) for d in piped) > 40
    for a, b in zip(piped, single):
        assert [e._.tagger_confidence for e in a.ents] == pytest.approx(
            [e._.tagger_confidence for e in b.ents], abs=1e-5
        )


def test_predict_leaves_the_docs_and_set_annotations_sets_them(nlp):
    component = nlp.get_pipe("tagger_ner")
    doc = nlp.get_pipe("sentencizer")(nlp.make_doc(TEXT))
    (found,) = component.predict([doc])
    assert doc.ents == ()  # predict computes, nothing more
    assert found and all(isinstance(c, float) and 0 < c <= 1 for *_, c in found)
    component.set_annotations([doc], [found])
    assert [(e.start, e.end, e.label_, e._.tagger_confidence) for e in doc.ents] == found
    assert ents(doc) == ents(nlp(TEXT))


def test_call_goes_through_the_error_handler(tagger_model, monkeypatch):
    nlp = build_pipeline(tagger_model)
    component = nlp.get_pipe("tagger_ner")

    def boom(docs):
        raise RuntimeError("boom")

    monkeypatch.setattr(component, "predict", boom)
    with pytest.raises(RuntimeError, match="boom"):  # spaCy's default handler re-raises
        nlp(TEXT)
    handled = []
    component.set_error_handler(lambda name, proc, docs, err: handled.append((name, docs, err)))
    doc = nlp.make_doc("Angela Merkel visited Paris.")
    assert component(doc) is doc and doc.ents == ()  # the doc, untagged, goes on
    assert [(n, d, str(e)) for n, d, e in handled] == [("tagger_ner", [doc], "boom")]
    assert list(component.pipe([nlp.make_doc("Paris"), nlp.make_doc("Oslo")])) == []
    assert len(handled) == 2 and len(handled[1][1]) == 2


def test_tag_docs_gathers_sentences_like_the_component(tagger_model):
    """Both use ``doc_sentences``: a doc without sentence boundaries is one sentence."""
    nlp = build_pipeline(tagger_model)
    component = nlp.get_pipe("tagger_ner")
    for doc in (nlp(TEXT), nlp.make_doc(TEXT)):  # with and without sentence boundaries
        (spans,) = tagger_model.tag_docs([doc])
        component(doc)
        assert [s[:3] for s in spans] == ents(doc) and spans
        assert [s[3] for s in spans] == [e._.tagger_confidence for e in doc.ents]


def test_ents_mode_overwrite_and_fill(trained_model, nlp):
    text = "Angela Merkel visited Paris on Monday."
    ours = ents(nlp(text))
    assert (0, 13, "PER") in ours and (22, 27, "LOC") in ours
    patterns = [
        {"label": "CUSTOM", "pattern": "Merkel"},  # overlaps our PER
        {"label": "DAY", "pattern": "Monday"},  # overlaps nothing of ours
    ]
    found = {}
    for mode in ("overwrite", "fill"):
        pipeline = spacy.blank("en")
        pipeline.add_pipe("sentencizer")
        pipeline.add_pipe("entity_ruler").add_patterns(patterns)
        pipeline.add_pipe("tagger_ner", config={"model": str(trained_model), "ents_mode": mode})
        found[mode] = ents(pipeline(text))
    assert found["overwrite"] == ours
    assert found["fill"] == [(7, 13, "CUSTOM"), (22, 27, "LOC"), (31, 37, "DAY")]


def test_min_confidence_leaves_out_the_less_sure_entities(trained_model, nlp, tmp_path):
    doc = nlp(TEXT)
    sure = sorted(e._.tagger_confidence for e in doc.ents)
    assert len(sure) > 2 and sure[0] < sure[-1]
    cut = (sure[0] + sure[1]) / 2
    strict = spacy.blank("en")
    strict.add_pipe("sentencizer")
    strict.add_pipe("tagger_ner", config={"model": str(trained_model), "min_confidence": cut})
    kept = strict(TEXT)
    want = [e for e in doc.ents if e._.tagger_confidence > cut]
    assert ents(kept) == [(e.start_char, e.end_char, e.label_) for e in want]
    dropped = [e for e in doc.ents if e._.tagger_confidence < cut]
    assert dropped and all(t.ent_iob_ == "O" for e in dropped for t in kept[e.start : e.end])
    strict.to_disk(tmp_path / "strict")  # the threshold is part of the pipeline's config
    assert ents(spacy.load(tmp_path / "strict")(TEXT)) == ents(kept)


def test_bad_configs_raise_tagger_error(tmp_path):
    nlp = spacy.blank("en")
    with pytest.raises(TaggerError, match="ents_mode"):
        nlp.add_pipe("tagger_ner", config={"ents_mode": "merge"})
    with pytest.raises(
        TaggerError, match="^tagger_ner: min_confidence must be between 0 and 1, not 1.5$"
    ):
        nlp.add_pipe("tagger_ner", config={"min_confidence": 1.5})
    nlp.add_pipe("tagger_ner", config={"model": str(tmp_path / "missing")})
    with pytest.raises(TaggerError, match="missing: no such model folder"):
        nlp("Paris")
    with pytest.raises(TaggerError, match="no such model folder"):
        nlp.initialize()
    empty = spacy.blank("en")
    empty.add_pipe("tagger_ner")
    with pytest.raises(TaggerError, match="has no model"):
        empty("Paris")
    assert empty.get_pipe("tagger_ner").labels == ()


def test_initialize_loads_and_keeps_a_loaded_model(trained_model):
    nlp = spacy.blank("en")
    component = nlp.add_pipe("tagger_ner", config={"model": str(trained_model)})
    nlp.initialize()
    assert component.labels == ("LOC", "ORG", "PER")
    loaded = component.tagger
    nlp.initialize()
    assert component.tagger is loaded


# --------------------------------------------------------------------- serialization


def test_bytes_round_trip(nlp):
    data = nlp.get_pipe("tagger_ner").to_bytes()
    assert sorted(srsly.msgpack_loads(data)) == sorted(MODEL_FILES)
    other = spacy.blank("en")
    other.add_pipe("sentencizer")
    other.add_pipe("tagger_ner")
    other.from_bytes(nlp.to_bytes())
    docs = [nlp(t) for t in texts()[:20]]
    again = [other(t) for t in texts()[:20]]
    assert [ents(d) for d in again] == [ents(d) for d in docs]
    assert [e._.tagger_confidence for d in again for e in d.ents] == pytest.approx(
        [e._.tagger_confidence for d in docs for e in d.ents]
    )


def test_from_bytes_rejects_other_data(nlp):
    component = spacy.blank("en").add_pipe("tagger_ner")
    with pytest.raises(TaggerError, match="not serialized tagger_ner data"):
        component.from_bytes(b"\xc1 not msgpack")
    files = srsly.msgpack_loads(nlp.get_pipe("tagger_ner").to_bytes())
    with pytest.raises(TaggerError, match="exactly"):
        component.from_bytes(srsly.msgpack_dumps({**files, "../escape.txt": b"x"}))
    files["model.safetensors"] = files["model.safetensors"][:-10]
    with pytest.raises(TaggerError, match="checksum"):
        component.from_bytes(srsly.msgpack_dumps(files))


def test_to_disk_is_self_contained(model_copy, tmp_path):
    nlp = spacy.blank("en")
    nlp.add_pipe("sentencizer")
    nlp.add_pipe("tagger_ner", config={"model": str(model_copy)})
    before = ents(nlp(TEXT))
    out = tmp_path / "pipeline"
    nlp.to_disk(out)
    nlp.to_disk(out)  # again over the existing folder: the component folder is replaced
    assert set(MODEL_FILES) <= {p.name for p in (out / "tagger_ner").iterdir()}
    shutil.rmtree(model_copy)
    loaded = spacy.load(out)
    assert ents(loaded(TEXT)) == before


def test_export_spacy_writes_a_loadable_pipeline(model_copy, tmp_path, nlp):
    out = export_spacy(model_copy, tmp_path / "exported")
    config = spacy.util.load_config(out / "config.cfg")
    assert config["nlp"]["pipeline"] == ["sentencizer", "tagger_ner"]
    assert config["components"]["tagger_ner"]["model"] is None  # nothing points back
    meta = json.loads((out / "meta.json").read_text())
    assert meta["name"] == "tagger_ner" and meta["labels"]["tagger_ner"] == ["LOC", "ORG", "PER"]
    shutil.rmtree(model_copy)
    assert ents(spacy.load(out)(TEXT)) == ents(nlp(TEXT))


def test_export_spacy_refuses_what_it_should(trained_model, tmp_path):
    out = tmp_path / "exported"
    out.mkdir()
    with pytest.raises(TaggerError, match="already exists"):
        export_spacy(trained_model, out)
    export_spacy(trained_model, out, overwrite=True)  # an empty folder: nothing to lose
    export_spacy(trained_model, out, overwrite=True)  # our own export
    assert (out / "config.cfg").is_file()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(TaggerError, match="is a folder of other files"):
        export_spacy(trained_model, out, overwrite=True)
    assert (out / "notes.txt").read_text() == "mine"
    (out / "notes.txt").unlink()
    (tmp_path / "a-file").write_text("mine")
    with pytest.raises(TaggerError, match="is a file, not a spaCy pipeline exported by tagger"):
        export_spacy(trained_model, tmp_path / "a-file", overwrite=True)
    assert (tmp_path / "a-file").read_text() == "mine"
    (tmp_path / "a-file").unlink()
    with pytest.raises(TaggerError, match="no such model folder"):
        export_spacy(tmp_path / "missing", tmp_path / "other")
    with pytest.raises(TaggerError, match="no language 'zz'"):
        export_spacy(trained_model, tmp_path / "other", lang="zz")
    assert not (tmp_path / "other").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["exported"]  # no temporary leftovers


def test_export_spacy_is_atomic_and_clears_dead_temporaries(trained_model, tmp_path, monkeypatch):
    from spacy.language import Language

    out = export_spacy(trained_model, tmp_path / "exported")
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    (tmp_path / ".exported.tmp-999999-abc").mkdir()  # a killed export's leftover

    def fail(self, path, **kwargs):
        (path / "half").write_text("x")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Language, "to_disk", fail)
    with pytest.raises(TaggerError, match=r"^cannot write the pipeline to .*: No space left"):
        export_spacy(trained_model, out, overwrite=True)
    assert [p.name for p in tmp_path.iterdir()] == ["exported"]
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before


@pytest.mark.skipif(not entry_point_installed(), reason="entry point not installed yet")
def test_exported_pipeline_loads_in_a_fresh_interpreter(model_copy, tmp_path, nlp):
    """Only the spacy_factories entry point can bring the factory in: no tagger import."""
    out = export_spacy(model_copy, tmp_path / "exported")
    shutil.rmtree(model_copy)
    script = (
        "import json, sys, spacy\n"
        "nlp = spacy.load(sys.argv[1])\n"
        "doc = nlp(sys.argv[2])\n"
        "print(json.dumps([[e.start_char, e.end_char, e.label_, e._.tagger_confidence]"
        " for e in doc.ents]))\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", script, str(out), TEXT], capture_output=True, text=True, timeout=300
    )
    assert run.returncode == 0, run.stderr
    found = json.loads(run.stdout)
    expected = nlp(TEXT)
    assert [tuple(e[:3]) for e in found] == ents(expected)
    assert [e[3] for e in found] == pytest.approx(
        [e._.tagger_confidence for e in expected.ents], abs=1e-5
    )
    package = subprocess.run(
        [sys.executable, "-m", "spacy", "package", str(out), str(tmp_path)]
        + ["--name", "x", "--version", "0.0.1", "--force", "--build", "none"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert package.returncode == 0, package.stdout + package.stderr
    assert (tmp_path / "en_x-0.0.1" / "en_x" / "en_x-0.0.1" / "tagger_ner").is_dir()


# ------------------------------------------------------------------ scoring, display


def test_spacy_scores_agree_with_seqeval(tagger_model):
    """spaCy's entity scores equal seqeval's on the same tokens, errors included."""
    rows = make_sentences(40, seed=11)
    # Gold noise so that precision and recall are both below 1: retype some mentions,
    # shorten others; and a sentence-final-looking "." mid-sentence.
    for n, (_, tags) in enumerate(rows):
        if n % 3 == 0 and tags[0].startswith("B-"):
            tags[0] = "B-ORG" if tags[0] != "B-ORG" else "B-LOC"
            tags[1:] = ["I-" + tags[0][2:] if t.startswith("I-") else t for t in tags[1:]]
        if n % 4 == 1:
            tags[:] = ["O" if t.startswith("I-") else t for t in tags]
    rows.append((["Paris", ".", "Berlin", "is", "nice"], ["B-LOC", "O", "B-LOC", "O", "O"]))
    labels = schemes.label_set(["LOC", "ORG", "PER"], "IOB2")
    split = datasets.Dataset.from_dict(
        {"tokens": [r[0] for r in rows], "ner_tags": [r[1] for r in rows]},
        features=datasets.Features(
            {
                "tokens": datasets.Sequence(datasets.Value("string")),
                "ner_tags": datasets.Sequence(datasets.ClassLabel(names=labels)),
            }
        ),
    )
    ours = evaluate(tagger_model, split)
    assert 0.3 < ours["precision"] < 1 and 0.3 < ours["recall"] < 1
    scores = spacy_scores(build_pipeline(tagger_model), split)
    assert scores["ents_f"] == pytest.approx(ours["f1"], abs=1e-3)
    assert scores["ents_p"] == pytest.approx(ours["precision"], abs=1e-3)
    assert scores["ents_r"] == pytest.approx(ours["recall"], abs=1e-3)
    for etype, row in ours["per_type"].items():
        assert scores["ents_per_type"][etype]["f"] == pytest.approx(row["f1"], abs=1e-3)


def test_build_pipeline_and_render_html(tagger_model):
    nlp = build_pipeline(tagger_model)
    assert nlp.pipe_names == ["sentencizer", "tagger_ner"]
    assert nlp.config["components"]["tagger_ner"]["model"] is None
    html = render_html(nlp.pipe([TEXT, "", "nothing here"]))
    assert html.startswith("<!DOCTYPE html>")
    for ent in nlp(TEXT).ents:
        assert ent.text in html and ent.label_ in html
