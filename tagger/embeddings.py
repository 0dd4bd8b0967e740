"""Pretrained word vectors from text files: GloVe, word2vec text and fastText ``.vec``.

Only the vectors of words that the corpus uses are kept (the model stays small), found
by the vocabulary's normalised form (lower-cased by default); the character encoder
still sees the original case.
"""

from __future__ import annotations

import gzip
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tagger.data import GZIP_MAGIC, read_error, text_lines
from tagger.errors import TaggerError


@dataclass
class Vectors:
    """The vectors kept from a file, by normalised word, and what the file held."""

    vectors: dict[str, np.ndarray]
    dim: int
    total: int  # vectors in the file

    def coverage(self, words: Iterable[str]) -> float:
        """Share of the running words (normalised) that have a vector."""
        words = list(words)
        return sum(w in self.vectors for w in words) / max(len(words), 1)


def read_vectors(path: str | Path, keep: set[str], normalize) -> Vectors:
    """Read a vectors file, keeping the first vector of each normalised word in ``keep``.

    Files list frequent words first, so for ``Paris``/``paris`` the more frequent
    spelling wins. A ``count dim`` header line (word2vec, fastText) is skipped. Gzip
    files are recognised by their first bytes, whatever the name; the text is UTF-8.
    """
    path = Path(path)
    try:
        raw = open(path, "rb")  # noqa: SIM115 - closed below
    except FileNotFoundError:
        raise TaggerError(f"{path}: no such embeddings file") from None
    except IsADirectoryError:
        raise TaggerError(f"{path}: is a folder, expected a vectors file") from None
    except OSError as err:
        raise TaggerError(f"{path}: cannot read: {err.strerror or err}") from None
    vectors: dict[str, np.ndarray] = {}
    dim = None
    total = 0
    with raw:
        try:
            compressed = raw.peek(2)[:2] == GZIP_MAGIC
        except OSError as err:
            raise read_error(str(path), err) from None
        stream = gzip.GzipFile(fileobj=raw, mode="rb") if compressed else raw
        lines = text_lines(stream, str(path), "utf-8", option=False)
        for lineno, line in enumerate(lines, start=1):
            fields = line.rstrip(" ").split(" ")
            if lineno == 1 and len(fields) == 2 and all(x.isdigit() for x in fields):
                continue  # header
            if len(fields) < 2:
                continue  # blank line
            if dim is None:
                dim = len(fields) - 1
            if len(fields) - 1 != dim:
                # GloVe 840B has a few words with spaces: the vector is the tail.
                if len(fields) - 1 < dim:
                    raise TaggerError(f"{path}:{lineno}: {len(fields) - 1} values, expected {dim}")
                fields = [" ".join(fields[: len(fields) - dim]), *fields[-dim:]]
            total += 1
            word = normalize(fields[0])
            if word in keep and word not in vectors:
                try:
                    with np.errstate(over="ignore"):  # too large for float32: inf, refused below
                        vector = np.asarray(fields[1:], dtype=np.float32)
                except ValueError:
                    raise TaggerError(f"{path}:{lineno}: not a vector of numbers") from None
                if not np.isfinite(vector).all():  # nan, inf, or too large for float32
                    raise TaggerError(
                        f"{path}:{lineno}: non-finite value in the vector of {fields[0]!r}"
                    )
                vectors[word] = vector
    if dim is None:
        raise TaggerError(f"{path}: no vectors found")
    return Vectors(vectors, dim, total)
