"""The training configuration: one typed object, saved as ``config.json`` in the model."""

from __future__ import annotations

import json
import re
import sys
import types
import typing
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from tagger.errors import TaggerError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

FORMAT_VERSION = 1
DEFAULT_MODEL_DIR = "models/tagger"

CHOICES = {
    "cell": ("rnn", "lstm", "gru"),
    "char_encoder": ("cnn", "lstm", "none"),
    "decoder": ("softmax", "crf"),
    "optimizer": ("adam", "sgd"),
    "scheme": ("IOB2", "BIOES"),
    "unseen_labels": ("error", "O"),
}


@dataclass
class TrainConfig:
    """Everything that defines a training run; CLI flags and ``--config`` files fill it.

    Every field has a one-line description in ``HELP`` below (``tagger init-config``).
    """

    # data
    data: str | None = None
    dev: str | None = None
    test: str | None = None
    revision: str | None = None
    tag_column: int = -1
    encoding: str = "utf-8"
    unseen_labels: str = "error"
    scheme: str = "BIOES"
    lang: str = "en"
    # vocabulary
    lowercase: bool = True
    normalize_digits: bool = True
    min_freq: int = 1
    max_vocab: int | None = None
    # model
    cell: str = "lstm"
    bidirectional: bool = True
    num_layers: int = 1
    hidden_size: int = 200
    word_dim: int = 100
    embeddings: str | None = None
    freeze_embeddings: bool = False
    char_encoder: str = "cnn"
    char_dim: int = 30
    char_hidden: int = 50
    char_kernel: int = 3
    casing_dim: int = 10
    dropout: float = 0.5
    word_dropout: float = 0.05
    unk_replace: float = 2.0
    decoder: str = "crf"
    # optimisation
    optimizer: str = "adam"
    lr: float = 0.002
    lr_decay: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 0.0
    clip: float = 5.0
    ema_decay: float = 0.999
    batch_size: int = 32
    max_epochs: int = 30
    patience: int = 5
    seed: int = 13
    ensemble: int = 1
    device: str = "auto"
    threads: int | None = None
    # output
    output: str = DEFAULT_MODEL_DIR
    overwrite: bool = False

    def validate(self, where: str = "config") -> TrainConfig:
        """Check choices and ranges; raises ``TaggerError`` naming the key (and file)."""
        for key, allowed in CHOICES.items():
            value = getattr(self, key)
            if value not in allowed:
                raise TaggerError(
                    f"{where}: {key} must be one of {', '.join(allowed)}, not {value!r}"
                )
        positive = (
            "num_layers",
            "hidden_size",
            "word_dim",
            "batch_size",
            "max_epochs",
            "min_freq",
            "ensemble",
        )
        for key in positive:
            if getattr(self, key) < 1:
                raise TaggerError(f"{where}: {key} must be at least 1, not {getattr(self, key)}")
        for key in ("dropout", "word_dropout", "ema_decay"):
            if not 0.0 <= getattr(self, key) < 1.0:
                raise TaggerError(f"{where}: {key} must be in [0, 1), not {getattr(self, key)}")
        if self.unk_replace < 0:
            raise TaggerError(f"{where}: unk_replace must be 0 or more, not {self.unk_replace}")
        if self.char_kernel < 1 or self.char_kernel % 2 == 0:
            raise TaggerError(f"{where}: char_kernel must be odd, not {self.char_kernel}")
        if self.lr <= 0:
            raise TaggerError(f"{where}: lr must be positive, not {self.lr}")
        return self

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict, where: str = "config") -> TrainConfig:
        """Build from plain JSON values; unknown keys and wrong types name the key."""
        hints = typing.get_type_hints(cls)
        known = {f.name for f in fields(cls)}
        values = {}
        for key, value in data.items():
            if key not in known:
                raise TaggerError(f"{where}: unknown key {key!r}")
            values[key] = _coerce(key, value, hints[key], where)
        return cls(**values).validate(where)

    @classmethod
    def from_file(cls, path: str | Path) -> TrainConfig:
        """Read a JSON file, or TOML when the name ends in ``.toml``."""
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise TaggerError(f"{path}: no such file") from None
        if path.suffix.lower() == ".toml":
            data = _parse_toml(text, path)
        else:
            try:
                data = json.loads(text)
            except json.JSONDecodeError as err:
                raise TaggerError(f"{path}:{err.lineno}: not valid JSON: {err.msg}") from None
        if not isinstance(data, dict):
            raise TaggerError(f"{path}: expected a JSON object of config keys")
        data.pop("format_version", None)
        return cls.from_dict(data, where=str(path))


