"""The training configuration: one typed object, saved as ``config.json`` in the model."""

from __future__ import annotations

import codecs
import functools
import json
import math
import re
import reprlib
import sys
import types
import typing
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

from tagger.errors import TaggerError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

# Format-version policy: a new field gets a default, so older folders keep loading;
# FORMAT_VERSION only changes when an older tagger would misread a newer folder, and a
# folder with a newer version than this one is refused with a line saying to upgrade.
FORMAT_VERSION = 1
DEFAULT_MODEL_DIR = "models/tagger"

# Formats of training files: CoNLL columns, span annotations (tagger.spans), a spaCy DocBin.
DATA_FORMATS = ("conll", "doccano", "label-studio", "prodigy", "tagger", "spacy")
CHOICES = {
    "cell": ("rnn", "lstm", "gru"),
    "char_encoder": ("cnn", "lstm", "none"),
    "decoder": ("softmax", "crf"),
    "optimizer": ("adam", "sgd"),
    "scheme": ("IOB2", "BIOES"),
    "unseen_labels": ("error", "O"),
    "data_format": ("auto", *DATA_FORMATS),
    "misaligned": ("error", "expand", "contract", "drop"),
    "precision": ("auto", "fp32", "bf16"),
}
# Inclusive bounds of the integer fields: wide enough for any real run, narrow enough
# that a typo (or a fuzzer) cannot ask for a terabyte of weights.
INT_RANGES = {
    "tag_column": (-1000, 1000),
    "min_freq": (1, 10**6),
    "max_vocab": (1, 10**8),
    "num_layers": (1, 8),
    "hidden_size": (1, 4096),
    "word_dim": (1, 4096),
    "char_dim": (1, 1024),
    "char_hidden": (1, 1024),
    "char_kernel": (1, 15),
    "casing_dim": (0, 256),
    "batch_size": (1, 65536),
    "max_epochs": (1, 10000),
    "patience": (1, 10000),
    "seed": (0, 2**32 - 1),
    "ensemble": (1, 64),
    "threads": (1, 1024),
}
UNIT_FLOATS = (  # in [0, 1)
    "dropout",
    "word_dropout",
    "ema_decay",
    "momentum",
    "dev_fraction",
    "test_fraction",
)
NON_NEGATIVE_FLOATS = ("unk_replace", "lr_decay", "weight_decay", "clip")
UNSETTABLE = ("max_vocab", "threads", "max_epochs", "patience", "batch_size")  # null is valid
# The schedule the defaults were tuned with, on CoNLL-2003 (14,041 training sentences).
# A corpus with fewer updates per epoch than CoNLL-2003 has at the same batch size gets
# as many updates in all, for patience and for the decay of the learning rate
# (``TrainConfig.scheduled``).
SCHEDULE = {"max_epochs": 30, "patience": 5, "lr_decay": 0.05}
REFERENCE_SENTENCES = 14_041
# The batch size left unset: 64 sentences from LARGE_CORPUS sentences per epoch up, where
# it halves an epoch's steps at the same accuracy (CoNLL-2003, four seeds); 32 below,
# where the updates it would drop cost accuracy (BC5CDR: 0.4 F1 over two seeds).
BATCH_SIZES = {"small": 32, "large": 64}
LARGE_CORPUS = 10_000
PATHS = (
    "data",
    "dev",
    "test",
    "revision",
    "embeddings",
    "output",
    "init_from",
    "replay",
    "teacher",
    "unlabeled",
)
DISTILL_TEMPERATURES = (0.05, 20.0)  # the distillation temperatures a config may ask for
# How a source is read (``tagger.data.read_source``'s options): what evaluate, convert and
# --replay reuse to read other data as a model's own was read.
READING = ("tag_column", "encoding", "lang", "data_format", "misaligned", "map_labels")


