"""The network: every cell / direction / depth / character encoder / decoder combination."""

from __future__ import annotations

import itertools
from dataclasses import replace

import numpy as np
import pytest
import torch
from conftest import tiny_config

from tagger.batching import encode, make_batch
from tagger.config import ModelConfig, TrainConfig
from tagger.errors import TaggerError
from tagger.model import (
    Embedder,
    Encoder,
    Ensemble,
    SequenceTagger,
    SoftmaxDecoder,
    build_model,
)
from tagger.vocab import Vocab

SENTENCES = [
    ["Peter", "Blackburn", "visited", "Bonn", "."],
    ["EU", "rejects", "German", "call"],
    ["Bonn"],
]
TAGS = [["B-PER", "I-PER", "O", "B-LOC", "O"], ["B-ORG", "O", "B-MISC", "O"], ["B-LOC"]]
LABELS = ["O", "B-LOC", "I-LOC", "B-MISC", "I-MISC", "B-ORG", "I-ORG", "B-PER", "I-PER"]


def small_config(**overrides) -> ModelConfig:
    """conftest's tiny config, smaller still, with sizes that differ from each other
    (so a shape mix-up cannot go unnoticed): the part the network is built from."""
    sizes = dict(hidden_size=8, word_dim=6, char_dim=4, char_hidden=5, casing_dim=3)
    return tiny_config(**{**sizes, **overrides}).validate().model


@pytest.fixture(scope="module")
def vocab():
    return Vocab.build(SENTENCES, LABELS)


@pytest.fixture(scope="module")
def batch(vocab):
    return make_batch(encode(vocab, SENTENCES, TAGS), np.arange(len(SENTENCES)))


COMBOS = list(
    itertools.product(
        ["rnn", "lstm", "gru"], [True, False], [1, 2], ["cnn", "lstm", "none"], ["softmax", "crf"]
    )
)


@pytest.mark.parametrize(("cell", "bidirectional", "layers", "chars", "decoder"), COMBOS)
def test_every_architecture(vocab, batch, cell, bidirectional, layers, chars, decoder):
    torch.manual_seed(0)
    config = small_config(
        cell=cell,
        bidirectional=bidirectional,
        num_layers=layers,
        char_encoder=chars,
        decoder=decoder,
    )
    model = SequenceTagger(config, vocab)
    B, T, K = 3, 5, len(LABELS)
    emissions = model.emissions(batch)
    assert emissions.shape == (B, T, K)
    assert torch.isfinite(emissions).all()
    loss = model.loss(batch)
    assert loss.dim() == 0 and torch.isfinite(loss) and loss > 0
    loss.backward()
    assert all(p.grad is None or torch.isfinite(p.grad).all() for p in model.parameters())
    assert model.embedder.words.weight.grad is not None
    model.eval()
    best = model.decode(batch)
    assert best.shape == (B, T) and best.dtype == torch.long
    assert ((best >= 0) & (best < K)).all()
    assert (best[~batch.mask] == 0).all()
    assert model.encoder.output_dim == 8 * (2 if bidirectional else 1)


@pytest.mark.parametrize("chars", ["cnn", "lstm", "none"])
@pytest.mark.parametrize("decoder", ["softmax", "crf"])
def test_padding_does_not_leak(vocab, chars, decoder):
    """A sentence gets the same scores and loss alone as in a padded batch (eval mode)."""
    torch.manual_seed(0)
    model = SequenceTagger(small_config(char_encoder=chars, decoder=decoder), vocab).eval()
    enc = encode(vocab, SENTENCES, TAGS)
    full = make_batch(enc, np.arange(3))
    with torch.no_grad():
        emissions = model.emissions(full)
        losses = []
        for i, n in enumerate(enc.lengths):
            alone = make_batch(enc, np.array([i]))
            assert torch.allclose(model.emissions(alone)[0], emissions[i, :n], atol=1e-5)
            losses.append(model.loss(alone))
        assert torch.allclose(model.loss(full), torch.stack(losses).mean(), atol=1e-4)


@pytest.mark.parametrize(("cell", "gates"), [("rnn", 1), ("gru", 3), ("lstm", 4)])
@pytest.mark.parametrize("chars", ["cnn", "none"])
def test_encoder_parameter_count(vocab, cell, gates, chars):
    h = 8
    model = SequenceTagger(
        small_config(
            cell=cell, bidirectional=False, num_layers=1, hidden_size=h, char_encoder=chars
        ),
        vocab,
    )
    x = model.embedder.output_dim
    assert x == 6 + 3 + (5 if chars == "cnn" else 0)
    assert sum(p.numel() for p in model.encoder.parameters()) == gates * h * (h + x + 2)
    bi = SequenceTagger(
        small_config(cell=cell, bidirectional=True, hidden_size=h, char_encoder=chars), vocab
    )
    assert sum(p.numel() for p in bi.encoder.parameters()) == 2 * gates * h * (h + x + 2)


