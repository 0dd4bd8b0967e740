"""Config files: `tagger init-config` writes commented TOML; `train --config` reads TOML or JSON."""

from __future__ import annotations

import json
import re
from dataclasses import fields

import pytest
from test_cli import TINY, assert_ok, assert_user_error, cli

from tagger.config import HELP, TrainConfig, toml_template, tomllib  # tomli on 3.10
from tagger.data import load_data
from tagger.errors import TaggerError

FIELDS = [f.name for f in fields(TrainConfig)]
UNSET = [name for name in FIELDS if getattr(TrainConfig(), name) is None]


def test_every_field_has_a_one_line_help():
    assert list(HELP) == FIELDS  # same keys, same order: a new field needs its comment
    assert all(text and "\n" not in text for text in HELP.values())


def test_template_parses_back_to_the_defaults():
    values = tomllib.loads(toml_template())
    assert sorted(values) == sorted(set(FIELDS) - set(UNSET))
    assert TrainConfig.from_dict(values) == TrainConfig()
    assert UNSET == [
        "data",
        "dev",
        "test",
        "revision",
        "map_labels",
        "init_from",
        "replay",
        "teacher",
        "unlabeled",
        "max_vocab",
        "embeddings",
        "lr_decay",
        "batch_size",
        "max_epochs",
        "patience",
        "threads",
    ]


def test_template_comments_every_key_and_comments_out_unset_ones():
    lines = toml_template().splitlines()
    for name in FIELDS:
        prefix = "# " if name in UNSET else ""
        [at] = [i for i, line in enumerate(lines) if re.match(rf"{prefix}{name} = ", line)]
        assert lines[at - 1] == f"# {HELP[name]}"
    assert '# data = "..."' in lines and "# threads = ..." in lines


def test_init_config_default_name_refuses_overwrite_and_force(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = cli("init-config")
    assert_ok(result)
    path = tmp_path / "tagger.toml"
    assert result.stdout.startswith("wrote tagger.toml; ")
    assert path.read_text() == toml_template()
    path.write_text("cell = 'gru'\n")
    line = assert_user_error(cli("init-config"))
    assert line == "error: tagger.toml already exists; pass --force to replace it"
    assert path.read_text() == "cell = 'gru'\n"
    assert_ok(cli("init-config", "--force"))
    assert path.read_text() == toml_template()
    assert_user_error(cli("init-config", tmp_path / "no" / "dir.toml"), "cannot write")


def test_init_config_then_train_with_the_edited_file(tmp_path, tiny_corpus):
    path = tmp_path / "run.toml"
    assert_ok(cli("init-config", path))
    text = path.read_text()
    edits = {**TINY, "max_epochs": 2, "output": str(tmp_path / "model")}
    for key, value in edits.items():
        value = json.dumps(value) if isinstance(value, str) else value
        text, n = re.subn(rf"(?m)^(# )?{key} = .*$", f"{key} = {value}", text)
        assert n == 1, key
    text = text.replace('# data = "..."', f"data = {json.dumps(str(tiny_corpus))}")
    path.write_text(text)
    assert TrainConfig.from_file(path) == TrainConfig(**edits, data=str(tiny_corpus))

    assert_ok(cli("train", "--config", path, "--cell", "gru", "-q"))
    header = json.loads((tmp_path / "model" / "config.json").read_text())
    expected = TrainConfig(**{**edits, "cell": "gru"}, data=str(tiny_corpus))
    sentences = len(load_data(tiny_corpus)["train"])  # the schedule left unset follows it
    assert TrainConfig.from_dict(header["config"]) == expected.scheduled(sentences)[0]
    assert len((tmp_path / "model" / "epochs.jsonl").read_text().splitlines()) == 2


def test_json_config_files_still_work(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"cell": "gru", "dropout": 0}))
    assert TrainConfig.from_file(path) == TrainConfig(cell="gru", dropout=0.0)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("hidden = 3\n", "unknown key 'hidden'"),
        ('hidden_size = "big"\n', "hidden_size must be int, not 'big'"),
        ("bidirectional = 1\n", "bidirectional must be bool, not 1"),
        ("threads = 2.5\n", "threads must be int or null, not 2.5"),
        ('cell = "tcn"\n', "cell must be one of rnn, lstm, gru, not 'tcn'"),
    ],
)
def test_toml_key_errors_are_one_line_naming_the_key(tmp_path, text, message):
    path = tmp_path / "c.toml"
    path.write_text(f"# a comment\n{text}")
    line = assert_user_error(cli("train", "--config", path, "-o", tmp_path / "m"))
    assert line == f"error: {path}: {message}"
    assert not (tmp_path / "m").exists()


def test_invalid_toml_names_file_and_line(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('cell = "gru"\n\nhidden_size = \n')
    line = assert_user_error(cli("train", "--config", path, "-o", tmp_path / "m"))
    assert line == f"error: {path}:3: not valid TOML: Invalid value (column 15)"
    path.write_text('cell = "gru\n')
    with pytest.raises(TaggerError, match=rf"^{re.escape(str(path))}:1: not valid TOML: "):
        TrainConfig.from_file(path)


def test_missing_toml_file(tmp_path):
    line = assert_user_error(cli("train", "--config", tmp_path / "nope.toml"))
    assert line == f"error: {tmp_path / 'nope.toml'}: no such file"