@dataclass(frozen=True, kw_only=True)
class ModelConfig:
    """What the network is built from (``tagger.model``): the architecture fields of a
    ``TrainConfig`` and nothing else (no paths, no optimiser). ``TrainConfig.model``
    makes one; ``config.json`` stays the flat ``TrainConfig``."""

    # embedder
    word_dim: int
    char_encoder: str
    char_dim: int
    char_hidden: int
    char_kernel: int
    casing_dim: int
    word_dropout: float
    # encoder
    cell: str
    hidden_size: int
    num_layers: int
    bidirectional: bool
    dropout: float
    # decoder
    decoder: str
    scheme: str
    # how many taggers ``build_model`` makes (an ensemble when more than one)
    ensemble: int


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
    data_format: str = "auto"
    misaligned: str = "error"
    map_labels: str | None = None
    dev_fraction: float = 0.0
    test_fraction: float = 0.0
    # continued training
    init_from: str | None = None
    replay: str | None = None
    replay_fraction: float = 0.5
    # distillation
    teacher: str | None = None
    unlabeled: str | None = None
    distill_weight: float = 0.5
    distill_temperature: float = 1.0
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
    lr_decay: float | None = None  # unset: SCHEDULE's, scaled to the corpus
    momentum: float = 0.9
    weight_decay: float = 0.0
    clip: float = 5.0
    ema_decay: float = 0.999
    batch_size: int | None = None  # unset: by corpus size (BATCH_SIZES)
    max_epochs: int | None = None  # unset: SCHEDULE's, scaled to the corpus
    patience: int | None = None  # unset: SCHEDULE's, scaled to the corpus
    seed: int = 13
    ensemble: int = 1
    device: str = "auto"
    precision: str = "auto"
    threads: int | None = None
    # after training
    calibrate: bool = True
    # output
    output: str = DEFAULT_MODEL_DIR
    overwrite: bool = False

    def validate(self, where: str = "config") -> TrainConfig:
        """Check every field's type, choices and range; raises ``TaggerError`` naming the
        key (and file) and what it may be."""
        hints = _hints(type(self))
        for f in fields(self):
            _coerce(f.name, getattr(self, f.name), hints[f.name], where)  # types only
        for key, allowed in CHOICES.items():
            value = getattr(self, key)
            if value not in allowed:
                raise TaggerError(
                    f"{where}: {key} must be one of {', '.join(allowed)}, not {short_repr(value)}"
                )
        for key, (low, high) in INT_RANGES.items():
            value = getattr(self, key)
            if value is None:  # only where the type allows it (checked above)
                continue
            if not low <= value <= high:
                unset = "null (unset) or " if key in UNSETTABLE else ""
                raise TaggerError(
                    f"{where}: {key} must be {unset}from {low} to {high}, not {short_repr(value)}"
                )
        if self.char_kernel % 2 == 0:
            raise TaggerError(
                f"{where}: char_kernel must be odd, not {self.char_kernel} (1, 3, ..., 15)"
            )
        for key in UNIT_FLOATS:
            value = getattr(self, key)
            if not 0.0 <= value < 1.0:  # false for nan too
                raise TaggerError(f"{where}: {key} must be in [0, 1), not {short_repr(value)}")
        for key in NON_NEGATIVE_FLOATS:
            value = getattr(self, key)
            if value is None:  # lr_decay: unset
                continue
            if not math.isfinite(value):
                raise TaggerError(
                    f"{where}: {key} must be a finite number, 0 or more, not {short_repr(value)}"
                )
            if value < 0:
                raise TaggerError(f"{where}: {key} must be 0 or more, not {short_repr(value)}")
        if self.dev_fraction + self.test_fraction >= 1.0:
            raise TaggerError(
                f"{where}: dev_fraction + test_fraction must be below 1 (training needs "
                f"data too), not {short_repr(self.dev_fraction + self.test_fraction)}"
            )
        if not (math.isfinite(self.replay_fraction) and 0 < self.replay_fraction <= 100):
            raise TaggerError(
                f"{where}: replay_fraction must be above 0 and at most 100, "
                f"not {short_repr(self.replay_fraction)}"
            )
        if self.map_labels is not None:
            label_map(self.map_labels, where)
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise TaggerError(f"{where}: lr must be a finite number > 0, not {short_repr(self.lr)}")
        if not re.fullmatch(r"auto|cpu|mps|cuda(:[0-9]{1,4})?", self.device):
            raise TaggerError(
                f"{where}: unknown device {short_repr(self.device)}; "
                "device must be auto, cpu, cuda, cuda:N or mps"
            )
        if not re.fullmatch(r"[a-z]{2,3}(-[a-z]+)?", self.lang):
            raise TaggerError(
                f"{where}: lang must be a spaCy language code such as en, de, zh or xx "
                f"(multi-language), not {short_repr(self.lang)}"
            )
        if not _text_encoding(self.encoding):
            raise TaggerError(
                f"{where}: encoding must be a text encoding Python knows (utf-8, latin-1, "
                f"cp1252, ...), not {short_repr(self.encoding)}"
            )
        for key in PATHS:
            value = getattr(self, key)
            if value == "":
                unset = "" if key == "output" else " (leave it out, or null, to unset it)"
                raise TaggerError(f"{where}: {key} must not be empty{unset}")
            if value is not None and "\x00" in value:
                raise TaggerError(f"{where}: {key} must not contain a NUL character")
        if self.replay is not None and self.init_from is None:
            raise TaggerError(f"{where}: replay needs init_from (the model whose data it is)")
        if not 0.0 <= self.distill_weight <= 1.0:  # false for nan too
            value = short_repr(self.distill_weight)
            raise TaggerError(f"{where}: distill_weight must be from 0 to 1, not {value}")
        low, high = DISTILL_TEMPERATURES
        if not low <= self.distill_temperature <= high:
            raise TaggerError(
                f"{where}: distill_temperature must be from {low} to {high}, "
                f"not {short_repr(self.distill_temperature)}"
            )
        if self.unlabeled is not None and self.teacher is None:
            raise TaggerError(f"{where}: unlabeled needs teacher (the model that tags it)")
        if self.teacher is not None and self.replay is not None:
            raise TaggerError(f"{where}: teacher and replay cannot be combined; choose one")
        return self

    @property
    def model(self) -> ModelConfig:
        """The fields the network is built from (see ``ModelConfig``)."""
        return ModelConfig(**{f.name: getattr(self, f.name) for f in fields(ModelConfig)})

    def scheduled(self, sentences: int) -> tuple[TrainConfig, str]:
        """This config with the unset ``batch_size``, ``max_epochs``, ``patience`` and
        ``lr_decay`` set for ``sentences`` training sentences per epoch, and a line that
        says so (empty when nothing was unset). The batch: ``BATCH_SIZES`` by
        ``LARGE_CORPUS``. A corpus with fewer updates per epoch than CoNLL-2003 has at
        that batch size gets k times the epochs and patience, and 1/k the decay per
        epoch, with k the ratio: the same number of updates and the same learning rate
        after each of them as the tuned schedule. Larger corpora keep ``SCHEDULE``."""
        unset = [key for key in ("batch_size", *SCHEDULE) if getattr(self, key) is None]
        if not unset:
            return self, ""
        batch = self.batch_size or BATCH_SIZES["large" if sentences >= LARGE_CORPUS else "small"]
        updates = max(1, math.ceil(sentences / batch))
        reference = math.ceil(REFERENCE_SENTENCES / batch)
        k = max(1.0, reference / updates)
        scaled = {
            "batch_size": batch,
            "max_epochs": math.ceil(SCHEDULE["max_epochs"] * k),
            "patience": math.ceil(SCHEDULE["patience"] * k),
            "lr_decay": round(SCHEDULE["lr_decay"] / k, 6),
        }
        config = replace(self, **{key: scaled[key] for key in unset})
        shown = ", ".join(f"{key} {getattr(config, key):g}" for key in unset)
        why = f"{sentences:,} sentences, {updates:,} updates per epoch"
        if k > 1:
            why += f", {k:.2f} x fewer than CoNLL-2003's {reference:,}"
        return config, f"schedule: {shown} ({why})"

    def reading(self) -> dict:
        """The options ``read_source`` reads this config's data with (``READING``)."""
        return {key: getattr(self, key) for key in READING}

    def source_options(self) -> dict:
        """Every ``read_source`` option but the source: ``reading`` and the splits
        (``dev``, ``test``, ``revision``, the fractions and the seed that carves them),
        so that evaluation reads a model's data exactly as its training did."""
        splits = ("dev", "test", "revision", "dev_fraction", "test_fraction", "seed")
        return {**self.reading(), **{key: getattr(self, key) for key in splits}}

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict, where: str = "config") -> TrainConfig:
        """Build from plain JSON values; unknown keys and wrong types name the key."""
        if not isinstance(data, dict):
            raise TaggerError(f"{where}: expected an object of config keys, not {short_repr(data)}")
        hints = _hints(cls)
        known = {f.name for f in fields(cls)}
        values = {}
        for key, value in data.items():
            if key not in known:
                raise TaggerError(f"{where}: unknown key {short_repr(key)}")
            values[key] = _coerce(key, value, hints[key], where)
        return cls(**values).validate(where)

    @classmethod
    def from_file(cls, path: str | Path) -> TrainConfig:
        """Read a JSON file, or TOML when the name ends in ``.toml``."""
        path = Path(path)
        text = read_text_file(path)
        if path.suffix.lower() == ".toml":
            data = _parse_toml(text, path)
        else:
            try:
                data = json.loads(text)
            except json.JSONDecodeError as err:
                raise TaggerError(f"{path}:{err.lineno}: not valid JSON: {err.msg}") from None
            except (ValueError, RecursionError) as err:
                raise TaggerError(f"{path}: not valid JSON: {json_trouble(err)}") from None
        if not isinstance(data, dict):
            raise TaggerError(f"{path}: expected a JSON object of config keys")
        data.pop("format_version", None)
        return cls.from_dict(data, where=str(path))


