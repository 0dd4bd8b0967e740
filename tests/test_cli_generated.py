"""`tagger train` is generated from TrainConfig: a flag per field, choices from CHOICES,
help from HELP, defaults shown from TrainConfig(); only the flags given override --config.

Training itself is replaced by a recorder (a stand-in ``tagger.training`` module), so
these tests never import torch."""

from __future__ import annotations

import dataclasses
import json
import sys
import types

import pytest
import typer
from typer.testing import CliRunner

from tagger.cli import app, train_command
from tagger.config import CHOICES, FLAGS, HELP, NO_FLAG, TrainConfig

runner = CliRunner()

# Every flag `tagger train` had before it was generated, with the same meaning.
OLD_FLAGS = """
    --data --dev --test --output -o --cell --decoder --char-encoder --scheme --hidden-size
    --num-layers --bidirectional --unidirectional --dropout --unk-replace --batch-size --lr
    --max-epochs --patience --seed --ensemble --device --revision --encoding --tag-column
    --unseen-labels --embeddings --freeze-embeddings --tune-embeddings --overwrite
    --config --resume --dry-run --nproc --quiet -q
""".split()  # noqa: SIM905


def command(typer_app=app):
    """The click command of ``train`` (typer has its own copy of click)."""
    cmd = typer.main.get_command(typer_app)
    return cmd.commands["train"] if hasattr(cmd, "commands") else cmd


def options(cmd) -> dict:
    """Each spelling (``--cell``, ``-o``, ``--no-lowercase``) to its parameter."""
    return {opt: p for p in cmd.params for opt in [*p.opts, *p.secondary_opts]}


def help_text(typer_app=app) -> str:
    """The help page, one line per option (wide enough that no help text wraps)."""
    args = ["train", "--help"] if typer_app is app else ["--help"]
    result = runner.invoke(typer_app, args, max_content_width=1000, terminal_width=1000)
    assert result.exit_code == 0, result.output
    return result.stdout


def flag_of(name: str) -> str:
    """The flag spelling of a field (independently of tagger.cli)."""
    if name in FLAGS:
        return FLAGS[name][0].split("/")[0]
    return "--" + name.replace("_", "-")


@pytest.fixture
def recorded(monkeypatch):
    """Calls of ``tagger.training.train`` / ``dry_run`` and ``tagger.distributed.launch``."""
    calls = []
    training = types.ModuleType("tagger.training")
    training.train = lambda config=None, **kw: calls.append(("train", config, kw))
    training.dry_run = lambda config, say: calls.append(("dry_run", config, {})) or "SUMMARY"
    distributed = types.ModuleType("tagger.distributed")
    distributed.launch = lambda nproc, argv: calls.append(("launch", nproc, argv)) or 0
    monkeypatch.setitem(sys.modules, "tagger.training", training)
    monkeypatch.setitem(sys.modules, "tagger.distributed", distributed)
    return calls


def train(*args, typer_app=app):
    result = runner.invoke(typer_app, ["train", *map(str, args)])
    assert result.exit_code == 0, result.output
    return result


# ----------------------------------------------------------------- flags and help


def test_every_field_has_a_flag_in_the_help():
    page, opts = help_text(), options(command())
    for field in dataclasses.fields(TrainConfig):
        if field.name in NO_FLAG:
            continue
        flag = flag_of(field.name)
        assert flag in opts and opts[flag].name == field.name
        assert f"{flag} " in page or f"{flag}/" in page, flag
        assert HELP[field.name] in page


def test_no_field_is_left_off_the_command_line():
    assert frozenset() == NO_FLAG  # add a field here only with a reason


def test_the_old_flags_survive():
    opts = options(command())
    for flag in OLD_FLAGS:
        assert flag in opts, flag
    assert opts["-o"] is opts["--output"] and opts["-q"] is opts["--quiet"]
    assert opts["--unidirectional"] is opts["--bidirectional"]
    assert opts["--tune-embeddings"] is opts["--freeze-embeddings"]
    assert opts["--overwrite"].name == "overwrite"