HELP = {
    "data": "hub id (e.g. conll2003), folder of CoNLL files or training file; unset = bundled",
    "dev": "CoNLL file for the validation split",
    "test": "CoNLL file for the test split",
    "revision": "hub revision (branch, tag or commit)",
    "tag_column": "column holding the tag (0-based; -1 = last)",
    "encoding": "text encoding of the input files",
    "unseen_labels": "dev/test labels unseen in train: error, or O (map them to O)",
    "scheme": "tag scheme to train in: IOB2 or BIOES (scores are on entity spans)",
    "lang": "spaCy language used to tokenize raw text at prediction time",
    "lowercase": "look words up lower-cased (the character encoder keeps the case)",
    "normalize_digits": "map digits to 0 for word lookup",
    "min_freq": "keep training words seen at least this many times",
    "max_vocab": "keep at most this many words, most frequent first",
    "cell": "recurrent cell: rnn, lstm or gru",
    "bidirectional": "read sentences in both directions",
    "num_layers": "stacked recurrent layers",
    "hidden_size": "recurrent units per direction",
    "word_dim": "word embedding size (taken from the vectors file with `embeddings`)",
    "embeddings": "pretrained vectors: GloVe, word2vec or fastText text (.gz ok)",
    "freeze_embeddings": "keep the pretrained vectors fixed during training",
    "char_encoder": "character features: cnn, lstm or none",
    "char_dim": "character embedding size",
    "char_hidden": "character CNN filters, or LSTM units per direction",
    "char_kernel": "character CNN window (odd)",
    "casing_dim": "size of the word-shape (casing) embedding; 0 turns it off",
    "dropout": "dropout on embeddings and encoder output",
    "word_dropout": "probability of replacing a training word by UNK",
    "unk_replace": "a: replace a word seen c times in training by UNK with p a/(a+c); 0 = off",
    "decoder": "output layer: crf (valid tag sequences) or softmax",
    "optimizer": "adam or sgd",
    "lr": "learning rate",
    "lr_decay": "learning rate schedule: lr / (1 + lr_decay * epoch)",
    "momentum": "SGD momentum (sgd only)",
    "weight_decay": "L2 penalty on the weights",
    "clip": "clip the gradient norm to this (0 = off)",
    "ema_decay": "average the weights over ~1/(1-decay) steps; 0 = off",
    "batch_size": "sentences per batch",
    "max_epochs": "most epochs",
    "patience": "stop after this many epochs without dev F1 gain",
    "seed": "random seed: data order, initialisation and dropout",
    "ensemble": "train this many taggers (seeds seed, seed+1, ...) and average their scores",
    "device": "auto, cpu, cuda or cuda:N (auto = GPU when present)",
    "threads": "torch intra-op threads (unset = one per core)",
    "output": "model folder to write",
    "overwrite": "replace an existing model folder",
}


def toml_template() -> str:
    """The defaults as a commented TOML file; keys whose default is None (which TOML
    cannot spell) are written commented out."""
    hints = typing.get_type_hints(TrainConfig)
    lines = [
        "# tagger training config: `tagger train --config FILE`; flags given there override it.",
        "# Every key is optional; a key left out keeps the default shown here. Keys written",
        "# commented out have no value by default (TOML has no null): uncomment to set one.",
    ]
    for f in fields(TrainConfig):
        lines.append("")
        value = getattr(TrainConfig(), f.name)
        if value is None:
            kinds = [t for t in typing.get_args(hints[f.name]) if t is not type(None)]
            example = '"..."' if kinds == [str] else "..."
            lines += [f"# {HELP[f.name]}", f"# {f.name} = {example}"]
        else:
            lines += [f"# {HELP[f.name]}", f"{f.name} = {_toml_value(value)}"]
    return "\n".join(lines) + "\n"


def _toml_value(value: bool | int | float | str) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a valid TOML basic string
    return repr(value)


def _parse_toml(text: str, path: Path) -> dict:
    """``tomllib.loads`` with its error as ``FILE:LINE: ...``."""
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        where = re.search(r" \(at line (\d+), column (\d+)\)", str(err))
        if where is None:
            raise TaggerError(f"{path}: not valid TOML: {err}") from None
        message = str(err).replace(where.group(0), "")
        raise TaggerError(
            f"{path}:{where.group(1)}: not valid TOML: {message} (column {where.group(2)})"
        ) from None


def _coerce(key: str, value, hint, where: str):
    """Accept ``value`` if it fits ``hint`` (ints may stand for floats)."""
    allowed = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    for typ in allowed:
        if typ is type(None) and value is None:
            return None
        if typ is bool and isinstance(value, bool):
            return value
        if typ is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if typ is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if typ is str and isinstance(value, str):
            return value
    names = " or ".join("null" if t is type(None) else t.__name__ for t in allowed)
    raise TaggerError(f"{where}: {key} must be {names}, not {value!r}")