HELP = {
    "data": "hub id (e.g. conll2003), folder or training file (CoNLL, span JSONL/JSON, "
    ".spacy); unset = bundled",
    "dev": "file for the validation split (any format the training file may have)",
    "test": "file for the test split (any format the training file may have)",
    "revision": "hub revision (branch, tag or commit)",
    "tag_column": "column holding the tag (0-based; -1 = last)",
    "encoding": "text encoding of the input files",
    "unseen_labels": "dev/test labels unseen in train: error, or O (map them to O)",
    "scheme": "tag scheme to train in: IOB2 or BIOES (scores are on entity spans)",
    "lang": "spaCy language that tokenizes raw text: span annotations and prediction",
    "data_format": "format of the data files: auto (from the name and first record), "
    "conll, doccano, label-studio, prodigy, tagger (predict's JSONL) or spacy (DocBin)",
    "misaligned": "a span whose edges fall inside a token: error, or expand/contract it "
    "to token boundaries, or drop it",
    "map_labels": "rename or drop entity types on reading, e.g. MISC=O,PERSON=PER",
    "dev_fraction": "carve this fraction of the training documents out as the dev split",
    "test_fraction": "carve this fraction of the training documents out as the test split",
    "init_from": "continue training this model folder (its architecture; vocab and labels grow)",
    "replay": "with init_from: old training data to mix in, read as the model read its own",
    "replay_fraction": "replayed sentences per epoch, as a fraction of the new training set",
    "teacher": "distil this model folder (a model or an ensemble) into the one trained",
    "unlabeled": "with teacher: raw text the teacher tags for the student (never dev/test)",
    "distill_weight": "with teacher: weight of the divergence from the teacher (gold: 1 - it)",
    "distill_temperature": "with teacher: temperature of both label distributions",
    "lowercase": "look words up lower-cased (the character encoder keeps the case); "
    "false: as written, lower-cased only when that form is unknown",
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
    "lr_decay": "learning rate schedule: lr / (1 + lr_decay * epoch); unset: 0.05, "
    "less per epoch for a small corpus (see max_epochs)",
    "momentum": "SGD momentum (sgd only)",
    "weight_decay": "L2 penalty on the weights",
    "clip": "clip the gradient norm to this (0 = off)",
    "ema_decay": "average the weights over ~1/(1-decay) steps; 0 = off",
    "batch_size": f"sentences per batch; unset: {BATCH_SIZES['large']} for a corpus of "
    f"{LARGE_CORPUS:,} training sentences or more, {BATCH_SIZES['small']} below",
    "max_epochs": "most epochs; unset: 30, or for a corpus with fewer updates per epoch than "
    "CoNLL-2003 at the same batch size as many epochs as give 30 of its epochs' updates",
    "patience": "stop after this many epochs without dev F1 gain; unset: 5, scaled as max_epochs",
    "seed": "random seed: data order, initialisation and dropout",
    "ensemble": "train this many taggers (seeds seed, seed+1, ...) and average their scores",
    "device": "auto, cpu, cuda or cuda:N (auto = GPU when present)",
    "precision": "training's forward pass: auto (bf16 on a GPU that has it, fp32 on a CPU), "
    "fp32, or bf16 (CPUs with AVX-512 BF16 or AMX; faster there, see the README)",
    "threads": "torch intra-op threads (unset = one per core)",
    "calibrate": "fit the confidence temperature on half the dev split after training",
    "output": "model folder to write",
    "overwrite": "replace an existing model folder",
}

