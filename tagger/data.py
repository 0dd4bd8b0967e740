"""Corpus readers: CoNLL column files, folders and Hugging Face hub datasets.

Every source ends up as a ``datasets.DatasetDict`` with ``tokens`` (list of str) and
``ner_tags`` (``Sequence(ClassLabel)``) in the splits ``train``/``validation``/``test``,
tags normalised to one scheme (IOB2 by default). Errors name the file and line.
"""

from __future__ import annotations

import codecs
import gzip
import os
import re
import stat
import zlib
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
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
    "train": ("train.txt", "train.conll", "eng.train", "train.jsonl"),
    "validation": ("dev.txt", "valid.txt", "validation.txt", "dev.conll", "eng.testa", "dev.jsonl"),
    "test": ("test.txt", "test.conll", "eng.testb", "test.jsonl"),
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
    lines: list[int] = field(default_factory=list)  # each token's line (CoNLL files)
    # Which document of its file the sentence belongs to (-DOCSTART- blocks, JSON records,
    # DocBin docs); None where the source has no documents. --dev-fraction keeps them whole.
    doc: int | None = None

    def where(self, i: int) -> str:
        """Where token ``i`` came from: ``file:line`` of its own line, or ``origin token N``."""
        if i < len(self.lines):
            return f"{self.origin.rpartition(':')[0]}:{self.lines[i]}"
        return f"{self.origin} token {i + 1}"


@dataclass
class RawCorpus:
    """Splits as read, tags in the source's own scheme; what ``tagger data`` reports on."""

    splits: dict[str, list[Sentence]] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # what reading changed: maps, splits, spans

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
        raise TaggerError(f"{path}: cannot read: {err.strerror or err}") from None


# Byte-order marks, longest first (a UTF-32 LE mark starts with the UTF-16 LE one).
BOMS = (
    (codecs.BOM_UTF32_LE, "UTF-32 LE", "utf-32"),
    (codecs.BOM_UTF32_BE, "UTF-32 BE", "utf-32"),
    (codecs.BOM_UTF16_LE, "UTF-16 LE", "utf-16"),
    (codecs.BOM_UTF16_BE, "UTF-16 BE", "utf-16"),
)
GZIP_MAGIC = b"\x1f\x8b"
_CP1252_BYTES = re.compile("[\udc80-\udc9f]")  # undecodable 0x80-0x9f, surrogate-escaped


def codec_name(encoding: str) -> str:
    """The codec's canonical name (``utf8`` -> ``utf-8``); an unknown one is a user error."""
    try:
        return codecs.lookup(encoding).name
    except (LookupError, TypeError):
        raise TaggerError(f"unknown encoding {encoding!r}") from None


def _is_wide(codec: str) -> bool:
    """UTF-16 and UTF-32: NUL bytes are normal and ``\\n`` is not one byte."""
    return codec.startswith(("utf-16", "utf-32"))


def _use(encoding: str, option: bool) -> str:
    """How to read the file in ``encoding``: the option, or (no option) converting it."""
    if option:
        return f"pass --encoding {encoding}"
    return f"convert it to UTF-8 (iconv -f {encoding} -t utf-8)"


def check_start(name: str, head: bytes, codec: str, option: bool = True) -> None:
    """Diagnose a file's first bytes: a UTF-16/32 byte-order mark that ``codec`` does not
    read, or gzip data where text is expected. ``option``: ``--encoding`` can be given."""
    for bom, label, family in BOMS:
        if head.startswith(bom) and codec in (family, f"{family}-{label[-2:].lower()}"):
            return  # the user's encoding reads this mark
    for bom, label, family in BOMS:
        if head.startswith(bom):
            if option:
                fix = f"pass --encoding {family} (or convert the file to UTF-8)"
            else:
                fix = f"convert the file to UTF-8 (iconv -f {family} -t utf-8)"
            raise TaggerError(f"{name}: starts with a {label} byte-order mark; {fix}")
    if head.startswith(GZIP_MAGIC):
        raise TaggerError(f"{name}: is gzip-compressed; decompress it first (gunzip)")


def nul_error(name: str, line: int) -> TaggerError:
    return TaggerError(
        f"{name}:{line}: contains NUL bytes; is this a binary file "
        f"(or UTF-16 without a byte-order mark)?"
    )