def test_bools_are_flag_pairs():
    opts = options(command())
    for field in dataclasses.fields(TrainConfig):
        if isinstance(field.default, bool):
            param = opts[flag_of(field.name)]
            assert param.is_flag and param.secondary_opts, field.name
    assert opts["--lowercase"].secondary_opts == ["--no-lowercase"]


def test_choices_come_from_CHOICES():
    page = help_text()
    for name, allowed in CHOICES.items():
        assert f"{flag_of(name)} <{'|'.join(allowed)}>" in page
        result = runner.invoke(app, ["train", flag_of(name), "no-such-choice"])
        assert result.exit_code == 2
        assert f"is not one of {', '.join(map(repr, allowed))}." in result.output


def test_an_invalid_choice_is_a_one_line_usage_error():
    result = runner.invoke(app, ["train", "--cell", "foo"])
    assert result.exit_code == 2
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1
    assert "--cell" in errors[0] and "'foo' is not one of 'rnn', 'lstm', 'gru'" in errors[0]


def test_help_shows_the_defaults_of_TrainConfig():
    page = help_text()
    defaults = TrainConfig()
    for field in dataclasses.fields(TrainConfig):
        value = getattr(defaults, field.name)
        if value is None or isinstance(value, bool):
            continue
        assert f"{HELP[field.name]} [default: {value}]" in page, field.name
    for shown in ("lstm", "crf", "cnn", "BIOES", "models/tagger", "0.002", "30"):
        assert f"[default: {shown}]" in page
    for shown in ("bidirectional", "tune-embeddings", "lowercase", "no-overwrite"):
        assert f"[default: {shown}]" in page


def test_the_real_help_page():
    result = runner.invoke(app, ["train", "--help"])
    assert result.exit_code == 0
    page = " ".join(result.stdout.split())
    assert "--cell <rnn|lstm|gru>" in page and "[default: lstm]" in page
    assert "--bidirectional / --unidirectional" in page
    assert "-o, --output" in page and "-q, --quiet" in page


# ----------------------------------------------------------------- a new field


@dataclasses.dataclass
class Extended(TrainConfig):
    label_smoothing: float = 0.1
    pooling: str = "max"
    crf_tricks: bool = False
    limit: int | None = None


def test_a_new_field_becomes_a_flag_without_editing_the_cli(monkeypatch, recorded, tmp_path):
    monkeypatch.setitem(HELP, "label_smoothing", "smooth the gold labels by this much")
    monkeypatch.setitem(CHOICES, "pooling", ("max", "mean"))
    extended = typer.Typer(rich_markup_mode=None, add_completion=False)
    extended.command()(train_command(Extended))
    cmd = command(extended)
    opts = options(cmd)
    assert {"--label-smoothing", "--pooling", "--crf-tricks", "--no-crf-tricks", "--limit"} <= set(
        opts
    )
    assert "--pooling <max|mean>" in help_text(extended)
    page = help_text(extended)
    assert "smooth the gold labels by this much [default: 0.1]" in page
    assert "[default: no-crf-tricks]" in page
    assert set(options(command())) & {"--label-smoothing", "--pooling"} == set()  # app's own

    args = ["--label-smoothing", "0.3", "--crf-tricks", "--limit", "7"]
    result = runner.invoke(extended, args)
    assert result.exit_code == 0, result.output
    [(_, config, _)] = recorded
    assert type(config) is Extended
    assert (config.label_smoothing, config.pooling, config.crf_tricks, config.limit) == (
        0.3,
        "max",
        True,
        7,
    )
    assert runner.invoke(extended, ["--pooling", "min"]).exit_code == 2


