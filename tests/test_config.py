"""TrainConfig: typed JSON in and out, errors that name the key (and line)."""

from __future__ import annotations

import json

import pytest

from tagger.config import FORMAT_VERSION, TrainConfig
from tagger.errors import TaggerError


def error(data: dict, where: str = "config") -> str:
    with pytest.raises(TaggerError) as err:
        TrainConfig.from_dict(data, where=where)
    return str(err.value)


def test_defaults_are_valid_and_round_trip():
    config = TrainConfig()
    assert config.validate() is config
    assert TrainConfig.from_dict(config.to_dict()) == config
    assert TrainConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config


def test_from_dict_sets_values():
    config = TrainConfig.from_dict(
        {
            "cell": "gru",
            "hidden_size": 32,
            "data": "data/",
            "threads": None,
            "bidirectional": False,
            "max_vocab": 1000,
        }
    )
    assert (config.cell, config.hidden_size, config.data) == ("gru", 32, "data/")
    assert config.bidirectional is False and config.threads is None and config.max_vocab == 1000


def test_unknown_key():
    assert error({"hidden": 3}) == "config: unknown key 'hidden'"
    assert error({"hidden": 3}, where="run.json") == "run.json: unknown key 'hidden'"


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("hidden_size", "200", "config: hidden_size must be int, not '200'"),
        ("hidden_size", 2.5, "config: hidden_size must be int, not 2.5"),
        ("hidden_size", True, "config: hidden_size must be int, not True"),
        ("dropout", "0.5", "config: dropout must be float, not '0.5'"),
        ("dropout", False, "config: dropout must be float, not False"),
        ("bidirectional", 1, "config: bidirectional must be bool, not 1"),
        ("data", 3, "config: data must be str or null, not 3"),
        ("threads", "4", "config: threads must be int or null, not '4'"),
        ("output", None, "config: output must be str, not None"),
    ],
)
def test_wrong_type(key, value, message):
    assert error({key: value}) == message


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("cell", "transformer", "config: cell must be one of rnn, lstm, gru, not 'transformer'"),
        ("decoder", "CRF", "config: decoder must be one of softmax, crf, not 'CRF'"),
        ("char_encoder", "gru", "config: char_encoder must be one of cnn, lstm, none, not 'gru'"),
        ("scheme", "IOB1", "config: scheme must be one of IOB2, BIOES, not 'IOB1'"),
        ("optimizer", "lbfgs", "config: optimizer must be one of adam, sgd, not 'lbfgs'"),
        ("unseen_labels", "drop", "config: unseen_labels must be one of error, O, not 'drop'"),
        ("hidden_size", 0, "config: hidden_size must be from 1 to 4096, not 0"),
        ("max_epochs", -1, "config: max_epochs must be null (unset) or from 1 to 10000, not -1"),
        ("dropout", 1.0, "config: dropout must be in [0, 1), not 1.0"),
        ("word_dropout", -0.1, "config: word_dropout must be in [0, 1), not -0.1"),
        ("lr", 0, "config: lr must be a finite number > 0, not 0.0"),
    ],
)
def test_bad_choice_or_range(key, value, message):
    assert error({key: value}) == message


def test_ints_accepted_for_floats():
    config = TrainConfig.from_dict({"lr": 1, "dropout": 0, "clip": 5})
    assert config.lr == 1.0 and isinstance(config.lr, float)
    assert config.dropout == 0.0 and isinstance(config.dropout, float)


def test_from_file(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"format_version": FORMAT_VERSION, "cell": "rnn", "lr": 1}))
    config = TrainConfig.from_file(path)
    assert config.cell == "rnn" and config.lr == 1.0


def test_from_file_invalid_json_names_the_line(tmp_path):
    path = tmp_path / "c.json"
    path.write_text('{\n  "cell": "rnn",\n  "lr": 0.1,\n}\n')
    with pytest.raises(TaggerError) as err:
        TrainConfig.from_file(path)
    assert str(err.value).startswith(f"{path}:4: not valid JSON: ")


def test_from_file_errors_name_the_file(tmp_path):
    path = tmp_path / "c.json"
    path.write_text('{"cell": "rnn", "colour": "red"}')
    with pytest.raises(TaggerError) as err:
        TrainConfig.from_file(path)
    assert str(err.value) == f"{path}: unknown key 'colour'"
    path.write_text("[1, 2]")
    with pytest.raises(TaggerError) as err:
        TrainConfig.from_file(path)
    assert str(err.value) == f"{path}: expected a JSON object of config keys"
    with pytest.raises(TaggerError) as err:
        TrainConfig.from_file(tmp_path / "missing.json")
    assert str(err.value) == f"{tmp_path / 'missing.json'}: no such file"