def decode_error(
    name: str,
    line: int,
    offset: int,
    byte: int,
    data: bytes,
    err: UnicodeDecodeError,
    option: bool = True,
) -> TaggerError:
    """The message for bytes that ``err.encoding`` cannot decode, with the likely encoding.

    ``offset``: the first bad ``byte``'s offset in the file; ``data``: the bytes around
    it (the line, or the whole file), searched for a hint of Windows-1252."""
    where = f"{name}:{line}: byte 0x{byte:02x} at offset {offset} is not valid {err.encoding}"
    if _is_wide(codec_name(err.encoding)):
        return TaggerError(f"{where} ({err.reason})")
    if codec_name(err.encoding).startswith("utf-8"):
        # Bytes 0x80-0x9f outside UTF-8 sequences are C1 controls in Latin-1 but curly
        # quotes, dashes and the euro sign in Windows-1252: name the encoding that fits.
        escaped = data.decode("utf-8", "surrogateescape")
        found = _CP1252_BYTES.search(escaped)
        if found:
            try:
                data.decode("cp1252")
            except UnicodeDecodeError:
                pass
            else:
                b = ord(found.group()) - 0xDC00
                char = bytes([b]).decode("cp1252")
                return TaggerError(
                    f"{where}; the file looks like Windows-1252 (0x{b:02x} is {char!r} there): "
                    f"{_use('cp1252', option)}"
                )
    return TaggerError(f"{where}; if the file is Latin-1, {_use('latin-1', option)}")


def read_error(name: str, err: BaseException) -> TaggerError:
    """One line for a failure while reading: an OS error or damaged compressed data."""
    if isinstance(err, EOFError):
        return TaggerError(f"{name}: the compressed data ends early (is the file truncated?)")
    if isinstance(err, (zlib.error, gzip.BadGzipFile)):
        return TaggerError(f"{name}: the compressed data is damaged ({err})")
    if isinstance(err, OSError) and err.strerror:
        return TaggerError(f"{name}: cannot read: {err.strerror}")
    return TaggerError(f"{name}: cannot read: {err}")


READ_ERRORS = (OSError, EOFError, zlib.error, ValueError)  # ValueError: a closed stream


def read_text(path: str | Path, encoding: str = "utf-8") -> str:
    """Read a text file; undecodable bytes give an error naming the offset and line.

    Before decoding, a UTF-16/32 byte-order mark, gzip data and NUL bytes are diagnosed
    (unless ``encoding`` is one that reads them)."""
    path = Path(path)
    codec = codec_name(encoding)
    with open_binary(path) as f:
        try:
            raw = f.read()
        except READ_ERRORS as err:
            raise read_error(str(path), err) from None
    check_start(str(path), raw[:4], codec)
    wide = _is_wide(codec)
    if not wide and b"\x00" in raw:
        raise nul_error(str(path), raw.count(b"\n", 0, raw.index(b"\x00")) + 1)
    skip = len(codecs.BOM_UTF8) if raw.startswith(codecs.BOM_UTF8) else 0
    if not codec.startswith("utf-8"):
        skip = 0  # a BOM is a UTF-8 thing; other encodings read the bytes as they are
    try:
        text = raw[skip:].decode(codec)
    except UnicodeDecodeError as err:
        offset = skip + err.start
        if wide:
            line = raw[skip:offset].decode(codec, "replace").count("\n") + 1
        else:
            line = raw.count(b"\n", 0, offset) + 1
        raise decode_error(str(path), line, offset, raw[offset], raw, err) from None
    return text.removeprefix("\ufeff") if wide else text


def _raw_lines(stream: BinaryIO, head: bytes) -> Iterator[bytes]:
    """The lines of a binary stream (ends kept) whose first bytes ``head`` were read."""
    pending = head
    while b"\n" in pending:
        line, _, pending = pending.partition(b"\n")
        yield line + b"\n"
    for raw in stream:
        if pending:
            raw, pending = pending + raw, b""
        yield raw
    if pending:
        yield pending


