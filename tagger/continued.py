"""Continued training (``tagger train --init-from MODEL``): a trained model as the start of
a run on new data.

The network's architecture comes from the model; the vocabulary grows (old word and
character ids keep their meaning, the new data's are appended; the labels cover the old
and the new entity types); every old weight is carried into a freshly initialised network,
label-indexed ones by label name. ``--replay`` mixes the model's old training data into
every epoch so that learning the new data does not erase the old (rehearsal).

The old data annotates only the model's entity types: where it says ``O``, a mention of
a type the run adds may be hiding (a product name in data that never tagged products).
Replayed sentences therefore train with partial labels (``Replay``): their ``O`` tokens
may be ``O`` or any label of such an "open" type, so replay does not teach the model that
mentions of the new types are ``O``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from tagger import schemes
from tagger.batching import Encoded, encode
from tagger.config import ModelConfig, TrainConfig
from tagger.data import decoded_tags, read_source, tag_names
from tagger.errors import TaggerError
from tagger.model import VOCAB_INDEXED, SequenceTagger
from tagger.predict import Tagger
from tagger.vocab import Vocab

if TYPE_CHECKING:
    from datasets import Dataset

# What a continued run takes from its model, whatever its own config says: the network's
# shape and regularisation, and how words are looked up (the embedding rows depend on it).
ARCHITECTURE = tuple(f.name for f in fields(ModelConfig) if f.name != "ensemble") + (
    "lowercase",
    "normalize_digits",
)

Sentences = tuple[list[list[str]], list[list[str]]]  # token lists and their tag lists


class Continuation:
    """The model a run continues (``init_from``) and the old sentences it replays
    (``replay``), from reading the config until ``tagger.training.build`` has the
    network; the run itself keeps only ``record()`` and the ``Replay``."""

    def __init__(self, config: TrainConfig) -> None:
        """Load the model and the replay data; ``self.config`` is ``config`` with the
        model's architecture. Loading builds a network, which draws random numbers:
        seed after this, not before."""
        if config.embeddings:
            raise TaggerError(
                "embeddings: a continued run (init_from) keeps the model's word vectors, "
                "which are already in its embedding table; leave out --embeddings"
            )
        self.path = str(Path(config.init_from).expanduser().absolute())
        self.init = load_init(config.init_from)
        taken = {k: getattr(self.init.config, k) for k in ARCHITECTURE}
        self.config = replace(config, **taken)
        # what the config asked for differently (it cannot tell a default from a choice)
        asked = {k: getattr(config, k) for k in ARCHITECTURE}
        self.overridden = {k: v for k, v in asked.items() if v != taken[k]}
        self.old = None
        if config.replay:
            self.old = read_replay(config.replay, self.init.config, self.config.scheme)

    def describe(self) -> str:
        """The progress line saying which architecture was taken from the model."""
        c = self.config
        chars = "no chars"
        if c.char_encoder != "none":
            chars = f"chars {c.char_encoder} {c.char_dim}d x{c.char_hidden}"
        line = (
            f"architecture from {self.path}: {c.cell} x{c.num_layers}"
            f"{' bi' if c.bidirectional else ''}, {c.hidden_size} hidden, {c.decoder} in "
            f"{c.scheme}, words {c.word_dim}d, {chars}, casing {c.casing_dim}d, "
            f"dropout {c.dropout:g} (words {c.word_dropout:g})"
        )
        if self.overridden:
            asked = ", ".join(f"{k} {v}" for k, v in self.overridden.items())
            line += f"; not the config's {asked}"
        return line

    def vocab(self, train: Dataset) -> Vocab:
        """The model's vocabulary grown by the new ``train`` split (``min_freq`` and
        ``max_vocab`` apply to its new words), with labels for the model's, the new data's
        and the replayed data's entity types."""
        types = _types(self.init.vocab.labels) | _types(tag_names(train))
        if self.old is not None:
            types |= _types(t for tags in self.old[1] for t in tags)
        return self.init.vocab.grow(
            train["tokens"],
            schemes.label_set(types, self.config.scheme),
            min_freq=self.config.min_freq,
            max_size=self.config.max_vocab,
        )

    def model(self, vocab: Vocab) -> SequenceTagger:
        """A network for ``vocab``, initialised as a new one is, with every weight of the
        model carried into it (``carry_weights``)."""
        model = SequenceTagger(self.config.model, vocab)
        carry_weights(self.init.model, self.init.vocab, model, vocab)
        return model

    def replay(self, vocab: Vocab, train: Dataset) -> Replay | None:
        """The old sentences to mix with the new ``train`` split, or None without
        ``replay``."""
        if self.old is None:
            return None
        new = (list(train["tokens"]), decoded_tags(train))
        return Replay.of(
            self.config.replay,
            vocab,
            new,
            self.old,
            self.config.replay_fraction,
            annotated=self.init.entity_types,
        )

    def grown(self, vocab: Vocab, replay: Replay | None) -> str:
        """The progress line saying what the run adds to the model."""
        old = self.init.vocab
        added = sorted(_types(vocab.labels) - _types(old.labels))
        line = (
            f"continuing {self.path}: +{len(vocab.words) - len(old.words):,} words, "
            f"+{len(vocab.chars) - len(old.chars):,} chars, "
            f"new entity types: {', '.join(added) or 'none'}"
        )
        if replay is not None:
            line += (
                f"; replaying {replay.per_epoch:,} of the {replay.sentences:,} sentences "
                f"of {replay.source} each epoch"
            )
            if replay.open_types:
                line += f" (partial labels: their O may be {', '.join(replay.open_types)})"
        return line

    def record(self) -> dict:
        """What ``metrics.json`` says of the start: the model's folder, the fingerprint of
        its training data and its scores (where its folder has them)."""
        scores = ("best_epoch", "dev_f1", "test_f1")
        return {
            "path": self.path,
            "fingerprint": self.init.data.get("fingerprint"),
            **{k: self.init.metrics[k] for k in scores if k in self.init.metrics},
        }


