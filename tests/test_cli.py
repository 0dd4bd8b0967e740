"""The `tagger` command, through typer's CliRunner and as real subprocesses."""

from __future__ import annotations

import json
import os
import subprocess

import pytest
from conftest import REPO, conll_text, make_sentences
from seqeval.metrics.sequence_labeling import get_entities
from typer.testing import CliRunner

from tagger.cli import app

runner = CliRunner()
TINY = {
    "hidden_size": 16,
    "word_dim": 16,
    "char_dim": 8,
    "char_hidden": 8,
    "casing_dim": 4,
    "dropout": 0.1,
    "batch_size": 32,
    "max_epochs": 1,
    "cell": "lstm",
    "device": "cpu",
    "threads": 1,
}


def cli(*args, input=None):
    return runner.invoke(app, [str(a) for a in args], input=input)


def assert_ok(result):
    assert result.exit_code == 0, result.output


def assert_user_error(result, *fragments) -> str:
    """Exit 1, and stderr is exactly one ``error: ...`` line holding ``fragments``."""
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    for fragment in fragments:
        assert fragment in lines[0]
    assert result.stdout == ""
    return lines[0]


def subprocess_run(args, input=None, cwd=REPO):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    return subprocess.run(
        args, input=input, capture_output=True, text=True, cwd=cwd, env=env, timeout=120
    )


@pytest.fixture(scope="module")
def config_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("cli") / "tiny.json"
    path.write_text(json.dumps(TINY))
    return path


@pytest.fixture(scope="module")
def cli_model(tmp_path_factory, config_file, bundled_dir):
    """A model trained by `tagger train` on the bundled corpus; flags override the file."""
    out = tmp_path_factory.mktemp("cli-model") / "model"
    result = cli(
        "train", "--config", config_file, "--max-epochs", 2, "--cell", "gru", "-o", out, "--quiet"
    )
    assert_ok(result)
    return out


@pytest.fixture
def bad_corpus(tmp_path):
    (tmp_path / "train.txt").write_text("EU B-ORG\nrejects O\nGerman B-MISC O\n")
    return tmp_path


# ----------------------------------------------------------------- help


@pytest.mark.parametrize("command", [[], ["train"], ["evaluate"], ["predict"], ["data"]])
def test_help(command):
    result = cli(*command, "--help")
    assert_ok(result)
    assert "Usage:" in result.stdout


def test_help_lists_commands_and_no_args_shows_help():
    out = cli("--help").stdout
    for command in ("train", "evaluate", "predict", "data"):
        assert command in out
    result = cli()
    assert "Usage:" in result.output


def test_train_help_mentions_key_options():
    out = cli("train", "--help").stdout
    for option in ("--data", "--config", "--overwrite", "--cell", "--decoder", "--max-epochs"):
        assert option in out


# ----------------------------------------------------------------- data


def independent_counts(path):
    """Sentences, tokens and seqeval mentions of a CoNLL file, counted without tagger."""
    sentences, current = [], []
    for line in path.read_text(encoding="utf-8").splitlines() + [""]:
        fields = line.split()
        if not fields or fields[0] == "-DOCSTART-":
            if current:
                sentences.append(current)
            current = []
        else:
            current.append(fields[-1])
    return len(sentences), sum(map(len, sentences)), sum(len(get_entities(s)) for s in sentences)


def test_data_json_on_bundled_corpus(bundled_dir):
    result = cli("data", "--json")
    assert_ok(result)
    report = json.loads(result.stdout)
    files = {"train": "train.txt", "validation": "dev.txt", "test": "test.txt"}
    assert list(report["splits"]) == list(files)
    for split, name in files.items():
        row = report["splits"][split]
        assert (row["sentences"], row["tokens"], row["total_mentions"]) == independent_counts(
            bundled_dir / name
        )
        assert sum(row["mentions"].values()) == row["total_mentions"]
        assert row["source"] == str(bundled_dir / name)
    assert set(report["splits"]["train"]["mentions"]) == {"LOC", "MISC", "ORG", "PER"}
    assert json.loads(cli("data", bundled_dir, "--json").stdout) == report