def text_lines(
    stream: BinaryIO, name: str, encoding: str = "utf-8", option: bool = True
) -> Iterator[str]:
    """Stream the lines of a binary stream as text, without their ``\\n``.

    Only ``\\n`` ends a line. A UTF-8 byte-order mark is dropped. Byte-order marks of
    other encodings, gzip data, NUL bytes, bad bytes and read errors are one line naming
    ``name`` (and the line); ``option``: whether ``--encoding`` can be suggested."""
    codec = codec_name(encoding)
    try:
        head = stream.read(4)
        check_start(name, head, codec, option)
        if _is_wide(codec):
            yield from _wide_lines(stream, name, codec, head)
            return
        offset = 0
        for lineno, raw in enumerate(_raw_lines(stream, head), start=1):
            if b"\x00" in raw:
                raise nul_error(name, lineno)
            try:
                line = raw.decode(codec)
            except UnicodeDecodeError as err:
                where = offset + err.start
                raise decode_error(name, lineno, where, raw[err.start], raw, err, option) from None
            if lineno == 1:
                line = line.removeprefix("\ufeff")
            offset += len(raw)
            yield line[:-1] if line.endswith("\n") else line
    except READ_ERRORS as err:
        raise read_error(name, err) from None


def _wide_lines(stream: BinaryIO, name: str, codec: str, head: bytes) -> Iterator[str]:
    """``text_lines`` for UTF-16/32: decode chunks, then split the text."""
    decoder = codecs.getincrementaldecoder(codec)()
    pending, lineno, first = "", 1, True
    chunk = head
    while True:
        final = not chunk
        try:
            text = pending + decoder.decode(chunk, final=final)
        except UnicodeDecodeError as err:
            raise TaggerError(
                f"{name}:{lineno + pending.count(chr(10))}: not valid {codec} ({err.reason})"
            ) from None
        if first and text:
            text, first = text.removeprefix("\ufeff"), False
        *lines, pending = text.split("\n")
        lineno += len(lines)
        yield from lines
        if final:
            break
        chunk = stream.read(1 << 16)
    if pending:
        yield pending


def parse_conll(text: str, name: str = "<text>", tag_column: int = -1) -> list[Sentence]:
    """Parse CoNLL column text: whitespace-separated columns, blank lines end sentences.

    ``-DOCSTART-`` lines are document boundaries and are dropped. Every token line
    must have the same number of columns as the first one.
    """
    sentences: list[Sentence] = []
    tokens: list[str] = []
    tags: list[str] = []
    lines: list[int] = []
    n_columns = None
    documents = 0  # -DOCSTART- lines so far: the document a sentence belongs to

    def flush() -> None:
        if tokens:
            origin = f"{name}:{lines[0]}"
            sentences.append(Sentence(tokens.copy(), tags.copy(), origin, lines.copy(), documents))
            tokens.clear()
            tags.clear()
            lines.clear()

    # Only \n ends a line (\r\n too): splitlines() would also split on form feeds and
    # U+2028 and shift every later line number.
    for lineno, line in enumerate(text.split("\n"), start=1):
        fields = line.split()
        if not fields:
            flush()
            continue
        if fields[0] == DOCSTART:
            flush()
            documents += 1
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
        tokens.append(fields[0])
        tags.append(tag)
        lines.append(lineno)
    flush()
    if not sentences:
        raise TaggerError(f"{name}: no sentences found (the file is empty or has only -DOCSTART-)")
    if not documents:  # no document structure: --dev-fraction splits by sentence
        for sentence in sentences:
            sentence.doc = None
    return sentences


def read_conll(path: str | Path, tag_column: int = -1, encoding: str = "utf-8") -> list[Sentence]:
    """Read one CoNLL column file into sentences (tags as in the file)."""
    return parse_conll(read_text(path, encoding), str(path), tag_column)


def format_conll(sentences: Iterable[tuple[Sequence[str], Sequence[str]]]) -> str:
    """Write ``(tokens, tags)`` pairs as two-column CoNLL text (what ``parse_conll`` reads)."""
    blocks = ("\n".join(f"{t} {g}" for t, g in zip(toks, tags)) for toks, tags in sentences)
    return "".join(block + "\n\n" for block in blocks)


# --------------------------------------------------------------------------- sources