def test_a_field_that_has_no_command_line_form_is_refused():
    @dataclasses.dataclass
    class Listy(TrainConfig):
        sizes: list[int] = dataclasses.field(default_factory=list)

    with pytest.raises(TypeError, match="sizes"):
        train_command(Listy)

    @dataclasses.dataclass
    class Clash(TrainConfig):
        quiet: bool = False

    with pytest.raises(TypeError, match="quiet"):
        train_command(Clash)


# ----------------------------------------------------------------- what the flags do


@pytest.fixture
def config_file(tmp_path):
    path = tmp_path / "run.json"
    values = {"cell": "gru", "hidden_size": 16, "bidirectional": False, "overwrite": True}
    path.write_text(json.dumps(values))
    return path


def test_flags_given_override_the_config_file_and_others_do_not(recorded, config_file):
    train("--config", config_file, "--hidden-size", 32, "--bidirectional", "-q")
    [(what, config, kw)] = recorded
    assert what == "train" and kw == {"progress": False}
    assert config == TrainConfig.from_dict(
        {"cell": "gru", "hidden_size": 32, "bidirectional": True, "overwrite": True}
    )


def test_no_flags_keep_the_config_file(recorded, config_file):
    train("--config", config_file)
    [(_, config, kw)] = recorded
    assert config == TrainConfig.from_file(config_file) and kw == {"progress": True}


def test_off_flags_override_too(recorded, config_file):
    train("--config", config_file, "--no-overwrite", "--tune-embeddings", "--scheme", "IOB2")
    [(_, config, _)] = recorded
    assert (config.overwrite, config.freeze_embeddings, config.scheme) == (False, False, "IOB2")
    assert config.cell == "gru"


def test_every_kind_of_flag_reaches_the_config(recorded, tmp_path):
    args = ["--lr", "0.01", "--max-vocab", 5000, "--threads", 2, "--optimizer", "sgd"]
    args += ["--no-lowercase", "-o", tmp_path / "m", "--embeddings", tmp_path / "v.txt"]
    args += ["--unseen-labels", "O", "--tag-column", 3, "--overwrite"]
    train(*args)
    [(_, config, _)] = recorded
    assert config == dataclasses.replace(
        TrainConfig(),
        lr=0.01,
        max_vocab=5000,
        threads=2,
        optimizer="sgd",
        lowercase=False,
        output=str(tmp_path / "m"),
        embeddings=str(tmp_path / "v.txt"),
        unseen_labels="O",
        tag_column=3,
        overwrite=True,
    )


def test_flag_values_are_validated(recorded):
    result = runner.invoke(app, ["train", "--patience", "0"])
    assert result.exit_code == 1 and recorded == []
    assert (
        result.stderr == "error: config: patience must be null (unset) or from 1 to 10000, not 0\n"
    )


def test_resume_passes_only_the_flags_given(recorded, tmp_path, config_file):
    train("--resume", tmp_path / "m.checkpoint", "--max-epochs", 9, "--threads", 2)
    [(_, config, kw)] = recorded
    assert config is None
    assert kw == {
        "progress": True,
        "resume": tmp_path / "m.checkpoint",
        "max_epochs": 9,
        "threads": 2,
    }
    result = runner.invoke(app, ["train", "--resume", "x", "--config", str(config_file)])
    assert result.exit_code == 1
    assert "--resume takes its settings from the checkpoint" in result.stderr


def test_dry_run_summarizes_the_final_config(recorded, config_file):
    result = train("--config", config_file, "--dry-run", "--cell", "rnn")
    assert result.stdout == "SUMMARY\n"
    [(what, config, _)] = recorded
    assert what == "dry_run" and (config.cell, config.hidden_size) == ("rnn", 16)


def test_nproc_relaunches_without_itself(recorded, monkeypatch):
    argv = ["tagger", "train", "--nproc", "2", "--cell", "gru", "-q"]
    monkeypatch.setattr(sys, "argv", argv)
    result = runner.invoke(app, argv[1:])
    assert result.exit_code == 0, result.output
    assert recorded == [("launch", 2, ["train", "--cell", "gru", "-q"])]
