"""The tagger network: embed (words, characters, casing) -> encode (RNN) -> decode.

Shapes: B = batch, T = longest sentence, U = distinct word types in the batch,
C = longest word in characters, K = number of labels.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import _VF, nn
from torch.nn.utils.rnn import pack_padded_sequence

from tagger.batching import CASINGS, Batch
from tagger.config import ModelConfig, TrainConfig
from tagger.crf import CRF, FORBIDDEN, sum_over_spans
from tagger.vocab import PAD_ID, UNK_ID, Vocab

RNN_CELLS = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}


class CharCNN(nn.Module):
    """Ma & Hovy (2016): character embeddings, one convolution, max over the word."""

    def __init__(self, n_chars: int, char_dim: int, filters: int, kernel: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(n_chars, char_dim, padding_idx=PAD_ID)
        self.conv = nn.Conv1d(char_dim, filters, kernel, padding=kernel // 2)
        self.output_dim = filters

    def forward(self, chars: torch.Tensor) -> torch.Tensor:
        """(U, C) char ids -> (U, filters)."""
        hidden = self.conv(self.embed(chars).transpose(1, 2))  # (U, filters, C')
        pad = (chars == PAD_ID)[:, : hidden.size(2)].unsqueeze(1)
        return hidden.masked_fill(pad, float("-inf")).amax(dim=2)


class CharLSTM(nn.Module):
    """Lample et al. (2016): a BiLSTM over characters, final states of both directions."""

    def __init__(self, n_chars: int, char_dim: int, hidden: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(n_chars, char_dim, padding_idx=PAD_ID)
        self.lstm = nn.LSTM(char_dim, hidden, batch_first=True, bidirectional=True)
        self.output_dim = 2 * hidden

    def forward(self, chars: torch.Tensor) -> torch.Tensor:
        """(U, C) char ids -> (U, 2 * hidden)."""
        lengths = (chars != PAD_ID).sum(1).clamp(min=1).cpu()
        packed = pack_padded_sequence(
            self.embed(chars), lengths, batch_first=True, enforce_sorted=False
        )
        _, (h, _) = self.lstm(packed)  # h: (2, U, hidden)
        return torch.cat([h[0], h[1]], dim=1)


class Embedder(nn.Module):
    """Word embedding (+ character features) (+ casing embedding), concatenated.

    ``char_encoder``: ``"cnn"`` (``char_hidden`` filters of width ``char_kernel``),
    ``"lstm"`` (``char_hidden`` units per direction) or ``"none"``; ``casing_dim`` 0 turns
    the casing embedding off; ``word_dropout``: probability of replacing a training word
    by UNK.
    """

    def __init__(
        self,
        n_words: int,
        n_chars: int,
        *,
        word_dim: int,
        char_encoder: str,
        char_dim: int,
        char_hidden: int,
        char_kernel: int,
        casing_dim: int,
        word_dropout: float,
    ) -> None:
        super().__init__()
        self.drops_words = word_dropout > 0
        # Per-word probability of being replaced by UNK in training: word_dropout for all,
        # more for rare words (``set_word_counts``). Not saved: prediction never drops.
        self.register_buffer("drop_prob", torch.full((n_words,), word_dropout), persistent=False)
        self.words = nn.Embedding(n_words, word_dim, padding_idx=PAD_ID)
        nn.init.uniform_(self.words.weight, -0.1, 0.1)
        self.chars: nn.Module | None = None
        if char_encoder == "cnn":
            self.chars = CharCNN(n_chars, char_dim, char_hidden, char_kernel)
        elif char_encoder == "lstm":
            self.chars = CharLSTM(n_chars, char_dim, char_hidden)
        self.casing = nn.Embedding(len(CASINGS), casing_dim) if casing_dim else None
        self.output_dim = (
            word_dim + (self.chars.output_dim if self.chars is not None else 0) + casing_dim
        )

    @classmethod
    def of(cls, config: ModelConfig, n_words: int, n_chars: int) -> Embedder:
        """The embedder ``config`` describes, for ``n_words`` words and ``n_chars`` chars."""
        return cls(
            n_words,
            n_chars,
            word_dim=config.word_dim,
            char_encoder=config.char_encoder,
            char_dim=config.char_dim,
            char_hidden=config.char_hidden,
            char_kernel=config.char_kernel,
            casing_dim=config.casing_dim,
            word_dropout=config.word_dropout,
        )

    def load_pretrained(self, vocab: Vocab, vectors: dict[str, np.ndarray], freeze: bool) -> int:
        """Copy vectors into the rows of the words that have one; returns how many."""
        rows = [(i, vectors[w]) for i, w in enumerate(vocab.words) if w in vectors]
        if rows:
            index = torch.tensor([i for i, _ in rows])
            values = torch.from_numpy(np.stack([v for _, v in rows]))
            with torch.no_grad():
                self.words.weight[index] = values.to(self.words.weight.dtype)
        self.words.weight.requires_grad_(not freeze)
        return len(rows)

    def set_word_counts(self, counts: torch.Tensor, alpha: float) -> None:
        """While training, replace a word seen ``c`` times in the training data by UNK
        with probability ``alpha / (alpha + c)``, on top of word dropout: rare words most
        often, so the UNK vector learns what unseen test words need and the model learns
        to lean on their characters (Kiperwasser & Goldberg, 2016; Lample et al., 2016
        replace singletons only). ``counts``: (n_words,); words never seen keep the rate."""
        counts = counts.to(self.drop_prob)
        replace = torch.where(counts > 0, alpha / (alpha + counts), 0.0)
        self.drop_prob.copy_(1.0 - (1.0 - self.drop_prob) * (1.0 - replace))
        self.drops_words = bool((self.drop_prob > 0).any())

    def forward(self, batch: Batch) -> torch.Tensor:
        """Batch -> (B, T, output_dim)."""
        word_ids = batch.word_ids
        if self.training and self.drops_words:
            draw = torch.rand(word_ids.shape, device=word_ids.device)
            word_ids = word_ids.masked_fill((draw < self.drop_prob[word_ids]) & batch.mask, UNK_ID)
        parts = [self.words(word_ids)]
        if self.chars is not None:
            # A lookup, not ``features[type_index]``: indexing's backward accumulates
            # in a thread-dependent order on CPU, which made runs irreproducible.
            parts.append(nn.functional.embedding(batch.type_index, self.chars(batch.char_ids)))
        if self.casing is not None:
            parts.append(self.casing(batch.casing_ids))
        return torch.cat(parts, dim=2)


def run_rnn(rnn: nn.RNNBase, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Run ``rnn`` (batch_first, any cell, layers, directions) over padded sequences.

    (B, T, input) and lengths (B,) -> (B, T, directions * hidden), zeros at padding.
    Same result as packing the batch, but each direction of each layer is its own call
    on the padded tensor, the backward one on sequences reversed within their lengths,
    so padding only ever comes after a sentence and never reaches a real position.
    Unpacked input is what lets PyTorch use its fused oneDNN LSTM on CPU: about twice
    as fast to train as the step-by-step packed implementation.
    """
    batch, steps = x.shape[:2]
    positions = torch.arange(steps, device=x.device)
    lengths = lengths.to(x.device)
    mask = positions < lengths[:, None]  # (B, T)
    # reverse[b, t]: where position t of sentence b goes when it is read backwards,
    # as a row of the (B * T, D) view of a batch.
    reverse = torch.where(mask, lengths[:, None] - 1 - positions, positions)
    reverse = (reverse + steps * torch.arange(batch, device=x.device)[:, None]).reshape(-1)
    out = x
    for layer in range(rnn.num_layers):
        if layer > 0 and rnn.dropout and rnn.training:
            out = nn.functional.dropout(out, rnn.dropout, training=True)
        directions = []
        for suffix in ("", "_reverse")[: 2 if rnn.bidirectional else 1]:
            weights = [
                getattr(rnn, f"{name}_l{layer}{suffix}")
                for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
            ]
            source = _gather_time(out, reverse) if suffix else out
            hidden = _one_direction(rnn, source, weights)
            directions.append(_gather_time(hidden, reverse) if suffix else hidden)
        out = torch.cat(directions, dim=2) if len(directions) > 1 else directions[0]
    return out * mask.unsqueeze(2)