# A source with one of these endings is a local file, never a hub id.
LOCAL_SUFFIXES = (
    ".txt", ".conll", ".conllu", ".conllx", ".iob", ".iob2", ".bio", ".bioes", ".jsonl",
    ".json", ".tsv", ".csv", ".spacy", ".parquet", ".arrow", ".gz", ".bz2", ".xz", ".zip",
    ".train", ".testa", ".testb", ".dev", ".test",
)  # fmt: skip


def _looks_like_path(source: str) -> bool:
    """Whether ``source`` means a local path: it exists, starts with ``.``, ``/`` or ``~``,
    ends with a file suffix or has more than one ``/``. ``owner/name`` is a hub id."""
    return (
        source.startswith((".", "/", "~"))
        or source.lower().endswith(LOCAL_SUFFIXES)
        or source.count("/") > 1
        or "\\" in source
        or os.path.lexists(source)
    )


def _kind(path: Path) -> str | None:
    """``"folder"``, ``"file"`` or ``None`` (missing); no permission is a user error."""
    try:
        mode = path.stat().st_mode
    except (FileNotFoundError, NotADirectoryError, ValueError):
        return None
    except OSError as err:
        raise TaggerError(f"{path}: cannot read: {err.strerror or err}") from None
    return "folder" if stat.S_ISDIR(mode) else "file"


def _missing(path: Path, what: str = "file or folder") -> TaggerError:
    """``PATH: no such file or folder``, saying why where it is not plain absence."""
    if os.path.islink(path):
        return TaggerError(f"{path}: no such {what} (a broken symbolic link)")
    for parent in path.parents:
        kind = _kind(parent) if str(parent) not in ("", ".") else "folder"
        if kind == "file":
            return TaggerError(f"{path}: no such {what} ({parent} is a file, not a folder)")
        if kind == "folder":
            break
    return TaggerError(f"{path}: no such {what}")


def _need_file(path: Path) -> Path:
    """An existing file (``--dev``/``--test``): missing or a folder is one line, at once."""
    kind = _kind(path)
    if kind is None:
        raise _missing(path, "file")
    if kind == "folder":
        raise TaggerError(f"{path}: is a folder, expected a text file")
    return path


def read_source(
    source: str | Path | None = None,
    *,
    dev: str | Path | None = None,
    test: str | Path | None = None,
    revision: str | None = None,
    tag_column: int = -1,
    encoding: str = "utf-8",
    lang: str = "en",
    data_format: str = "auto",
    misaligned: str = "error",
    map_labels: str | dict[str, str] | None = None,
    dev_fraction: float = 0.0,
    test_fraction: float = 0.0,
    seed: int = 13,
) -> RawCorpus:
    """Read a corpus as it is: the bundled one (``None``), a folder, a file or a hub id.

    ``dev`` and ``test`` name extra files that replace the source's own splits. Local
    paths that do not exist fail at once, before any hub lookup. Files are read as
    ``data_format`` says (``auto``: ``.spacy`` is a DocBin, ``.jsonl``/``.json`` span
    annotations of the tool their first record names, anything else CoNLL columns);
    ``lang`` and ``misaligned`` apply to span annotations (``tagger.spans``).
    ``map_labels`` (``"MISC=O,PERSON=PER"``) renames or drops entity types in every
    split; ``dev_fraction``/``test_fraction`` carve splits out of train (``carve``).
    """
    codec_name(encoding)  # an unknown encoding fails before anything slow
    extras = {
        split: _need_file(Path(os.path.expanduser(extra)))
        for split, extra in (("validation", dev), ("test", test))
        if extra is not None
    }
    corpus = RawCorpus()
    if source is None:
        source = bundled_data_dir()
    if isinstance(source, Path) or _looks_like_path(str(source)):
        path = Path(os.path.expanduser(source))
        kind = _kind(path)
        if kind == "folder":
            try:
                present = set(os.listdir(path))
            except OSError as err:
                raise TaggerError(f"{path}: cannot read: {err.strerror or err}") from None
            for split, names in FOLDER_FILES.items():
                found = next(
                    (path / n for n in names if n in present and _kind(path / n) == "file"), None
                )
                if found is not None:
                    corpus.sources[split] = str(found)
            if "train" not in corpus.sources:
                raise TaggerError(
                    f"{path}: no training file found (expected one of "
                    f"{', '.join(FOLDER_FILES['train'])})"
                )
        elif kind == "file":
            corpus.sources["train"] = str(path)
        else:
            raise _missing(path)
    else:
        corpus = _read_hub(str(source), revision)
    for split, extra in extras.items():
        corpus.sources[split] = str(extra)
        corpus.splits.pop(split, None)
    for split, file in corpus.sources.items():
        if split not in corpus.splits:
            corpus.splits[split] = read_file(
                file, data_format, tag_column, encoding, lang, misaligned, corpus.notes
            )
    if map_labels:
        relabel(corpus, map_labels)
    if dev_fraction or test_fraction:
        carve(corpus, dev_fraction, test_fraction, seed)
    return corpus