# `tagger train` has a flag for every field, generated from the field (tagger.cli): help
# from HELP, choices from CHOICES, the default shown from TrainConfig(). A field's flag is
# --field-name (a bool's --field-name/--no-field-name) unless FLAGS spells it otherwise.
FLAGS = {
    "output": ("--output", "-o"),
    "data_format": ("--format",),
    "bidirectional": ("--bidirectional/--unidirectional",),
    "freeze_embeddings": ("--freeze-embeddings/--tune-embeddings",),
}
NO_FLAG: frozenset[str] = frozenset()  # fields deliberately left off the command line


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


def label_map(spec: str, where: str = "map_labels") -> dict[str, str]:
    """``"MISC=O,PERSON=PER"`` as ``{"MISC": "O", "PERSON": "PER"}``; ``O`` drops a type."""
    mapping: dict[str, str] = {}
    for item in spec.split(","):
        old, eq, new = (part.strip() for part in item.partition("="))
        if (
            not eq
            or not re.fullmatch(r"[^\s=,-][^\s=,]*", old)
            or not re.fullmatch(r"[^\s=,-][^\s=,]*", new)
        ):
            raise TaggerError(
                f"{where}: map_labels must be TYPE=NEW pairs separated by commas "
                f"(NEW = O drops the type), e.g. MISC=O,PERSON=PER; not {short_repr(item)}"
            )
        if old in mapping:
            raise TaggerError(f"{where}: map_labels names {old} twice")
        mapping[old] = new
    return mapping


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
    except RecursionError:
        raise TaggerError(f"{path}: not valid TOML: nested too deeply") from None
    except tomllib.TOMLDecodeError as err:
        where = re.search(r" \(at line (\d+), column (\d+)\)", str(err))
        if where is None:
            raise TaggerError(f"{path}: not valid TOML: {err}") from None
        message = str(err).replace(where.group(0), "")
        raise TaggerError(
            f"{path}:{where.group(1)}: not valid TOML: {message} (column {where.group(2)})"
        ) from None
    except ValueError as err:  # e.g. an integer with more digits than Python converts
        raise TaggerError(f"{path}: not valid TOML: {json_trouble(err)}") from None


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
            try:
                return float(value)
            except OverflowError:  # an int beyond the float range
                raise TaggerError(
                    f"{where}: {key} must be a finite number, not {short_repr(value)}"
                ) from None
        if typ is str and isinstance(value, str):
            return value
    names = " or ".join("null" if t is type(None) else t.__name__ for t in allowed)
    raise TaggerError(f"{where}: {key} must be {names}, not {short_repr(value)}")


