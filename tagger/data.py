"""Corpus readers: CoNLL column files, folders and Hugging Face hub datasets.

Every source ends up as a ``datasets.DatasetDict`` with ``tokens`` (list of str) and
``ner_tags`` (``Sequence(ClassLabel)``) in the splits ``train``/``validation``/``test``,
tags normalised to one scheme (IOB2 by default). Errors name the file and line.
"""

from __future__ import annotations

import codecs
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from tagger import schemes
from tagger.errors import TaggerError

if TYPE_CHECKING:
    from datasets import DatasetDict

SPLITS = ("train", "validation", "test")
# File names recognised in a corpus folder, per split, in order of preference.
FOLDER_FILES = {
    "train": ("train.txt", "train.conll", "eng.train"),
    "validation": ("dev.txt", "valid.txt", "validation.txt", "dev.conll", "eng.testa"),
    "test": ("test.txt", "test.conll", "eng.testb"),
}
# Short names for hub datasets that need a specific script-free copy.
HUB_ALIASES = {
    # The canonical CoNLL-2003 repository ships a loading script that current
    # `datasets` releases refuse to run; its Parquet conversion loads directly.
    "conll2003": ("eriktks/conll2003", "refs/convert/parquet"),
}
HUB_SPLIT_NAMES = {
    "train": "train",
    "validation": "validation",
    "dev": "validation",
    "test": "test",
}
DOCSTART = "-DOCSTART-"


@dataclass
class Sentence:
    """One sentence as read, with where it came from (``file:line`` or ``split row N``)."""

    tokens: list[str]
    tags: list[str]
    origin: str


@dataclass
class RawCorpus:
    """Splits as read, tags in the source's own scheme; what ``tagger data`` reports on."""

    splits: dict[str, list[Sentence]] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)

    def scheme(self) -> str:
        return schemes.detect_scheme(s.tags for split in self.splits.values() for s in split)


def bundled_data_dir() -> Path:
    """The small corpus shipped with the package (``data/`` in a source checkout)."""
    installed = Path(__file__).parent / "bundled_data"
    if installed.is_dir():
        return installed
    return Path(__file__).resolve().parent.parent / "data"


# --------------------------------------------------------------------------- files


def open_binary(path: str | Path) -> BinaryIO:
    """Open a file to read; a missing file, a folder or no permission is one clear line."""
    try:
        return open(path, "rb")  # noqa: SIM115 - the caller closes it
    except FileNotFoundError:
        raise TaggerError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise TaggerError(f"{path}: is a folder, expected a text file") from None
    except OSError as err:
        raise TaggerError(f"{path}: cannot read: {err.strerror}") from None


def read_text(path: str | Path, encoding: str = "utf-8") -> str:
    """Read a text file; undecodable bytes give an error naming the offset and line."""
    path = Path(path)
    with open_binary(path) as f:
        raw = f.read()
    skip = len(codecs.BOM_UTF8) if raw.startswith(codecs.BOM_UTF8) else 0
    if not encoding.lower().replace("_", "-").startswith("utf-8"):
        skip = 0  # a BOM is a UTF-8 thing; other encodings read the bytes as they are
    try:
        return raw[skip:].decode(encoding)
    except UnicodeDecodeError as err:
        offset = skip + err.start
        line = raw.count(b"\n", 0, offset) + 1
        raise TaggerError(
            f"{path}:{line}: byte 0x{raw[offset]:02x} at offset {offset} is not valid "
            f"{err.encoding}; if the file is Latin-1, pass --encoding latin-1"
        ) from None
    except LookupError:
        raise TaggerError(f"unknown encoding {encoding!r}") from None


def parse_conll(text: str, name: str = "<text>", tag_column: int = -1) -> list[Sentence]:
    """Parse CoNLL column text: whitespace-separated columns, blank lines end sentences.

    ``-DOCSTART-`` lines are document boundaries and are dropped. Every token line
    must have the same number of columns as the first one.
    """
    sentences: list[Sentence] = []
    tokens: list[str] = []
    tags: list[str] = []
    start_line = 0
    n_columns = None

    def flush() -> None:
        if tokens:
            sentences.append(Sentence(tokens.copy(), tags.copy(), f"{name}:{start_line}"))
            tokens.clear()
            tags.clear()

    # Only \n ends a line (\r\n too): splitlines() would also split on form feeds and
    # U+2028 and shift every later line number.
    for lineno, line in enumerate(text.split("\n"), start=1):
        fields = line.split()
        if not fields:
            flush()
            continue
        if fields[0] == DOCSTART:
            flush()
            continue
        if n_columns is None:
            n_columns = len(fields)
            if n_columns < 2:
                raise TaggerError(
                    f"{name}:{lineno}: expected at least 2 columns (token and tag), found 1"
                )
            if not -n_columns <= tag_column < n_columns:
                raise TaggerError(
                    f"{name}:{lineno}: tag column {tag_column} does not exist "
                    f"(the file has {n_columns} columns)"
                )
        elif len(fields) != n_columns:
            raise TaggerError(
                f"{name}:{lineno}: expected {n_columns} columns like the first token line, "
                f"found {len(fields)}: {line.strip()!r}"
            )
        tag = fields[tag_column]
        try:
            schemes.parse_tag(tag)
        except ValueError as err:
            raise TaggerError(f"{name}:{lineno}: {err}") from None
        if not tokens:
            start_line = lineno
        tokens.append(fields[0])
        tags.append(tag)
    flush()
    if not sentences:
        raise TaggerError(f"{name}: no sentences found (the file is empty or has only -DOCSTART-)")
    return sentences


