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
    spelling wins. A ``count dim`` header line (word2vec, fastText) is skipped.
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    vectors: dict[str, np.ndarray] = {}
    dim = None
    total = 0
    try:
        with opener(path, "rt", encoding="utf-8", newline="\n") as f:
            for lineno, line in enumerate(f, start=1):
                fields = line.rstrip("\n").rstrip(" ").split(" ")
                if lineno == 1 and len(fields) == 2 and all(x.isdigit() for x in fields):
                    continue  # header
                if len(fields) < 2:
                    continue  # blank line
                if dim is None:
                    dim = len(fields) - 1
                if len(fields) - 1 != dim:
                    # GloVe 840B has a few words with spaces: the vector is the tail.
                    if len(fields) - 1 < dim:
                        raise TaggerError(
                            f"{path}:{lineno}: {len(fields) - 1} values, expected {dim}"
                        )
                    fields = [" ".join(fields[: len(fields) - dim]), *fields[-dim:]]
                total += 1
                word = normalize(fields[0])
                if word in keep and word not in vectors:
                    try:
                        vectors[word] = np.asarray(fields[1:], dtype=np.float32)
                    except ValueError:
                        raise TaggerError(f"{path}:{lineno}: not a vector of numbers") from None
    except FileNotFoundError:
        raise TaggerError(f"{path}: no such embeddings file") from None
    except (UnicodeDecodeError, gzip.BadGzipFile, EOFError) as err:
        raise TaggerError(f"{path}: not a readable UTF-8 text vectors file ({err})") from None
    if dim is None:
        raise TaggerError(f"{path}: no vectors found")
    return Vectors(vectors, dim, total)
