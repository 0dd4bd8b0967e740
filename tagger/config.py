"""The training configuration: one typed object, saved as ``config.json`` in the model."""

from __future__ import annotations

import json
import types
import typing
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from tagger.errors import TaggerError

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
    """Everything that defines a training run; CLI flags and ``--config`` files fill it."""

    # data
    data: str | None = None  # hub id, folder or train file; None = bundled corpus
    dev: str | None = None
    test: str | None = None
    revision: str | None = None
    tag_column: int = -1
    encoding: str = "utf-8"
    unseen_labels: str = "error"
    scheme: str = "IOB2"
    lang: str = "en"  # spaCy language used to tokenize raw text at prediction time
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
    word_dim: int = 100  # taken from the vectors file when `embeddings` is given
    embeddings: str | None = None  # GloVe / word2vec / fastText text vectors (.gz ok)
    freeze_embeddings: bool = False
    char_encoder: str = "cnn"
    char_dim: int = 30
    char_hidden: int = 50  # CNN filters, or LSTM units per direction
    char_kernel: int = 3
    casing_dim: int = 10  # 0 turns casing features off
    dropout: float = 0.5
    word_dropout: float = 0.05
    decoder: str = "crf"
    # optimisation
    optimizer: str = "adam"
    lr: float = 0.002
    lr_decay: float = 0.05  # lr / (1 + decay * epoch)
    momentum: float = 0.9  # SGD only
    weight_decay: float = 0.0
    clip: float = 5.0
    ema_decay: float = 0.999  # weights averaged over ~1/(1-decay) steps; 0 = off
    batch_size: int = 32
    max_epochs: int = 30
    patience: int = 5
    seed: int = 13
    device: str = "auto"
    threads: int | None = None
    # output
    output: str = DEFAULT_MODEL_DIR
    overwrite: bool = False

    def validate(self) -> TrainConfig:
        """Check choices and ranges; raises ``TaggerError`` naming the key."""
        for key, allowed in CHOICES.items():
            if getattr(self, key) not in allowed:
                raise TaggerError(
                    f"config: {key} must be one of {', '.join(allowed)}, not {getattr(self, key)!r}"
                )
        positive = ("num_layers", "hidden_size", "word_dim", "batch_size", "max_epochs", "min_freq")
        for key in positive:
            if getattr(self, key) < 1:
                raise TaggerError(f"config: {key} must be at least 1, not {getattr(self, key)}")
        for key in ("dropout", "word_dropout", "ema_decay"):
            if not 0.0 <= getattr(self, key) < 1.0:
                raise TaggerError(f"config: {key} must be in [0, 1), not {getattr(self, key)}")
        if self.char_kernel < 1 or self.char_kernel % 2 == 0:
            raise TaggerError(f"config: char_kernel must be odd, not {self.char_kernel}")
        if self.lr <= 0:
            raise TaggerError(f"config: lr must be positive, not {self.lr}")
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
        return cls(**values).validate()

    @classmethod
    def from_file(cls, path: str | Path) -> TrainConfig:
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise TaggerError(f"{path}: no such file") from None
        except json.JSONDecodeError as err:
            raise TaggerError(f"{path}:{err.lineno}: not valid JSON: {err.msg}") from None
        if not isinstance(data, dict):
            raise TaggerError(f"{path}: expected a JSON object of config keys")
        data.pop("format_version", None)
        return cls.from_dict(data, where=str(path))


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