def test_data_text_on_bundled_corpus(bundled_dir):
    result = cli("data")
    assert_ok(result)
    lines = result.stdout.splitlines()
    assert lines[0].split() == [
        "split",
        "sentences",
        "tokens",
        "LOC",
        "MISC",
        "ORG",
        "PER",
        "mentions",
        "scheme",
    ]
    assert [line.split()[0] for line in lines[1:4]] == ["train", "validation", "test"]
    sentences, tokens, mentions = independent_counts(bundled_dir / "train.txt")
    row = lines[1].split()
    assert row[1:3] == [f"{sentences:,}", f"{tokens:,}"] and row[-2] == f"{mentions:,}"
    assert "labels (9): B-LOC B-MISC B-ORG B-PER I-LOC I-MISC I-ORG I-PER O" in result.stdout


def test_data_on_tmp_corpus(tmp_path):
    (tmp_path / "train.txt").write_text(
        "Peter I-PER\nBlackburn I-PER\nin O\nBonn I-LOC\n\nPaul I-PER\n"
    )
    (tmp_path / "dev.txt").write_text("Bonn B-LOC\n")
    result = cli("data", tmp_path)
    assert_ok(result)
    assert result.stdout.splitlines()[:3] == [
        "split       sentences  tokens  LOC  PER  mentions  scheme",
        "train               2       5    1    2         3  IOB1  ",
        "validation          1       1    1    0         1  IOB2  ",
    ]
    assert "scheme: IOB1 (normalised to IOB2 for training)" in result.stdout
    assert "labels (4): B-LOC I-LOC I-PER O" in result.stdout
    report = json.loads(cli("data", tmp_path / "train.txt", "--json").stdout)
    assert report["splits"]["train"]["mentions"] == {"LOC": 1, "PER": 2}


def test_data_malformed(bad_corpus):
    assert_user_error(
        cli("data", bad_corpus), f"{bad_corpus / 'train.txt'}:3:", "expected 2 columns"
    )


def test_data_latin1(tmp_path):
    path = tmp_path / "train.txt"
    path.write_bytes(b"M\xfcller B-PER\n")
    assert_user_error(cli("data", path), f"{path}:1:", "--encoding latin-1")
    assert_ok(cli("data", path, "--encoding", "latin-1"))


# ----------------------------------------------------------------- train


def test_train_config_file_and_overriding_flags(cli_model):
    header = json.loads((cli_model / "config.json").read_text())
    config = header["config"]
    assert config["max_epochs"] == 2 and config["cell"] == "gru"  # flags win
    assert config["hidden_size"] == 16 and config["batch_size"] == 32  # from the file
    assert config["data"] is None and header["data"]["source"] == "bundled"
    assert len((cli_model / "epochs.jsonl").read_text().splitlines()) == 2


def test_train_refuses_existing_output(cli_model, config_file):
    before = (cli_model / "model.safetensors").read_bytes()
    line = assert_user_error(cli("train", "--config", config_file, "-o", cli_model, "--quiet"))
    assert line == f"error: {cli_model} already exists; pass --overwrite to replace it"
    assert (cli_model / "model.safetensors").read_bytes() == before


def test_train_malformed_data(bad_corpus, config_file, tmp_path):
    out = tmp_path / "m"
    assert_user_error(
        cli("train", "--config", config_file, "--data", bad_corpus, "-o", out, "-q"),
        f"{bad_corpus / 'train.txt'}:3:",
    )
    assert not out.exists()


def test_train_bad_config_file(tmp_path):
    path = tmp_path / "c.json"
    path.write_text('{"hidden_size": "big"}')
    line = assert_user_error(cli("train", "--config", path, "-o", tmp_path / "m"))
    assert line == f"error: {path}: hidden_size must be int, not 'big'"


def test_train_quiet_and_progress_output(tmp_path, config_file):
    corpus = tmp_path / "c"
    corpus.mkdir()
    sentences = make_sentences(10, 0)
    (corpus / "train.txt").write_text(conll_text(sentences))
    (corpus / "dev.txt").write_text(conll_text(sentences[:3]))
    result = cli("train", "--config", config_file, "--data", corpus, "-o", tmp_path / "m")
    assert_ok(result)
    assert "model saved to" in result.stdout and "epoch   1/1" in result.stdout
    result = cli(
        "train",
        "--config",
        config_file,
        "--data",
        corpus,
        "-o",
        tmp_path / "m",
        "--overwrite",
        "-q",
    )
    assert_ok(result)
    assert result.stdout == ""


# ----------------------------------------------------------------- evaluate