def read_conll(path: str | Path, tag_column: int = -1, encoding: str = "utf-8") -> list[Sentence]:
    """Read one CoNLL column file into sentences (tags as in the file)."""
    return parse_conll(read_text(path, encoding), str(path), tag_column)


def format_conll(sentences: Iterable[tuple[Sequence[str], Sequence[str]]]) -> str:
    """Write ``(tokens, tags)`` pairs as two-column CoNLL text (what ``parse_conll`` reads)."""
    blocks = ("\n".join(f"{t} {g}" for t, g in zip(toks, tags)) for toks, tags in sentences)
    return "".join(block + "\n\n" for block in blocks)


# --------------------------------------------------------------------------- sources


def _looks_like_path(source: str) -> bool:
    """Existing paths, and strings that can only be paths; ``owner/name`` is a hub id."""
    return (
        Path(source).exists()
        or source.startswith((".", "/", "~"))
        or source.endswith((".txt", ".conll", ".iob", ".bio"))
    )


def read_source(
    source: str | Path | None = None,
    *,
    dev: str | Path | None = None,
    test: str | Path | None = None,
    revision: str | None = None,
    tag_column: int = -1,
    encoding: str = "utf-8",
) -> RawCorpus:
    """Read a corpus as it is: the bundled one (``None``), a folder, a file or a hub id.

    ``dev`` and ``test`` name extra files that replace the source's own splits.
    """
    corpus = RawCorpus()
    if source is None:
        source = bundled_data_dir()
    if isinstance(source, Path) or _looks_like_path(str(source)):
        path = Path(source)
        if path.is_dir():
            for split, names in FOLDER_FILES.items():
                found = next((path / n for n in names if (path / n).is_file()), None)
                if found is not None:
                    corpus.sources[split] = str(found)
            if "train" not in corpus.sources:
                raise TaggerError(
                    f"{path}: no training file found (expected one of "
                    f"{', '.join(FOLDER_FILES['train'])})"
                )
        elif path.is_file():
            corpus.sources["train"] = str(path)
        else:
            raise TaggerError(f"{path}: no such file or folder")
    else:
        corpus = _read_hub(str(source), revision)
    for split, extra in (("validation", dev), ("test", test)):
        if extra is not None:
            corpus.sources[split] = str(extra)
            corpus.splits.pop(split, None)
    for split, file in corpus.sources.items():
        if split not in corpus.splits:
            corpus.splits[split] = read_conll(file, tag_column, encoding)
    return corpus


def _read_hub(hub_id: str, revision: str | None) -> RawCorpus:
    """Load a hub dataset whose rows have ``tokens`` and ``ner_tags``."""
    import datasets

    repo, default_revision = HUB_ALIASES.get(hub_id, (hub_id, None))
    try:
        loaded = datasets.load_dataset(repo, revision=revision or default_revision)
    except Exception as err:  # network, missing repo, scripts: one clear line
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise TaggerError(
            f"{hub_id!r} is no file or folder here, and loading it from the Hugging Face hub "
            f"failed: {reason}"
        ) from None
    corpus = RawCorpus()
    for hub_split, ds in loaded.items():
        split = HUB_SPLIT_NAMES.get(hub_split)
        if split is None:
            continue
        missing = {"tokens", "ner_tags"} - set(ds.column_names)
        if missing:
            raise TaggerError(
                f"{hub_id} split {hub_split!r} has no {' or '.join(sorted(missing))} column "
                f"(columns: {', '.join(ds.column_names)})"
            )
        feature = ds.features["ner_tags"]
        inner = getattr(feature, "feature", None)
        names = getattr(inner, "names", None)
        sentences = []
        for i, (toks, tags) in enumerate(zip(ds["tokens"], ds["ner_tags"])):
            tags = [names[t] for t in tags] if names else [str(t) for t in tags]
            origin = f"{hub_id} {hub_split} row {i}"
            for tag in tags:
                try:
                    schemes.parse_tag(tag)
                except ValueError as err:
                    raise TaggerError(f"{origin}: {err}") from None
            if toks:
                sentences.append(Sentence(list(toks), tags, origin))
        corpus.splits[split] = sentences
        corpus.sources[split] = f"{hub_id} ({hub_split})"
    if "train" not in corpus.splits:
        raise TaggerError(f"{hub_id}: no train split (splits: {', '.join(loaded)})")
    return corpus