def _gather_time(x: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """(B, T, D) -> (B, T, D): row ``rows[b * T + t]`` of x's (B * T, D) view at b, t.
    ``index_select`` copies whole rows: 4x faster than ``gather`` with an index per
    entry in fp32, 40x in bf16; its backward adds each row once (a permutation)."""
    return x.reshape(-1, x.size(2)).index_select(0, rows).view(x.shape)


def _one_direction(rnn: nn.RNNBase, x: torch.Tensor, weights: list[torch.Tensor]) -> torch.Tensor:
    """One layer, one direction, from the start of the padded batch: (B, T, hidden)."""
    h0 = x.new_zeros(1, x.size(0), rnn.hidden_size)
    args = (weights, True, 1, 0.0, rnn.training, False, True)  # biases, 1 layer, batch_first
    if rnn.mode == "LSTM":
        return _VF.lstm(x, (h0, h0), *args)[0]
    if rnn.mode == "GRU":
        return _VF.gru(x, h0, *args)[0]
    return _VF.rnn_tanh(x, h0, *args)[0]


class Encoder(nn.Module):
    """A (bi)directional, stacked RNN / LSTM / GRU over the padded batch (``run_rnn``).

    ``cell``: ``"rnn"``, ``"lstm"`` or ``"gru"``; ``dropout`` applies between stacked
    layers (so only when ``num_layers`` > 1).
    """

    def __init__(
        self,
        cell: str,
        input_dim: int,
        hidden_size: int,
        num_layers: int,
        bidirectional: bool,
        dropout: float,
    ) -> None:
        super().__init__()
        self.rnn = RNN_CELLS[cell](
            input_dim,
            hidden_size,
            num_layers=num_layers,
            bidirectional=bidirectional,
            dropout=dropout if num_layers > 1 else 0.0,
            batch_first=True,
        )
        self.output_dim = hidden_size * (2 if bidirectional else 1)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """(B, T, input_dim), lengths (B,) -> (B, T, output_dim); zeros at padding."""
        return run_rnn(self.rnn, x, lengths)


class SoftmaxDecoder(nn.Module):
    """Independent per-token decisions: cross-entropy loss, argmax decoding."""

    def loss(
        self,
        emissions: torch.Tensor,
        tags: torch.Tensor,
        mask: torch.Tensor,
        allowed: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Summed token cross-entropy per sentence, averaged over the batch (a scalar).

        emissions (B, T, K), tags and mask (B, T). With ``allowed`` (B, T, K) bool, the
        tags each token may have (partial annotation, see ``CRF.partial_log_likelihood``;
        at least one per real token), ``tags`` is not used and a token costs
        -log sum_{allowed k} p(k): the probability of its allowed tags as a whole, so
        the model is free to choose among them. One allowed tag is the cross-entropy."""
        return self.sentence_losses(emissions, tags, mask, allowed).mean()

    def sentence_losses(
        self,
        emissions: torch.Tensor,
        tags: torch.Tensor,
        mask: torch.Tensor,
        allowed: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``loss`` per sentence, (B,)."""
        if allowed is None:
            allowed = nn.functional.one_hot(tags, emissions.size(2)).bool()
        kept = emissions.masked_fill(~allowed, FORBIDDEN)  # finite: clean gradients
        nll = emissions.logsumexp(2) - kept.logsumexp(2)  # (B, T)
        return (nll * mask).sum(1)

    def token_log_probs(
        self, emissions: torch.Tensor, mask: torch.Tensor, temperature: float = 1.0
    ) -> torch.Tensor:
        """(B, T, K) log p(tag_t = k) of the scores over ``temperature``, differentiable
        (distillation); 0 at padding."""
        return (emissions / temperature).log_softmax(2) * mask.unsqueeze(2)

    def decode(self, emissions: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B, T, K) -> (B, T) label ids; 0 at padding."""
        return emissions.argmax(dim=2) * mask

    def marginals(
        self, emissions: torch.Tensor, mask: torch.Tensor, temperature: float = 1.0
    ) -> torch.Tensor:
        """(B, T, K) per-token label probabilities (of the scores divided by
        ``temperature``); 0 at padding."""
        return (emissions / temperature).softmax(dim=2) * mask.unsqueeze(2)

    def span_log_probs(
        self,
        emissions: torch.Tensor,
        mask: torch.Tensor,
        tags: torch.Tensor,
        spans: torch.Tensor,
        temperature: float = 1.0,
    ) -> torch.Tensor:
        """log p(each span's tokens have the tags ``tags`` gives them): emissions (B, T, K),
        mask and tags (B, T), spans (N, 3) rows ``(sentence, start, end)`` -> (N,).

        The tokens are independent decisions here, so a span's probability is the
        product of its tokens' probabilities of their tags (those the argmax chose, also
        where the output had to be repaired into a valid sequence). Same signature as
        ``CRF.span_log_probs``, so prediction scores entities without asking which
        decoder it has."""
        log_p = (emissions / temperature).log_softmax(2)
        chosen = log_p.gather(2, tags.unsqueeze(2)).squeeze(2)  # (B, T)
        return sum_over_spans(chosen, spans[:, 0], spans[:, 1], spans[:, 2])


class CRFDecoder(nn.Module):
    """A linear-chain CRF over the emissions; decoding respects the tag scheme."""

    def __init__(self, labels: list[str], scheme: str) -> None:
        super().__init__()
        self.crf = CRF(labels, scheme)

    def loss(
        self,
        emissions: torch.Tensor,
        tags: torch.Tensor,
        mask: torch.Tensor,
        allowed: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Negative log-likelihood per sentence, averaged over the batch (a scalar).

        emissions (B, T, K), tags and mask (B, T). With ``allowed`` (B, T, K) bool, the
        tags each token may have, ``tags`` is not used and the likelihood is that of
        every path ``allowed`` leaves (``CRF.partial_log_likelihood``): what partially
        annotated sentences train with."""
        return self.sentence_losses(emissions, tags, mask, allowed).mean()

    def sentence_losses(
        self,
        emissions: torch.Tensor,
        tags: torch.Tensor,
        mask: torch.Tensor,
        allowed: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``loss`` per sentence, (B,)."""
        if allowed is None:
            return -self.crf.log_likelihood(emissions, tags, mask)
        return -self.crf.partial_log_likelihood(emissions, allowed, mask)

    def token_log_probs(
        self, emissions: torch.Tensor, mask: torch.Tensor, temperature: float = 1.0
    ) -> torch.Tensor:
        """(B, T, K) log marginals of the scores over ``temperature``, differentiable
        (distillation); 0 at padding."""
        return self.crf.log_marginals(emissions, mask, temperature)

    def decode(self, emissions: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.crf.decode(emissions, mask)

    def marginals(
        self, emissions: torch.Tensor, mask: torch.Tensor, temperature: float = 1.0
    ) -> torch.Tensor:
        return self.crf.marginals(emissions, mask, temperature)

    def span_log_probs(
        self,
        emissions: torch.Tensor,
        mask: torch.Tensor,
        tags: torch.Tensor,
        spans: torch.Tensor,
        temperature: float = 1.0,
    ) -> torch.Tensor:
        """log p(exactly each span, with its label): see ``CRF.span_log_probs``."""
        return self.crf.span_log_probs(emissions, mask, tags, spans, temperature)


def make_decoder(decoder: str, labels: list[str], scheme: str) -> CRFDecoder | SoftmaxDecoder:
    """``decoder`` ``"crf"`` (constrained by ``scheme``) or ``"softmax"`` over ``labels``."""
    return CRFDecoder(labels, scheme) if decoder == "crf" else SoftmaxDecoder()


class Dropout(nn.Module):
    """Inverted dropout with a mask from ``torch.rand``: same result as ``nn.Dropout``,
    about 3x faster on CPU than its ``bernoulli_`` sampling for our activation sizes."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        return x * (torch.rand_like(x) >= self.p) * (1.0 / (1.0 - self.p))


# The leading dimensions of a ``SequenceTagger``'s weights that are indexed by vocabulary
# entries ("words", "chars" or "labels"); every other weight has the same shape for any
# vocabulary. Continued training (``tagger.continued``) maps these entry by entry.
VOCAB_INDEXED: dict[str, tuple[str, ...]] = {
    "embedder.words.weight": ("words",),
    "embedder.chars.embed.weight": ("chars",),
    "projection.weight": ("labels",),
    "projection.bias": ("labels",),
    "decoder.crf.start_transitions": ("labels",),
    "decoder.crf.transitions": ("labels", "labels"),
    "decoder.crf.end_transitions": ("labels",),
}


class SequenceTagger(nn.Module):
    """Embedder -> Encoder -> dropout -> linear label scores -> decoder."""

    def __init__(self, config: ModelConfig, vocab: Vocab) -> None:
        super().__init__()
        # Built in this order: the seed's random draws initialise them one after another.
        self.embedder = Embedder.of(config, len(vocab.words), len(vocab.chars))
        self.encoder = Encoder(
            config.cell,
            self.embedder.output_dim,
            config.hidden_size,
            config.num_layers,
            config.bidirectional,
            config.dropout,
        )
        self.dropout = Dropout(config.dropout)
        self.projection = nn.Linear(self.encoder.output_dim, len(vocab.labels))
        self.decoder = make_decoder(config.decoder, vocab.labels, config.scheme)

    def emissions(self, batch: Batch) -> torch.Tensor:
        """Label scores before decoding, (B, T, K)."""
        embedded = self.dropout(self.embedder(batch))
        encoded = self.dropout(self.encoder(embedded, batch.lengths))
        return self.projection(encoded).float()  # fp32 for the decoder, also under autocast

    def loss(self, batch: Batch) -> torch.Tensor:
        """The batch's mean loss per sentence; a batch with partially annotated
        sentences (``batch.allowed``) trains them with the partial-label objective."""
        return self.decoder.loss(self.emissions(batch), batch.tags, batch.mask, batch.allowed)

    def forward(self, batch: Batch) -> torch.Tensor:
        """The training loss: what DistributedDataParallel calls to sync gradients."""
        return self.loss(batch)

    def decode(self, batch: Batch) -> torch.Tensor:
        """(B, T) best label ids."""
        return self.decoder.decode(self.emissions(batch), batch.mask)


class Ensemble(nn.Module):
    """Taggers of one config and vocabulary trained from different seeds, decoded as one:
    the label scores are the members' mean, and so are the CRF's transition scores.

    Averaging scores before one Viterbi pass keeps the output a valid tag sequence, and
    the members' errors are partly independent, so the mean is right more often than
    any member (CoNLL-2003 test F1 88.2 for four members whose own scores average 87.2).
    Costs N times the encoder work at prediction time. Probabilities (tag marginals,
    entity probabilities) are those of this averaged model, the one that decodes.

    The members run one after another: their LSTMs are compute-bound on a CPU (one
    model's already run at a large matmul's rate: 145 against 150 GFLOP/s in fp32 on 2
    threads, ``benchmarks/ensemble_lstm.py``), and running them as one computation
    measured slower there (one LSTM with block-diagonal weights does 4x the FLOPs:
    0.26x the speed; stacked embeddings, a grouped char CNN and one projection: 0.83x;
    one batched matmul per time step for every member and direction, two threads: 0.39x
    in fp32, 0.47x in bf16, ``benchmarks/ensemble_lstm.py``;
    the members in two threads of one core each: no faster than in turn on two cores),
    while ``torch.func.vmap`` has no batching rule for it.
    """

    def __init__(self, config: ModelConfig, vocab: Vocab, size: int) -> None:
        super().__init__()
        self.members = nn.ModuleList(SequenceTagger(config, vocab) for _ in range(size))
        self.decoder = make_decoder(config.decoder, vocab.labels, config.scheme)

    @classmethod
    def of(cls, members: list[SequenceTagger], config: ModelConfig, vocab: Vocab) -> Ensemble:
        """An ensemble of trained members (same config and vocabulary); the CRF's
        transitions become the mean of theirs."""
        ensemble = cls(config, vocab, len(members))
        for mine, theirs in zip(ensemble.members, members):
            mine.load_state_dict(theirs.state_dict())
        crf = getattr(ensemble.decoder, "crf", None)
        if crf is not None:
            with torch.no_grad():
                for name, param in crf.named_parameters():
                    found = [m.decoder.crf.get_parameter(name) for m in members]
                    param.copy_(torch.stack(found).mean(0))
        return ensemble.eval()

    def emissions(self, batch: Batch) -> torch.Tensor:
        """The members' mean label scores, (B, T, K)."""
        return torch.stack([m.emissions(batch) for m in self.members]).mean(0)


def build_model(config: TrainConfig, vocab: Vocab) -> SequenceTagger | Ensemble:
    """The network a config describes: one tagger, or an ensemble of ``config.ensemble``."""
    model = config.model
    if model.ensemble > 1:
        return Ensemble(model, vocab, model.ensemble)
    return SequenceTagger(model, vocab)