def load_init(path: str) -> Tagger:
    """The single-tagger model folder a run continues (on the CPU); a missing, damaged or
    ensemble folder is one ``TaggerError`` line."""
    try:
        init = Tagger.load(path, device="cpu")
    except TaggerError as err:
        raise TaggerError(f"init_from: {err}") from None
    if init.config.ensemble > 1:
        raise TaggerError(
            f"init_from: {path} is an ensemble of {init.config.ensemble} taggers; continued "
            "training starts from a single tagger's model folder"
        )
    return init


def read_replay(source: str, init: TrainConfig, scheme: str) -> Sentences:
    """The training sentences of ``source`` (the model's old training data) read as the
    model read its own (``init.reading()``: columns, encoding, format, label map, ...),
    with their tags in ``scheme``."""
    train = read_source(source, **init.reading()).splits["train"]
    if not train:
        raise TaggerError(f"replay: {source} has no training sentences")
    return [s.tokens for s in train], [schemes.convert(s.tags, scheme) for s in train]


def carry_weights(
    old: SequenceTagger, old_vocab: Vocab, new: SequenceTagger, new_vocab: Vocab
) -> None:
    """Copy every weight of ``old`` into ``new``, a network of the same architecture for a
    vocabulary grown from ``old_vocab`` (``Vocab.grow``).

    Dimensions indexed by words, characters or labels (``VOCAB_INDEXED``: embedding rows,
    output projection rows, CRF scores in both dimensions) are copied entry by entry, by
    name; entries only ``new_vocab`` has keep ``new``'s initialisation (a new label's CRF
    transitions too). Every other weight is copied whole. The CRF's constraints are not
    weights: ``new`` derived them from its own labels. Anything that does not fit is a
    bug, not bad input, and raises ``ValueError``."""
    old_state, state = old.state_dict(), new.state_dict()
    if old_state.keys() != state.keys():
        raise ValueError(f"the networks differ in {sorted(old_state.keys() ^ state.keys())}")
    shared = {kind: _shared(old_vocab, new_vocab, kind) for kind in ("words", "chars", "labels")}
    carried = {}
    for name, fresh in state.items():
        kinds = VOCAB_INDEXED.get(name, ())
        source, n = old_state[name], len(kinds)
        old_size = tuple(len(getattr(old_vocab, kind)) for kind in kinds) + fresh.shape[n:]
        new_size = tuple(len(getattr(new_vocab, kind)) for kind in kinds) + fresh.shape[n:]
        if source.shape != old_size or fresh.shape != new_size:
            raise ValueError(
                f"{name}: cannot carry {tuple(source.shape)} into {tuple(fresh.shape)}"
            )
        target = fresh.clone()
        new_ix = tuple(_along(shared[kind][0], d, n) for d, kind in enumerate(kinds))
        old_ix = tuple(_along(shared[kind][1], d, n) for d, kind in enumerate(kinds))
        target[new_ix] = source[old_ix]  # the whole tensor when nothing is indexed
        carried[name] = target
    new.load_state_dict(carried)