def file_format(path: str | Path, data_format: str = "auto") -> str:
    """The format ``read_file`` reads ``path`` in: ``data_format``, or for ``auto``
    ``spacy`` (``.spacy``), ``spans`` (``.jsonl``/``.json``: the tool is detected from the
    first record) or ``conll``."""
    if data_format != "auto":
        return data_format
    name = str(path).lower()
    if name.endswith(".spacy"):
        return "spacy"
    if name.endswith((".jsonl", ".json")):
        return "spans"
    return "conll"


def read_file(
    path: str | Path,
    data_format: str = "auto",
    tag_column: int = -1,
    encoding: str = "utf-8",
    lang: str = "en",
    misaligned: str = "error",
    notes: list[str] | None = None,
) -> list[Sentence]:
    """Read one data file in any format as sentences with tags; what reading changed
    (misaligned spans moved, annotations chosen) is appended to ``notes``."""
    fmt = file_format(path, data_format)
    notes = [] if notes is None else notes
    if fmt == "conll":
        return read_conll(path, tag_column, encoding)
    if fmt == "spacy":
        from tagger.docbin import read_docbin

        return read_docbin(path, lang=lang, notes=notes)
    from tagger.spans import read_spans

    span_format = None if fmt == "spans" else fmt
    return read_spans(
        path, lang=lang, fmt=span_format, misaligned=misaligned, encoding=encoding, notes=notes
    )


def relabel(corpus: RawCorpus, map_labels: str | dict[str, str]) -> None:
    """Rename or drop entity types in every split (``{"MISC": "O", "PERSON": "PER"}``).

    Tags are mapped as IOB2 mentions, so the mention boundaries stay what the source
    scheme said (two adjacent mentions renamed to one type stay two). A type to map that
    occurs in no split is refused: it is a typo more often than not."""
    from tagger.config import label_map

    mapping = label_map(map_labels) if isinstance(map_labels, str) else dict(map_labels)
    changed: Counter[str] = Counter()
    for sentences in corpus.splits.values():
        for sentence in sentences:
            tags = schemes.to_iob2(sentence.tags)
            for i, tag in enumerate(tags):
                prefix, etype = schemes.parse_tag(tag)
                if etype not in mapping:
                    continue
                if prefix == "B":
                    changed[etype] += 1
                new = mapping[etype]
                tags[i] = "O" if new == "O" else f"{prefix}-{new}"
            sentence.tags = schemes.to_iob2(tags)  # I- after a dropped B- opens a mention
    unused = sorted(set(mapping) - set(changed))
    if unused:
        raise TaggerError(
            f"map_labels: no {', '.join(unused)} mention in "
            f"{', '.join(corpus.sources.values()) or 'the data'} (types are case-sensitive)"
        )
    done = ", ".join(
        f"{old} -> {'dropped' if mapping[old] == 'O' else mapping[old]} ({changed[old]:,} mentions)"
        for old in mapping
    )
    corpus.notes.append(f"map_labels: {done}")