def test_embedder_output_dims(vocab):
    for chars, extra in (("cnn", 5), ("lstm", 10), ("none", 0)):
        emb = Embedder.of(small_config(char_encoder=chars), len(vocab.words), len(vocab.chars))
        assert emb.output_dim == 6 + 3 + extra
    emb = Embedder.of(
        small_config(char_encoder="none", casing_dim=0), len(vocab.words), len(vocab.chars)
    )
    assert emb.casing is None and emb.output_dim == 6


def test_model_config_is_the_architecture_only():
    config = tiny_config(lr=0.1, output="elsewhere", ensemble=2, word_dim=7)
    model = config.model
    assert isinstance(model, ModelConfig)
    assert model.word_dim == 7 and model.ensemble == 2
    assert not hasattr(model, "lr") and not hasattr(model, "output")
    with pytest.raises(AttributeError):  # frozen
        model.word_dim = 8  # type: ignore[misc]
    assert "model" not in config.to_dict()  # config.json stays flat
    assert TrainConfig.from_dict(config.to_dict()).model == model


def test_build_model_takes_the_train_config(vocab):
    assert isinstance(build_model(tiny_config(), vocab), SequenceTagger)
    ensemble = build_model(tiny_config(ensemble=3), vocab)
    assert isinstance(ensemble, Ensemble) and len(ensemble.members) == 3


def test_encoder_takes_its_own_arguments():
    encoder = Encoder("gru", 5, 4, num_layers=2, bidirectional=False, dropout=0.3)
    assert encoder.rnn.mode == "GRU" and encoder.output_dim == 4
    assert encoder.rnn.dropout == 0.3 and encoder.rnn.num_layers == 2
    assert Encoder("lstm", 5, 4, 1, True, 0.3).rnn.dropout == 0.0  # one layer: none between


def test_word_dropout_only_in_training(vocab, batch):
    torch.manual_seed(0)
    model = SequenceTagger(
        small_config(word_dropout=0.99, char_encoder="none", casing_dim=0), vocab
    )
    emb = model.embedder
    unk = emb.words.weight[1]
    out = emb(batch)  # training mode: nearly every word becomes UNK
    assert torch.allclose(out[batch.mask], unk.expand(int(batch.mask.sum()), -1))
    emb.eval()
    assert torch.equal(emb(batch), emb.words(batch.word_ids))


def test_rare_words_become_unk_at_their_own_rate():
    """unk_replace a: a word seen c times goes to UNK at about a/(a+c), on top of word
    dropout; words never seen in training only at word_dropout."""
    words = ["<pad>", "<unk>", "rare", "common", "unseen"]
    vocab = Vocab(words, ["<pad>", "<unk>", "r", "c"], ["O"])
    enc = encode(vocab, [["rare", "common", "unseen"] * 2000])
    batch = make_batch(enc, np.arange(1))
    model = SequenceTagger(small_config(word_dropout=0.1, char_encoder="none"), vocab)
    model.embedder.set_word_counts(torch.tensor([0, 0, 1, 99, 0]), 1.0)
    torch.manual_seed(0)
    seen = []
    model.embedder.words.register_forward_hook(lambda m, args, out: seen.append(args[0]))
    model.embedder(batch)
    ids = seen[0][0]
    rate = [(ids[i::3] == 1).float().mean().item() for i in range(3)]
    assert rate[0] == pytest.approx(1 - 0.9 * (1 - 1 / 2), abs=0.03)  # seen once
    assert rate[1] == pytest.approx(1 - 0.9 * (1 - 1 / 100), abs=0.03)  # seen 99 times
    assert rate[2] == pytest.approx(0.1, abs=0.03)  # not in the training data
    model.embedder.eval()
    model.embedder(batch)
    assert not (seen[1] == 1).any()
    assert "embedder.drop_prob" not in model.state_dict()  # training-only, never saved


def test_crf_decoder_uses_the_scheme(vocab, batch):
    model = SequenceTagger(
        small_config(decoder="crf", scheme="BIOES"),
        Vocab(vocab.words, vocab.chars, ["O", "B-PER", "I-PER", "E-PER", "S-PER"]),
    )
    penalty = model.decoder.crf.end_penalty
    assert penalty.tolist() == [0.0, -1e4, -1e4, 0.0, 0.0]


def test_even_char_kernel_is_a_config_error():
    with pytest.raises(TaggerError, match="char_kernel must be odd, not 2"):
        small_config(char_kernel=2)