def _shared(old_vocab: Vocab, new_vocab: Vocab, kind: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Ids in ``new_vocab`` and in ``old_vocab`` of the entries of ``kind`` both have:
    two (n,) tensors. Every old entry must be in the new vocabulary."""
    old, new = getattr(old_vocab, kind), getattr(new_vocab, kind)
    at = {entry: i for i, entry in enumerate(old)}
    pairs = [(i, at[entry]) for i, entry in enumerate(new) if entry in at]
    if len(pairs) != len(old):
        raise ValueError(f"the grown vocabulary lost {len(old) - len(pairs)} of the old {kind}")
    return torch.tensor([i for i, _ in pairs]), torch.tensor([j for _, j in pairs])


def _along(ids: torch.Tensor, dim: int, dims: int) -> torch.Tensor:
    """``ids`` shaped to index dimension ``dim`` of ``dims`` indexed ones (broadcasting)."""
    return ids.view([-1 if d == dim else 1 for d in range(dims)])


def _types(labels: Iterable[str]) -> set[str]:
    """The entity types of some labels or tags."""
    return {schemes.parse_tag(t)[1] for t in labels} - {None}


@dataclass
class Replay:
    """Old training sentences mixed into every epoch of a continued run.

    The old sentences are partially annotated when the run has entity types their data
    does not annotate (``open_types``): ``encoded.partial`` marks them, and their ``O``
    tokens may also be any label of an open type (``encoded.relaxed``), so the loss sums
    over those readings (``CRF.partial_log_likelihood``). Without open types nothing is
    marked and replay trains as the new data does."""

    source: str
    encoded: Encoded  # the new training sentences, then the old ones, over one type table
    new: int  # how many of ``encoded``'s sentences are new (they come first)
    per_epoch: int  # old sentences drawn for each epoch
    fingerprint: str  # of the old sentences
    open_types: tuple[str, ...] = ()  # entity types the old sentences do not annotate

    @classmethod
    def of(
        cls,
        source: str,
        vocab: Vocab,
        new: Sentences,
        old: Sentences,
        fraction: float,
        *,
        annotated: Iterable[str],
    ) -> Replay:
        """Encode ``new`` and ``old`` sentences together; each epoch draws
        ``round(fraction * len(new))`` old ones (all of them at most).

        ``annotated``: the entity types the old data annotates, those of the model it
        trained (types found in its tags count too). Every other type of ``vocab`` is
        open: the old sentences' ``O`` tokens may be mentions of it."""
        from tagger.training import fingerprint

        encoded = encode(vocab, new[0] + old[0], new[1] + old[1])
        known = set(annotated) | _types(t for tags in old[1] for t in tags)
        open_types = tuple(sorted(_types(vocab.labels) - known))
        if open_types:
            encoded.partial = np.arange(len(encoded)) >= len(new[0])
            encoded.relaxed = _relaxed(vocab.labels, open_types)
        per_epoch = min(round(fraction * len(new[0])), len(old[0]))
        iob2 = [schemes.to_iob2(tags) for tags in old[1]]
        return cls(source, encoded, len(new[0]), per_epoch, fingerprint(old[0], iob2), open_types)

    def draw(self, rng: np.random.Generator) -> Encoded:
        """One epoch's training sentences: every new one and ``per_epoch`` old ones, drawn
        without replacement from ``rng`` (the run's: the seed fixes the draws, and a
        resumed run continues them)."""
        old = self.new + rng.choice(self.sentences, self.per_epoch, replace=False)
        return _select(self.encoded, np.concatenate([np.arange(self.new), np.sort(old)]))

    @property
    def sentences(self) -> int:
        """How many old sentences there are to draw from."""
        return len(self.encoded) - self.new

    def record(self) -> dict:
        """What ``metrics.json`` says of the replay."""
        return {
            "source": self.source,
            "fingerprint": self.fingerprint,
            "sentences": self.sentences,
            "per_epoch": self.per_epoch,
        }


def _select(enc: Encoded, index: np.ndarray) -> Encoded:
    """Sentences ``index`` (n,) of ``enc`` as an encoded split of their own (same type
    table)."""
    lengths = enc.lengths[index]
    offsets = np.zeros(len(index) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    # token t of the selection is token t - offsets[i] of sentence index[i] in ``enc``
    positions = np.repeat(enc.offsets[index] - offsets[:-1], lengths) + np.arange(offsets[-1])
    tags = None if enc.tag_ids is None else enc.tag_ids[positions]
    partial = None if enc.partial is None else enc.partial[index]
    return replace(
        enc, type_ids=enc.type_ids[positions], offsets=offsets, tag_ids=tags, partial=partial
    )


def _relaxed(labels: list[str], open_types: Iterable[str]) -> np.ndarray:
    """(K, K) bool over ``labels``: row k, the labels a partially annotated token tagged
    ``labels[k]`` may have. An entity label is certain (itself only); ``O`` may be ``O``
    or any label of an ``open_types`` type (the scheme's constraints still apply)."""
    relaxed = np.eye(len(labels), dtype=bool)
    open_types = set(open_types)
    outside = labels.index(schemes.OUTSIDE)
    relaxed[outside] |= [schemes.parse_tag(t)[1] in open_types for t in labels]
    return relaxed
