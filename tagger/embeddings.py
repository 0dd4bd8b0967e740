"""Pretrained word vectors from text files: GloVe, word2vec text and fastText ``.vec``.

Only the vectors of words that the corpus uses are kept (the model stays small). A token
is looked up by its exact form, then lower-cased, then lower-cased with its digits as 0
(``RULES``), and keeps the first that the file has: "Paris" finds GloVe's "paris",
"1996" its own row, and only a number the file lacks falls back to the row of its
digit shape. The character encoder still sees the original token.
"""

from __future__ import annotations

import gzip
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tagger.data import GZIP_MAGIC, read_error, text_lines
from tagger.errors import TaggerError
from tagger.vocab import digits_as_zero

RULES = ("exact", "lower-cased", "digits as 0")


@dataclass
class Vectors:
    """The vectors kept from a file, by the form the file has, and how tokens found them."""

    vectors: dict[str, np.ndarray]
    dim: int
    total: int  # vectors in the file
    forms: dict[str, str]  # token -> the form its vector is filed under
    rules: Counter[str]  # distinct tokens found by each of RULES

    def coverage(self, tokens: Iterable[str]) -> float:
        """Share of the running tokens that have a vector."""
        tokens = list(tokens)
        return sum(t in self.forms for t in tokens) / max(len(tokens), 1)


def candidates(token: str) -> list[tuple[str, str]]:
    """``(form, rule)`` in the order a token is looked up in a vectors file."""
    lower = token.lower()
    return [(token, RULES[0]), (lower, RULES[1]), (digits_as_zero(lower), RULES[2])]


def find_vectors(path: str | Path, tokens: Iterable[str]) -> Vectors:
    """The vectors of the file ``path`` that ``tokens`` find (``candidates``)."""
    tokens = set(tokens)
    found = read_vectors(path, {form for t in tokens for form, _ in candidates(t)})
    forms: dict[str, str] = {}
    rules: Counter[str] = Counter()
    for token in sorted(tokens):
        hit = next(((f, rule) for f, rule in candidates(token) if f in found.vectors), None)
        if hit is not None:
            forms[token] = hit[0]
            rules[hit[1]] += 1
    return Vectors(found.vectors, found.dim, found.total, forms, rules)


def read_vectors(path: str | Path, keep: set[str]) -> Vectors:
    """Read a vectors file, keeping the first vector of each word in ``keep`` (as the
    file spells it; ``forms`` and ``rules`` are left empty).

    A ``count dim`` header line (word2vec, fastText) is skipped. Gzip files are
    recognised by their first bytes, whatever the name; the text is UTF-8.
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
            word = fields[0]
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
    return Vectors(vectors, dim, total, {}, Counter())