def test_evaluate_json(cli_model):
    from tagger.evaluation import evaluate

    result = cli("evaluate", cli_model, "--json")
    assert_ok(result)
    scores = json.loads(result.stdout)
    assert scores == evaluate(cli_model, calibration=True)  # the bundled test split, as trained
    assert scores["mode"] == "default"
    assert set(scores["calibration"]) == {"entities", "bins", "ece", "high_confidence"}
    strict = json.loads(
        cli("evaluate", cli_model, "--json", "--strict", "--split", "validation").stdout
    )
    assert strict["mode"] == "strict"
    assert strict == evaluate(cli_model, split="validation", strict=True, calibration=True)


def test_evaluate_errors_and_threshold(cli_model):
    result = cli("evaluate", cli_model, "--errors", "--min-confidence", "0.99", "--top", "3")
    assert_ok(result)
    out = result.stdout
    assert "confidence of the predicted entities (temperature 1, uncalibrated" in out
    assert "expected calibration error:" in out
    assert "with --min-confidence 0.99: precision" in out
    assert "Errors by kind" in out and "Confusion (rows: gold type" in out
    data = json.loads(cli("evaluate", cli_model, "--json", "--errors").stdout)
    assert data["errors"]["mentions"]["gold"] == data["support"]
    bad = cli("evaluate", cli_model, "--min-confidence", "2")
    assert bad.exit_code == 1
    assert bad.output.strip() == "error: --min-confidence must be between 0 and 1, not 2.0"


def test_evaluate_text(cli_model):
    result = cli("evaluate", cli_model)
    assert_ok(result)
    lines = result.stdout.splitlines()
    assert lines[0] == f"{cli_model} on the bundled corpus (test, default mode)"
    assert lines[2].split() == ["precision", "recall", "f1", "support"]
    assert any(line.split()[:1] == ["micro"] for line in lines)


def test_evaluate_other_data_and_errors(cli_model, tmp_path, bad_corpus):
    good = tmp_path / "good"
    good.mkdir()
    (good / "train.txt").write_text("Bonn B-LOC\n\nEU B-ORG\n")
    result = cli("evaluate", cli_model, "--data", good, "--split", "train", "--json")
    assert_ok(result)
    assert json.loads(result.stdout)["support"] == 2
    assert_user_error(
        cli("evaluate", cli_model, "--data", good, "--split", "test"), "no 'test' split in the data"
    )
    assert_user_error(
        cli("evaluate", cli_model, "--data", bad_corpus, "--split", "train"),
        f"{bad_corpus / 'train.txt'}:3:",
    )
    assert_user_error(cli("evaluate", tmp_path / "nope"), "no such model folder")


# ----------------------------------------------------------------- predict


def test_predict_file_jsonl(cli_model, bundled_dir):
    sample = bundled_dir / "sample.txt"
    result = cli("predict", sample, "-m", cli_model)
    assert_ok(result)
    lines = sample.read_text(encoding="utf-8").splitlines()
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["text"] for r in records] == lines
    for r in records:
        for e in r["entities"]:
            assert r["text"][e["start"] : e["end"]] == e["text"]
            assert e["label"] in ("LOC", "MISC", "ORG", "PER")


def test_predict_stdin_conll_and_output_file(cli_model, tmp_path):
    text = "Angela Merkel visited Paris.\nThe EU rejected it.\n"
    result = cli("predict", "-", "-m", cli_model, "--format", "conll", input=text)
    assert_ok(result)
    blocks = result.stdout.strip("\n").split("\n\n")
    assert [[line.split()[0] for line in b.splitlines()] for b in blocks] == [
        ["Angela", "Merkel", "visited", "Paris", "."],
        ["The", "EU", "rejected", "it", "."],
    ]
    out = tmp_path / "out.conll"
    result = cli("predict", "-", "-m", cli_model, "-f", "conll", "-o", out, input=text)
    assert_ok(result)
    assert (
        result.stdout == ""
        and out.read_text()
        == cli("predict", "-", "-m", cli_model, "-f", "conll", input=text).stdout
    )


