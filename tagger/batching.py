"""Tensors from token lists, built in bulk, and length-bucketed batches.

A split is encoded once into flat arrays over *word types*: each distinct token string
gets a row of word id, casing id and character ids. A batch then gathers rows with
NumPy indexing, and the character encoder runs once per distinct type in the batch
instead of once per token position.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from tagger.vocab import PAD_ID, UNK_ID, Vocab

# Long tokens (URLs, hashes) keep their first characters for the character encoder;
# the word itself and its tag are never dropped.
MAX_WORD_CHARS = 30
CASINGS = (
    "<pad>",
    "other",
    "numeric",
    "mostly_numeric",
    "lower",
    "upper",
    "title",
    "has_digit",
    "mixed",
)


def casing(word: str) -> int:
    """A small casing class (index into ``CASINGS``); word embeddings are lower-cased."""
    if not word:
        return 1
    digits = sum(c.isdigit() for c in word)
    if word.isdigit():
        return 2
    if digits / len(word) > 0.5:
        return 3
    if word.islower():
        return 4
    if word.isupper():
        return 5
    if word[0].isupper():
        return 6
    if digits:
        return 7
    if any(c.isalpha() for c in word):
        return 8
    return 1


@dataclass
class Encoded:
    """A list of sentences as flat arrays (``n_tokens`` long) over a type table.

    Partially annotated sentences (continued training's replayed ones, whose source did
    not annotate some of the run's entity types) are marked in ``partial``; ``relaxed``
    says which labels each annotated label may stand for in them. Both are None in an
    ordinary split (every sentence fully annotated), or both are set, with ``tag_ids``.
    """

    type_ids: np.ndarray  # (n_tokens,) row in the type table
    offsets: np.ndarray  # (n_sentences + 1,) sentence i is type_ids[offsets[i]:offsets[i+1]]
    tag_ids: np.ndarray | None  # (n_tokens,) or None when unlabelled
    type_words: np.ndarray  # (n_types,) word id
    type_casing: np.ndarray  # (n_types,) casing id
    type_chars: np.ndarray  # (n_types, max_chars) char ids, PAD-padded
    partial: np.ndarray | None = None  # (n_sentences,) bool: partially annotated
    # (K, K) bool over the K labels: row k, the labels a token tagged k in a partial
    # sentence may really have (k itself and, for O, the labels of unannotated types)
    relaxed: np.ndarray | None = None
    # Distillation (``tagger.distill``): each token's label distribution from the teacher,
    # (n_tokens, K) float32, and which sentences have no gold tags (unlabeled text,
    # whose tag_ids are placeholders), (n_sentences,) bool. Both None otherwise.
    soft: np.ndarray | None = None
    unlabeled: np.ndarray | None = None

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def __len__(self) -> int:
        return len(self.offsets) - 1


@dataclass
class Batch:
    """Padded tensors for one batch; shapes use B = batch, T = longest sentence, U = types."""

    word_ids: torch.Tensor  # (B, T)
    casing_ids: torch.Tensor  # (B, T)
    char_ids: torch.Tensor  # (U, C) characters of each distinct type in the batch
    type_index: torch.Tensor  # (B, T) row of char_ids for each position
    lengths: torch.Tensor  # (B,) on the CPU, as pack_padded_sequence wants
    mask: torch.Tensor  # (B, T) bool
    tags: torch.Tensor | None  # (B, T), 0 at padding
    index: np.ndarray  # (B,) sentence numbers in the encoded split
    # (B, T, K) bool, the labels each token may have, when the batch holds partially
    # annotated sentences (its fully annotated ones allow their tag only; padding none);
    # None otherwise, and the loss is the ordinary one
    allowed: torch.Tensor | None = None
    soft: torch.Tensor | None = None  # (B, T, K) the teacher's distributions; 0 at padding
    labeled: torch.Tensor | None = None  # (B,) bool: the sentence has gold tags

    def to(self, device: torch.device) -> Batch:
        move = lambda t: None if t is None else t.to(device, non_blocking=True)  # noqa: E731
        return Batch(
            move(self.word_ids),
            move(self.casing_ids),
            move(self.char_ids),
            move(self.type_index),
            self.lengths,
            move(self.mask),
            move(self.tags),
            self.index,
            move(self.allowed),
            move(self.soft),
            move(self.labeled),
        )


def encode(
    vocab: Vocab, sentences: Sequence[Sequence[str]], tags: Sequence[Sequence[str]] | None = None
) -> Encoded:
    """Encode token lists (and tag lists) once, before any batching."""
    table: dict[str, int] = {}
    type_ids = np.fromiter(
        (table.setdefault(tok, len(table)) for toks in sentences for tok in toks), dtype=np.int64
    )
    offsets = np.zeros(len(sentences) + 1, dtype=np.int64)
    np.cumsum([len(s) for s in sentences], out=offsets[1:])
    types = list(table)
    type_chars = np.zeros(
        (len(types), max(1, min(MAX_WORD_CHARS, max(map(len, types), default=1)))), np.int64
    )
    for row, word in enumerate(types):
        ids = vocab.char_ids(word[:MAX_WORD_CHARS]) or [UNK_ID]  # "" still has a row
        type_chars[row, : len(ids)] = ids
    tag_ids = None
    if tags is not None:
        tag_ids = np.fromiter(
            (i for tag_list in tags for i in vocab.label_ids(tag_list)), dtype=np.int64
        )
    return Encoded(
        type_ids=type_ids,
        offsets=offsets,
        tag_ids=tag_ids,
        type_words=np.fromiter((vocab.word_id(w) for w in types), np.int64, len(types)),
        type_casing=np.fromiter((casing(w) for w in types), np.int64, len(types)),
        type_chars=type_chars,
    )


def make_batch(enc: Encoded, index: np.ndarray) -> Batch:
    """Gather and pad the sentences ``index`` of an encoded split."""
    starts, lengths = enc.offsets[index], enc.lengths[index]
    width = int(lengths.max())
    positions = np.arange(width)
    mask = positions[None, :] < lengths[:, None]
    flat = np.where(mask, starts[:, None] + positions[None, :], 0)
    types = np.where(mask, enc.type_ids[flat], -1)
    uniq, inverse = np.unique(types[mask], return_inverse=True)
    type_index = np.zeros_like(types)
    type_index[mask] = inverse
    char_ids = enc.type_chars[uniq]
    char_ids = char_ids[:, : max(1, int((char_ids != PAD_ID).sum(1).max(initial=1)))]
    word_ids = np.where(mask, enc.type_words[types], PAD_ID)
    casing_ids = np.where(mask, enc.type_casing[types], 0)
    tags, allowed = None, None
    if enc.tag_ids is not None:
        tag_ids = np.where(mask, enc.tag_ids[flat], 0)
        tags = torch.from_numpy(tag_ids)
        if enc.partial is not None and enc.partial[index].any():
            allowed = torch.from_numpy(_allowed(enc, enc.partial[index], tag_ids, mask))
    soft, labeled = None, None
    if enc.soft is not None:
        soft = torch.from_numpy(np.where(mask[:, :, None], enc.soft[flat], 0.0).astype(np.float32))
        labeled = torch.from_numpy(~enc.unlabeled[index])
    return Batch(
        word_ids=torch.from_numpy(word_ids),
        casing_ids=torch.from_numpy(casing_ids),
        char_ids=torch.from_numpy(np.ascontiguousarray(char_ids)),
        type_index=torch.from_numpy(type_index),
        lengths=torch.from_numpy(lengths),
        mask=torch.from_numpy(mask),
        tags=tags,
        index=index,
        allowed=allowed,
        soft=soft,
        labeled=labeled,
    )


def _allowed(enc: Encoded, partial: np.ndarray, tags: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(B, T, K) bool: the labels each token of a batch may have. partial (B,) bool, tags
    and mask (B, T): a partial sentence's token tagged k may have ``enc.relaxed[k]``,
    another sentence's only k; padding none."""
    exact = np.eye(len(enc.relaxed), dtype=bool)[tags]
    allowed = np.where(partial[:, None, None], enc.relaxed[tags], exact)
    return allowed & mask[:, :, None]


UNCUT = 32  # batches of up to this many sentences are not cut by length (_tight_chunks)


def bucket_indices(
    lengths: np.ndarray,
    batch_size: int,
    *,
    shuffle: bool = False,
    rng: np.random.Generator | None = None,
) -> list[np.ndarray]:
    """Sentence numbers of each batch: sentences of similar length (little padding).

    With ``shuffle``, lengths get a little noise before sorting and the batch order is
    shuffled, so batches differ between epochs but stay tight.
    """
    lengths = lengths.astype(np.float64)
    if shuffle:
        rng = rng or np.random.default_rng()
        lengths = lengths + rng.uniform(0, 2, size=len(lengths))
    order = np.argsort(lengths, kind="stable")
    if shuffle:
        chunks = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
        rng.shuffle(chunks)
        return chunks
    return _tight_chunks(order, lengths[order], batch_size)


def _tight_chunks(order: np.ndarray, sorted_lengths: np.ndarray, batch_size: int) -> list:
    """Cut length-sorted sentences into batches of at most ``batch_size`` whose longest
    sentence is at most 1.5x (+8 tokens) their shortest: the encoder runs over padding,
    so a few long sentences must not stretch a whole batch of short ones (prediction
    calls get sentences of any mix of lengths). One step per batch, not per sentence.

    Up to ``UNCUT`` sentences stay one batch: there a time step costs about the same
    for 2 sentences as for 16, so a cut only adds steps (16 CoNLL test sentences,
    one thread: 27 ms cut into about 2 batches, 20 ms as one)."""
    if len(order) <= min(UNCUT, batch_size):
        return [order]
    chunks, start, n = [], 0, len(order)
    while start < n:
        limit = sorted_lengths[start] * 1.5 + 8
        end = min(start + batch_size, int(np.searchsorted(sorted_lengths, limit, side="right")))
        chunks.append(order[start:end])
        start = end
    return chunks


def bucket_batches(
    enc: Encoded,
    batch_size: int,
    *,
    shuffle: bool = False,
    rng: np.random.Generator | None = None,
) -> Iterator[Batch]:
    """The batches of ``bucket_indices``, built one at a time."""
    for chunk in bucket_indices(enc.lengths, batch_size, shuffle=shuffle, rng=rng):
        yield make_batch(enc, chunk)
