"""Vocabularies for words, characters and labels, with fixed PAD/UNK ids and JSON I/O."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from tagger.config import json_kind, short_repr
from tagger.errors import TaggerError
from tagger.schemes import parse_tag

PAD, UNK = "<pad>", "<unk>"
PAD_ID, UNK_ID = 0, 1
VOCAB_FORMAT = 2  # 2: words are looked up exact, lower-cased, then normalised
READABLE_FORMATS = (1, 2)
_DIGITS = re.compile(r"\d")


@dataclass
class Vocab:
    """Index of words, characters and labels.

    ``words[0]``/``chars[0]`` are PAD and ``[1]`` UNK; labels have neither: an unknown
    label is an error, not something to learn.

    Words are kept in their normalised form (lower-cased, digits as 0, as configured),
    except words with a pretrained vector, which keep the form the vectors file has
    them under ("1996", not "0000"). A word is therefore looked up by its exact form,
    then lower-cased, then normalised (``exact_first``; vocabularies of format 1 knew
    only the normalised form and are read as such).
    """

    words: list[str]
    chars: list[str]
    labels: list[str]
    lowercase: bool = True
    normalize_digits: bool = True
    exact_first: bool = True

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
        vector_forms: Mapping[str, str] | None = None,
    ) -> Vocab:
        """Count the (training) sentences; keep words seen ``min_freq`` times, most
        frequent first, at most ``max_size`` of them (PAD/UNK not counted).

        ``vector_forms`` maps a token to the form its pretrained vector is filed under
        (``Vectors.forms``): such tokens are counted under that form instead of the
        normalised one, and every such form is kept whatever its count, after the
        counted ones (also those of dev/test words, so that they keep their vector).
        """
        forms = vector_forms or {}
        probe = cls([PAD, UNK], [PAD, UNK], list(labels), lowercase, normalize_digits)
        kept, chars = probe._counted(sentences, min_freq, char_min_freq, forms)
        kept = kept[:max_size]
        seen = set(kept)
        for form in dict.fromkeys(forms.values()):
            if form not in seen:
                seen.add(form)
                kept.append(form)
        return cls([PAD, UNK, *kept], [PAD, UNK, *chars], list(labels), lowercase, normalize_digits)

    def grow(
        self,
        sentences: Iterable[Sequence[str]],
        labels: Sequence[str],
        *,
        min_freq: int = 1,
        max_size: int | None = None,
        char_min_freq: int = 1,
    ) -> Vocab:
        """This vocabulary with the words and characters of new (training) sentences that
        it lacks appended, so that every old word and character id keeps its meaning
        (continued training). ``min_freq`` and ``max_size`` apply to the new words only.

        ``labels`` is the new label list and must hold every old label; their ids may
        change (``tagger.continued`` maps label-indexed weights by name)."""
        lost = sorted(set(self.labels) - set(labels))
        if lost:
            raise ValueError(f"the grown label set lacks {', '.join(lost)}")
        words, chars = self._counted(sentences, min_freq, char_min_freq)
        new_words = [w for w in words if w not in self._word_index][:max_size]
        new_chars = [c for c in chars if c not in self._char_index]
        return Vocab(
            [*self.words, *new_words],
            [*self.chars, *new_chars],
            list(labels),
            self.lowercase,
            self.normalize_digits,
            self.exact_first,
        )

    def _counted(
        self,
        sentences: Iterable[Sequence[str]],
        min_freq: int,
        char_min_freq: int,
        forms: Mapping[str, str] | None = None,
    ) -> tuple[list[str], list[str]]:
        """The words (normalised, or as ``forms`` files them) seen ``min_freq`` times and
        the characters seen ``char_min_freq`` times in ``sentences``, most frequent first."""
        forms = forms or {}
        word_counts: Counter[str] = Counter()
        char_counts: Counter[str] = Counter()
        for tokens in sentences:
            word_counts.update(forms.get(t) or self.normalize(t) for t in tokens)
            for t in tokens:
                char_counts.update(t)
        words = [w for w, n in _ranked(word_counts) if n >= min_freq]
        return words, [c for c, n in _ranked(char_counts) if n >= char_min_freq]

    def normalize(self, word: str) -> str:
        """The form words are looked up by (lower-cased, digits as 0, as configured)."""
        if self.lowercase:
            word = word.lower()
        if self.normalize_digits:
            word = digits_as_zero(word)
        return word

    def word_id(self, word: str) -> int:
        """The id of the first of the word's forms the vocabulary has: exact,
        lower-cased, normalised (``exact_first``), or of the normalised form only."""
        if self.exact_first:
            found = self._word_index.get(word)
            if found is None:
                found = self._word_index.get(word.lower())
            if found is not None:
                return found
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
            "format_version": VOCAB_FORMAT if self.exact_first else 1,
            "lowercase": self.lowercase,
            "normalize_digits": self.normalize_digits,
            "labels": self.labels,
            "chars": self.chars,
            "words": self.words,
        }

    @classmethod
    def from_dict(cls, data: dict, where: str | None = None) -> Vocab:
        """The vocabulary ``to_dict`` wrote, checked entry by entry: any damage gives one
        ``TaggerError`` line (prefixed with ``where``, e.g. the file, when given)."""
        at = f"{where}: " if where else ""
        if not isinstance(data, dict):
            raise TaggerError(f"{at}vocabulary must be a JSON object, not {json_kind(data)}")
        version = data.get("format_version")
        if version not in READABLE_FORMATS or isinstance(version, bool):
            raise TaggerError(
                f"{at}vocabulary format version {short_repr(version)} is not supported "
                f"(this tagger reads versions {', '.join(map(str, READABLE_FORMATS))})"
            )
        for key in ("words", "chars", "labels", "lowercase", "normalize_digits"):
            if key not in data:
                raise TaggerError(f"{at}vocabulary is missing the key {key!r}")
        for key in ("words", "chars", "labels"):
            entries = data[key]
            if not isinstance(entries, list) or not all(isinstance(e, str) for e in entries):
                raise TaggerError(f"{at}vocabulary {key} must be a list of strings")
        for key in ("lowercase", "normalize_digits"):
            if not isinstance(data[key], bool):
                raise TaggerError(
                    f"{at}vocabulary {key} must be true or false, not {short_repr(data[key])}"
                )
        vocab = cls(
            list(data["words"]),
            list(data["chars"]),
            list(data["labels"]),
            data["lowercase"],
            data["normalize_digits"],
            exact_first=version >= 2,
        )
        if vocab.words[:2] != [PAD, UNK] or vocab.chars[:2] != [PAD, UNK]:
            raise TaggerError(f"{at}vocabulary does not start with the PAD and UNK entries")
        for key, index in (
            ("words", vocab._word_index),
            ("chars", vocab._char_index),
            ("labels", vocab._label_index),
        ):
            entries = getattr(vocab, key)
            if len(index) != len(entries):
                twice = next(e for i, e in enumerate(entries) if index[e] != i)
                raise TaggerError(f"{at}vocabulary {key} has {short_repr(twice)} twice")
        if not vocab.labels:
            raise TaggerError(f"{at}vocabulary has no labels")
        for label in vocab.labels:
            try:
                parse_tag(label)
            except ValueError:
                raise TaggerError(
                    f"{at}vocabulary label {short_repr(label)} is not a tag "
                    "(O, or B-, I-, E- or S- followed by a type)"
                ) from None
        return vocab


def digits_as_zero(word: str) -> str:
    """``word`` with every digit written as 0: "1996" and "2008" are both "0000"."""
    return _DIGITS.sub("0", word)


def _ranked(counts: Counter[str]) -> list[tuple[str, int]]:
    """Most frequent first, ties broken alphabetically so builds are deterministic."""
    return sorted(counts.items(), key=lambda item: (-item[1], item[0]))