def test_predict_scores_and_min_confidence(trained_model, tmp_path):
    model = trained_model
    text = (
        "Angela Merkel visited Paris on Monday .\nWei Chen works for Globex in Tokyo .\n"
        "Zyxwv Qwerty met John Smith yesterday .\n"
    )
    result = cli("predict", "-", "-m", model, input=text)
    assert_ok(result)
    entities = [e for line in result.stdout.splitlines() for e in json.loads(line)["entities"]]
    assert entities and all(0 < e["score"] <= 1 for e in entities)  # on by default
    result = cli("predict", "-", "-m", model, "--no-scores", input=text)
    plain = [e for line in result.stdout.splitlines() for e in json.loads(line)["entities"]]
    assert plain == [{k: v for k, v in e.items() if k != "score"} for e in entities]
    result = cli("predict", "-", "-m", model, "-f", "conll", "--scores", input=text)
    assert_ok(result)
    rows = [line.split(" ") for line in result.stdout.splitlines() if line]
    assert all(len(r) == 3 and 0 < float(r[2]) <= 1 and len(r[2]) == 6 for r in rows)
    tags = cli("predict", "-", "-m", model, "-f", "conll", input=text).stdout
    assert [r[:2] for r in rows] == [line.split(" ") for line in tags.splitlines() if line]
    # A threshold between the scores drops the less sure entities, in both formats.
    scores = sorted({e["score"] for e in entities})
    assert len(scores) > 1
    cut = (scores[0] + scores[-1]) / 2
    result = cli("predict", "-", "-m", model, "--min-confidence", cut, input=text)
    kept = [e for line in result.stdout.splitlines() for e in json.loads(line)["entities"]]
    assert kept == [e for e in entities if e["score"] > cut]
    result = cli("predict", "-", "-m", model, "-f", "conll", "--min-confidence", cut, input=text)
    conll = [line.split(" ")[1] for line in result.stdout.splitlines() if line]
    assert sum(t.startswith("B-") for t in conll) == len(kept)
    page = tmp_path / "page.html"
    assert_ok(cli("predict", "-", "-m", model, "--html", page, "--min-confidence", 1, input=text))
    for bad in ("1.5", "-0.5", "nan"):
        line = assert_user_error(cli("predict", "-", "-m", model, "--min-confidence", bad))
        assert line == f"error: --min-confidence must be between 0 and 1, not {float(bad)}"
    assert_user_error(
        cli("predict", "-", "-m", model, "--html", page, "--scores"), "--html shows no scores"
    )


def test_predict_pretokenized(cli_model, tmp_path):
    path = tmp_path / "tokens.txt"
    path.write_text("Angela\nMerkel\nvisited\nParis\n\nEU\nsaid\n")
    result = cli("predict", path, "-m", cli_model, "--pretokenized")
    assert_ok(result)
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["tokens"] for r in records] == [
        ["Angela", "Merkel", "visited", "Paris"],
        ["EU", "said"],
    ]
    assert [len(r["tags"]) for r in records] == [4, 2]


def test_predict_missing_model(tmp_path):
    (tmp_path / "in.txt").write_text("Paris\n")
    line = assert_user_error(cli("predict", tmp_path / "in.txt", "-m", tmp_path / "nope"))
    assert (
        line == f"error: {tmp_path / 'nope'}: no such model folder; train one with `tagger train`"
    )


def test_predict_non_utf8_input(cli_model, tmp_path):
    path = tmp_path / "in.txt"
    path.write_bytes(b"Paris is nice.\nM\xfcller went to Bonn.\n")
    out = tmp_path / "out.jsonl"
    line = assert_user_error(cli("predict", path, "-m", cli_model, "-o", out))
    assert line == (
        f"error: {path}:2: byte 0xfc at offset 16 is not valid utf-8; "
        "if the file is Latin-1, pass --encoding latin-1"
    )
    assert not out.exists()
    result = cli("predict", path, "-m", cli_model, "--encoding", "latin-1")
    assert_ok(result)
    assert json.loads(result.stdout.splitlines()[1])["text"] == "Müller went to Bonn."


def test_predict_binary_input(cli_model, tmp_path):
    path = tmp_path / "model.bin"
    path.write_bytes(b"PK\x03\x04\x00\x00binary\x00stuff\n")
    out = tmp_path / "out.jsonl"
    line = assert_user_error(cli("predict", path, "-m", cli_model, "-o", out))
    assert line == (
        f"error: {path}:1: contains NUL bytes; is this a binary file "
        "(or UTF-16 without a byte-order mark)?"
    )
    assert not out.exists()


def test_predict_missing_input(cli_model, tmp_path):
    assert_user_error(
        cli("predict", tmp_path / "nope.txt", "-m", cli_model), "nope.txt: no such file"
    )


# ----------------------------------------------------------------- real processes