def carve(corpus: RawCorpus, dev_fraction: float, test_fraction: float, seed: int) -> None:
    """Move a random ``dev_fraction``/``test_fraction`` of the training documents (whole
    documents where the source has them, else sentences) into the dev/test splits,
    reproducibly from ``seed``; refused where the source already has that split."""
    import numpy as np

    wanted = {"validation": dev_fraction, "test": test_fraction}
    for split, fraction in wanted.items():
        if fraction and split in corpus.splits:
            flag = "--dev-fraction" if split == "validation" else "--test-fraction"
            raise TaggerError(
                f"{flag} carves a {split} split out of the training data, but the data "
                f"already has one ({corpus.sources.get(split)}); leave one of them out"
            )
    train = corpus.splits["train"]
    # A unit is a document (its sentences in order) or, without documents, a sentence.
    units: dict[object, list[Sentence]] = {}
    for i, sentence in enumerate(train):
        key = ("doc", sentence.doc) if sentence.doc is not None else ("sentence", i)
        units.setdefault(key, []).append(sentence)
    keys = list(units)
    order = np.random.default_rng(seed).permutation(len(keys))
    by_document = any(s.doc is not None for s in train)
    unit = "documents" if by_document else "sentences"
    taken = 0
    for split, fraction in wanted.items():
        if not fraction:
            continue
        count = max(1, round(fraction * len(keys)))
        chosen = sorted(order[taken : taken + count])  # file order within the split
        taken += count
        if taken >= len(keys):
            raise TaggerError(
                f"{corpus.sources['train']}: {len(keys)} {unit} are too few to carve "
                f"{fraction:g} out as {split} and keep some for training"
            )
        corpus.splits[split] = [s for k in chosen for s in units[keys[k]]]
        corpus.sources[split] = f"{fraction:g} of {corpus.sources['train']} ({count:,} {unit})"
    kept = sorted(order[taken:])
    corpus.splits["train"] = [s for k in kept for s in units[keys[k]]]
    sizes = (f"{split} {len(corpus.splits[split]):,}" for split in SPLITS if split in corpus.splits)
    corpus.notes.append(f"split by {unit[:-1]} (seed {seed}): {', '.join(sizes)} sentences")


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
            for j, tag in enumerate(tags):
                try:
                    schemes.parse_tag(tag)
                except ValueError as err:
                    raise TaggerError(f"{origin} token {j + 1}: {err}") from None
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
    known_types: Iterable[str] = (),
    **reading,
) -> DatasetDict:
    """Load a corpus as a ``DatasetDict`` with tags normalised to ``scheme``.

    ``source``: ``None`` (bundled corpus), a folder of CoNLL files, one CoNLL file
    (the train split; give ``dev``/``test``), or a hub id (``conll2003`` is an alias
    for the hub's Parquet conversion of ``eriktks/conll2003``). ``unseen_labels``:
    ``"error"`` when validation/test hold a label absent from train, or ``"O"`` to
    map such tags to ``O``. ``known_types``: entity types to label and accept in every
    split beside those of train (a continued model's own). ``reading``: the other
    options of ``read_source`` (format, language, misaligned spans, label map, dev/test
    fractions and their seed).
    """
    corpus = read_source(
        source,
        dev=dev,
        test=test,
        revision=revision,
        tag_column=tag_column,
        encoding=encoding,
        **reading,
    )
    return to_dataset_dict(corpus, scheme, unseen_labels, known_types)


def to_dataset_dict(
    corpus: RawCorpus,
    scheme: str = "IOB2",
    unseen_labels: str = "error",
    known_types: Iterable[str] = (),
):
    """Normalise a raw corpus's tags and wrap it as a ``DatasetDict``; the label set is
    train's entity types and ``known_types``."""
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
    types |= set(known_types)
    train_labels = set(schemes.label_set(types, scheme))
    for split, tag_lists in converted.items():
        for sentence, tags in zip(corpus.splits[split], tag_lists):
            unseen = [t for t in tags if t not in train_labels]
            if not unseen:
                continue
            if unseen_labels == "error":
                # The first offending token's own line, and its tag as the file spells it.
                i = next(i for i, t in enumerate(tags) if t not in train_labels)
                tag = sentence.tags[i]
                raise TaggerError(
                    f"{sentence.where(i)}: label {tag}: entity type "
                    f"{schemes.parse_tag(tag)[1]} does not occur in the training data; "
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
    out: dict = {"scheme": corpus.scheme(), "splits": {}, "notes": list(corpus.notes)}
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