@functools.cache
def _hints(cls: type = TrainConfig) -> dict:
    return typing.get_type_hints(cls)


class _ShortRepr(reprlib.Repr):
    """``repr`` cut short: one line, bounded length and depth, and no error for ints
    with more digits than Python will print."""

    def __init__(self) -> None:
        super().__init__()
        self.maxlevel, self.maxlist, self.maxdict, self.maxtuple = 2, 4, 4, 4
        self.maxstring, self.maxother, self.maxlong = 60, 60, 40

    def repr_int(self, x: int, level: int) -> str:
        if x.bit_length() > 128:
            digits = int(x.bit_length() * math.log10(2)) + 1
            return f"{'-' if x < 0 else ''}<a number of about {digits} digits>"
        return super().repr_int(x, level)


_SHORT = _ShortRepr()


def short_repr(value) -> str:
    """A value for an error message: its ``repr``, short and on one line."""
    try:
        return _SHORT.repr(value)
    except Exception:  # noqa: BLE001 - a message must never fail
        return f"a {type(value).__name__}"


def json_kind(value) -> str:
    """What sort of JSON value ``value`` is, for messages (``a list``, ``null``, ...)."""
    if isinstance(value, bool):
        return "true or false"
    if isinstance(value, (int, float)):
        return "a number"
    names = {dict: "an object", list: "a list", str: "a string", type(None): "null"}
    return names.get(type(value), f"a {type(value).__name__}")


def _text_encoding(name: str) -> bool:
    """Whether ``name`` is a codec that decodes bytes to text (not base64, zlib, ...)."""
    try:
        info = codecs.lookup(name)
    except (LookupError, ValueError):
        return False
    return getattr(info, "_is_text_encoding", True)  # what bytes.decode itself checks


def read_text_file(path: Path) -> str:
    """A small UTF-8 file's text (a BOM is dropped); a missing file, a folder, a file
    that cannot be read or that is not UTF-8 gives one ``TaggerError`` line naming it."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise TaggerError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise TaggerError(f"{path} is a folder, not a file") from None
    except OSError as err:
        raise TaggerError(f"cannot read {path}: {err.strerror or err}") from None
    return decode_utf8(raw, path)


def decode_utf8(raw: bytes, path: Path | str) -> str:
    """``raw`` as UTF-8 (BOM dropped); invalid bytes give ``FILE:LINE: not UTF-8 ...``."""
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = raw.count(b"\n", 0, err.start) + 1
        raise TaggerError(
            f"{path}:{line}: not UTF-8 text (byte 0x{raw[err.start]:02x} at offset {err.start})"
        ) from None


def json_trouble(err: BaseException) -> str:
    """Why ``json.loads`` failed with something other than a ``JSONDecodeError``."""
    if isinstance(err, RecursionError):
        return "nested too deeply"
    return "a number has too many digits" if "digits" in str(err) else str(err).splitlines()[0]