def test_python_cli_py_help(python):
    proc = subprocess_run([python, "cli.py", "--help"])
    assert proc.returncode == 0, proc.stderr
    assert "Usage:" in proc.stdout and "predict" in proc.stdout


def test_python_m_tagger_help_is_lazy(python):
    proc = subprocess_run([python, "-m", "tagger", "--help"])
    assert proc.returncode == 0 and "Usage:" in proc.stdout
    code = (
        "import sys, tagger.cli; print(sorted(set(sys.modules) & {'torch', 'spacy', 'datasets'}))"
    )
    proc = subprocess_run([python, "-c", code])
    assert proc.stdout.strip() == "[]"


def test_python_m_tagger_error(python, bad_corpus):
    proc = subprocess_run([python, "-m", "tagger", "data", str(bad_corpus / "train.txt")])
    assert proc.returncode == 1
    assert proc.stdout == ""
    assert proc.stderr == (
        f"error: {bad_corpus / 'train.txt'}:3: expected 2 columns like the first token line, "
        "found 3: 'German B-MISC O'\n"
    )


def test_python_m_tagger_predict_stdin(python, cli_model):
    proc = subprocess_run(
        [python, "-m", "tagger", "predict", "-", "-m", str(cli_model)],
        input="Angela Merkel visited Paris.\n\nShares rose.\n",
    )
    assert proc.returncode == 0, proc.stderr
    records = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [r["text"] for r in records] == ["Angela Merkel visited Paris.", "", "Shares rose."]


def test_public_api_exports():
    import tagger
    from tagger.config import TrainConfig
    from tagger.data import load_data
    from tagger.errors import TaggerError
    from tagger.predict import Tagger
    from tagger.training import train

    assert tagger.load_data is load_data and tagger.train is train
    assert tagger.Tagger is Tagger and tagger.TrainConfig is TrainConfig
    assert tagger.TaggerError is TaggerError
    assert set(tagger.__all__) >= {"load_data", "Vocab", "evaluate", "__version__"}
    with pytest.raises(AttributeError):
        tagger.no_such_thing  # noqa: B018


def test_export_spacy(trained_model, tmp_path):
    out = tmp_path / "pipeline"
    assert_ok(cli("export-spacy", trained_model, out))
    assert (out / "config.cfg").is_file() and (out / "tagger_ner" / "model.safetensors").is_file()
    assert_user_error(cli("export-spacy", trained_model, out), "already exists", "--overwrite")
    assert_ok(cli("export-spacy", trained_model, out, "--overwrite", "--lang", "de"))
    assert json.loads((out / "meta.json").read_text())["lang"] == "de"
    assert_user_error(
        cli("export-spacy", tmp_path / "missing", tmp_path / "x"), "no such model folder"
    )


def test_predict_html(trained_model, tmp_path):
    text = tmp_path / "in.txt"
    text.write_text("Angela Merkel visited Paris on Monday.\n\nNothing happened today.\n")
    page = tmp_path / "out.html"
    result = cli("predict", text, "-m", trained_model, "--html", page)
    assert_ok(result)
    assert result.stdout == ""
    html = page.read_text()
    assert html.startswith("<!DOCTYPE html>")
    for fragment in ("Angela Merkel", "PER", "Paris", "LOC", "Nothing happened today."):
        assert fragment in html
    assert_user_error(
        cli("predict", text, "-m", trained_model, "--html", page, "--pretokenized"), "--html"
    )


def test_help_shows_defaults():
    result = cli("train", "--help")
    page = " ".join(result.stdout.split())  # help texts (from config.HELP) may wrap anywhere
    assert "recurrent cell: rnn, lstm or gru [default: lstm]" in page


def test_train_unk_replace_flag(tmp_path):
    line = assert_user_error(cli("train", "--unk-replace", "-1", "-o", tmp_path / "m"))
    assert line == "error: config: unk_replace must be 0 or more, not -1.0"
    assert not (tmp_path / "m").exists()


def test_report_writes_one_page_and_refuses_to_replace(cli_model, tmp_path):
    out = tmp_path / "report.html"
    result = cli("report", cli_model, "-o", str(out))
    assert_ok(result)
    page = out.read_text()
    assert page.startswith("<!DOCTYPE html>") and "Confusion between entity types" in page
    again = cli("report", cli_model, "-o", str(out))
    assert again.exit_code == 1
    assert again.output.strip().startswith("error: ") and "--overwrite" in again.output
