"""The Keras-style model summary: counts equal the parameters and the closed forms."""

from __future__ import annotations

import pytest
from conftest import tiny_config

from tagger.model import SequenceTagger
from tagger.summary import layer_rows, summary
from tagger.vocab import Vocab

VOCAB = Vocab(["<pad>", "<unk>", "a", "b"], ["<pad>", "<unk>", "a"], ["O", "B-X", "I-X"])
CLOSED_FORM = {"rnn": 1, "gru": 3, "lstm": 4}  # gates: h(h+x+2) per gate set


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("decoder", ["softmax", "crf"])
@pytest.mark.parametrize("chars", ["cnn", "lstm", "none"])
def test_totals_equal_parameters(cell, decoder, chars):
    model = SequenceTagger(tiny_config(cell=cell, decoder=decoder, char_encoder=chars).model, VOCAB)
    rows = layer_rows(model)
    assert sum(r[3] for r in rows) == sum(p.numel() for p in model.parameters())
    text = summary(model)
    assert f"Total params: {sum(p.numel() for p in model.parameters()):,}" in text
    stored = sum(t.numel() for t in model.state_dict().values())
    assert f"Values stored in model.safetensors: {stored:,}" in text
    assert ("decoder.crf" in text) == (decoder == "crf")


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_one_layer_matches_closed_form(cell):
    h = 12
    model = SequenceTagger(tiny_config(cell=cell, hidden_size=h, bidirectional=False).model, VOCAB)
    x = model.embedder.output_dim
    rnn_row = next(r for r in layer_rows(model) if r[0] == "encoder.rnn")
    assert rnn_row[3] == CLOSED_FORM[cell] * h * (h + x + 2)
    assert rnn_row[2] == f"(B, T, {h})"


def test_frozen_embeddings_are_non_trainable():
    model = SequenceTagger(tiny_config().model, VOCAB)
    model.embedder.words.weight.requires_grad_(False)
    n = model.embedder.words.weight.numel()
    assert f"Non-trainable params: {n:,}" in summary(model)


def test_crf_buffers_listed_as_not_stored():
    text = summary(SequenceTagger(tiny_config(decoder="crf").model, VOCAB))
    line = "Buffer decoder.crf.trans_penalty (3, 3): not stored, rebuilt on load"
    assert line in text