@pytest.mark.parametrize("cell", ["LSTM", "GRU", "RNN"])
@pytest.mark.parametrize("layers,bidirectional", [(1, True), (2, True), (2, False)])
def test_padded_rnn_equals_packed_sequences(cell, layers, bidirectional):
    """run_rnn on the padded batch gives what PyTorch's packed sequences give."""
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

    from tagger.model import run_rnn

    torch.manual_seed(0)
    rnn = getattr(torch.nn, cell)(12, 7, layers, bidirectional=bidirectional, batch_first=True)
    rnn = rnn.double().eval()
    x = torch.randn(5, 9, 12, dtype=torch.double, requires_grad=True)
    lengths = torch.tensor([9, 3, 1, 7, 9])
    packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
    expected, _ = pad_packed_sequence(rnn(packed)[0], batch_first=True, total_length=9)
    got = run_rnn(rnn, x, lengths)
    assert torch.allclose(got, expected, atol=1e-12, rtol=0)
    grad_expected = torch.autograd.grad(expected.square().sum(), x)[0]
    grad_got = torch.autograd.grad(got.square().sum(), x)[0]
    assert torch.allclose(grad_got, grad_expected, atol=1e-12, rtol=0)
    assert (grad_got[1, 3:] == 0).all()  # padding never reaches a real position


def test_softmax_partial_loss_sums_the_allowed_tags():
    """-log sum_{allowed} p(tag) per token, summed per sentence and averaged; one
    allowed tag is the cross-entropy; gradients finite, none at padding."""
    gen = torch.Generator().manual_seed(0)
    emissions = 3 * torch.randn(3, 4, 5, generator=gen, dtype=torch.float64)
    emissions.requires_grad_(True)
    mask = torch.arange(4)[None, :] < torch.tensor([4, 2, 1])[:, None]
    tags = torch.randint(5, (3, 4), generator=gen) * mask
    exact = torch.nn.functional.one_hot(tags, 5).bool() & mask[..., None]
    decoder = SoftmaxDecoder()
    full = decoder.loss(emissions, tags, mask)
    assert torch.allclose(decoder.loss(emissions, tags, mask, exact), full, rtol=0, atol=1e-10)
    allowed = exact | (torch.rand(3, 4, 5, generator=gen) < 0.4)
    loss = decoder.loss(emissions, tags, mask, allowed)
    probs = emissions.softmax(2)
    want = -sum(
        torch.log(probs[b, t][allowed[b, t]].sum())
        for b in range(3)
        for t in range(4)
        if mask[b, t]
    )
    assert torch.allclose(loss, want / 3, atol=1e-10)
    assert loss < full
    loss.backward()
    assert torch.isfinite(emissions.grad).all() and (emissions.grad[~mask] == 0).all()


def test_softmax_span_probability_is_the_product_of_its_token_probabilities():
    gen = torch.Generator().manual_seed(1)
    emissions = 3 * torch.randn(2, 4, 5, generator=gen, dtype=torch.float64)
    mask = torch.arange(4)[None, :] < torch.tensor([4, 2])[:, None]
    tags = torch.randint(5, (2, 4), generator=gen) * mask
    spans = torch.tensor([[0, 0, 1], [0, 1, 4], [1, 0, 2]])
    got = SoftmaxDecoder().span_log_probs(emissions, mask, tags, spans).exp()
    probs = emissions.softmax(2)
    want = [
        torch.prod(torch.stack([probs[b, t, tags[b, t]] for t in range(s, e)]))
        for b, s, e in spans.tolist()
    ]
    assert torch.allclose(got, torch.stack(want), rtol=1e-12, atol=0)
    assert SoftmaxDecoder().span_log_probs(emissions, mask, tags, spans[:0]).shape == (0,)


@pytest.mark.parametrize("decoder", ["softmax", "crf"])
def test_model_loss_takes_the_batch_allowed_tags(vocab, batch, decoder):
    """``batch.allowed`` switches the loss to the partial-label one: the same as the
    ordinary loss when it allows only the tags, lower when O may also be MISC."""
    torch.manual_seed(0)
    # IOB2: the batch's tags are (in BIOES they would be no valid path)
    model = SequenceTagger(small_config(decoder=decoder, scheme="IOB2"), vocab).eval()
    k = len(vocab.labels)
    exact = torch.nn.functional.one_hot(batch.tags, k).bool() & batch.mask[..., None]
    misc = torch.tensor([t.endswith("-MISC") for t in vocab.labels])
    relaxed = exact | ((batch.tags == 0) & batch.mask)[..., None] & misc
    with torch.no_grad():
        full = model.loss(batch)
        assert torch.allclose(model.loss(replace(batch, allowed=exact)), full, atol=1e-5)
        assert model.loss(replace(batch, allowed=relaxed)) < full - 1e-3
