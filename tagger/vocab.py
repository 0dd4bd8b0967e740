"""Vocabularies for words, characters and labels, with fixed PAD/UNK ids and JSON I/O."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from tagger.errors import TaggerError

PAD, UNK = "<pad>", "<unk>"
PAD_ID, UNK_ID = 0, 1
VOCAB_FORMAT = 1
_DIGITS = re.compile(r"\d")


@dataclass
class Vocab:
    """Index of words (normalised form), characters and labels.

    ``words[0]``/``chars[0]`` are PAD and ``[1]`` UNK; labels have neither: an unknown
    label is an error, not something to learn.
    """

    words: list[str]
    chars: list[str]
    labels: list[str]
    lowercase: bool = True
    normalize_digits: bool = True

    def __post_init__(self) -> None:
        self._word_index = {w: i for i, w in enumerate(self.words)}
        self._char_index = {c: i for i, c in enumerate(self.chars)}
        self._label_index = {t: i for i, t in enumerate(self.labels)}

    @classmethod
    def build(
        cls,
        sentences: Iterable[Sequence[str]],
        labels: Sequence[str],
        *,
        min_freq: int = 1,
        max_size: int | None = None,
        lowercase: bool = True,
        normalize_digits: bool = True,
        char_min_freq: int = 1,
        extra_words: Iterable[str] = (),
    ) -> Vocab:
        """Count the (training) sentences; keep words seen ``min_freq`` times, most
        frequent first, at most ``max_size`` of them (PAD/UNK not counted).

        ``extra_words`` (e.g. words with a pretrained vector) are added whatever their
        count, after the counted ones.
        """
        probe = cls([PAD, UNK], [PAD, UNK], list(labels), lowercase, normalize_digits)
        word_counts: Counter[str] = Counter()
        char_counts: Counter[str] = Counter()
        for tokens in sentences:
            word_counts.update(probe.normalize(t) for t in tokens)
            for t in tokens:
                char_counts.update(t)
        kept = [w for w, n in _ranked(word_counts) if n >= min_freq]
        if max_size is not None:
            kept = kept[:max_size]
        seen = set(kept)
        for word in extra_words:
            word = probe.normalize(word)
            if word not in seen:
                seen.add(word)
                kept.append(word)
        chars = [c for c, n in _ranked(char_counts) if n >= char_min_freq]
        return cls([PAD, UNK, *kept], [PAD, UNK, *chars], list(labels), lowercase, normalize_digits)

    def normalize(self, word: str) -> str:
        """The form words are looked up by (lower-cased, digits as 0, as configured)."""
        if self.lowercase:
            word = word.lower()
        if self.normalize_digits:
            word = _DIGITS.sub("0", word)
        return word

    def word_id(self, word: str) -> int:
        return self._word_index.get(self.normalize(word), UNK_ID)

    def char_ids(self, word: str) -> list[int]:
        return [self._char_index.get(c, UNK_ID) for c in word]

    def label_ids(self, tags: Sequence[str]) -> list[int]:
        try:
            return [self._label_index[t] for t in tags]
        except KeyError as err:
            raise TaggerError(
                f"label {err.args[0]} is not one the model knows ({', '.join(self.labels)})"
            ) from None

    def to_dict(self) -> dict:
        return {
            "format_version": VOCAB_FORMAT,
            "lowercase": self.lowercase,
            "normalize_digits": self.normalize_digits,
            "labels": self.labels,
            "chars": self.chars,
            "words": self.words,
        }

    @classmethod
    def from_dict(cls, data: dict) -> Vocab:
        version = data.get("format_version")
        if version != VOCAB_FORMAT:
            raise TaggerError(
                f"vocabulary format version {version} is not supported "
                f"(this tagger reads version {VOCAB_FORMAT})"
            )
        try:
            vocab = cls(
                data["words"],
                data["chars"],
                data["labels"],
                data["lowercase"],
                data["normalize_digits"],
            )
        except KeyError as err:
            raise TaggerError(f"vocabulary is missing the key {err.args[0]!r}") from None
        if vocab.words[:2] != [PAD, UNK] or vocab.chars[:2] != [PAD, UNK]:
            raise TaggerError("vocabulary does not start with the PAD and UNK entries")
        return vocab


def _ranked(counts: Counter[str]) -> list[tuple[str, int]]:
    """Most frequent first, ties broken alphabetically so builds are deterministic."""
    return sorted(counts.items(), key=lambda item: (-item[1], item[0]))