# --------------------------------------------------------------------------- datasets


def load_data(
    source: str | Path | None = None,
    *,
    dev: str | Path | None = None,
    test: str | Path | None = None,
    revision: str | None = None,
    tag_column: int = -1,
    encoding: str = "utf-8",
    scheme: str = "IOB2",
    unseen_labels: str = "error",
) -> DatasetDict:
    """Load a corpus as a ``DatasetDict`` with tags normalised to ``scheme``.

    ``source``: ``None`` (bundled corpus), a folder of CoNLL files, one CoNLL file
    (the train split; give ``dev``/``test``), or a hub id (``conll2003`` is an alias
    for the hub's Parquet conversion of ``eriktks/conll2003``). ``unseen_labels``:
    ``"error"`` when validation/test hold a label absent from train, or ``"O"`` to
    map such tags to ``O``.
    """
    corpus = read_source(
        source, dev=dev, test=test, revision=revision, tag_column=tag_column, encoding=encoding
    )
    return to_dataset_dict(corpus, scheme, unseen_labels)


def to_dataset_dict(corpus: RawCorpus, scheme: str = "IOB2", unseen_labels: str = "error"):
    """Normalise a raw corpus's tags and wrap it as a ``DatasetDict``."""
    import datasets

    if scheme not in schemes.SCHEMES:
        raise TaggerError(f"unknown scheme {scheme!r}; choose one of {', '.join(schemes.SCHEMES)}")
    if unseen_labels not in ("error", "O"):
        raise TaggerError(f"unseen_labels must be 'error' or 'O', not {unseen_labels!r}")
    converted = {
        split: [schemes.convert(s.tags, scheme) for s in sentences]
        for split, sentences in corpus.splits.items()
    }
    types = {schemes.parse_tag(t)[1] for tags in converted["train"] for t in tags} - {None}
    train_labels = set(schemes.label_set(types, scheme))
    for split, tag_lists in converted.items():
        for sentence, tags in zip(corpus.splits[split], tag_lists):
            unseen = [t for t in tags if t not in train_labels]
            if not unseen:
                continue
            if unseen_labels == "error":
                raise TaggerError(
                    f"{sentence.origin}: label {unseen[0]}: entity type "
                    f"{schemes.parse_tag(unseen[0])[1]} does not occur in the training data; "
                    f"fix the data or map such labels to O (--unseen-labels O)"
                )
            tags[:] = schemes.convert(["O" if t in unseen else t for t in tags], scheme)
    features = datasets.Features(
        {
            "tokens": datasets.Sequence(datasets.Value("string")),
            "ner_tags": datasets.Sequence(
                datasets.ClassLabel(names=schemes.label_set(types, scheme))
            ),
        }
    )
    splits = {}
    for split in SPLITS:
        if split not in corpus.splits:
            continue
        splits[split] = datasets.Dataset.from_dict(
            {"tokens": [s.tokens for s in corpus.splits[split]], "ner_tags": converted[split]},
            features=features,
        )
    return datasets.DatasetDict(splits)


def tag_names(dataset) -> list[str]:
    """Label names of a dataset's ``ner_tags`` ClassLabel."""
    return dataset.features["ner_tags"].feature.names


def decoded_tags(dataset) -> list[list[str]]:
    """A split's ``ner_tags`` as label strings."""
    names = tag_names(dataset)
    return [[names[i] for i in tags] for tags in dataset["ner_tags"]]


# --------------------------------------------------------------------------- report


def report(corpus: RawCorpus) -> dict:
    """Per split: sentences, tokens, mentions per type (conlleval counting), scheme, labels."""
    out: dict = {"scheme": corpus.scheme(), "splits": {}}
    for split in SPLITS:
        sentences = corpus.splits.get(split)
        if sentences is None:
            continue
        mentions: Counter[str] = Counter()
        for s in sentences:
            mentions.update(etype for _, _, etype in schemes.spans(s.tags))
        out["splits"][split] = {
            "source": corpus.sources.get(split),
            "sentences": len(sentences),
            "tokens": sum(len(s.tokens) for s in sentences),
            "mentions": dict(sorted(mentions.items())),
            "total_mentions": sum(mentions.values()),
            "scheme": schemes.detect_scheme(s.tags for s in sentences),
            "labels": sorted({t for s in sentences for t in s.tags}),
        }
    return out
