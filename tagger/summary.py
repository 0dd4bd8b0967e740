"""A Keras-style layer table: each layer's output shape and parameter count.

Shapes are symbolic: B = sentences in a batch, T = tokens in the longest one,
U = distinct word types in the batch, C = characters in the longest word.
"""

from __future__ import annotations

import re

from torch import nn

from tagger.crf import CRF
from tagger.model import CharCNN, CharLSTM, Ensemble, SequenceTagger


def _rnn_width(rnn: nn.RNNBase) -> int:
    return rnn.hidden_size * (2 if rnn.bidirectional else 1)


def layer_rows(model: SequenceTagger | Ensemble) -> list[tuple[str, str, str, int]]:
    """``(name, layer type, output shape, parameters)`` for every layer that has weights;
    an ensemble's members share one row per layer (``members.*``, N times the count)."""
    if isinstance(model, Ensemble):
        n = len(model.members)
        rows = [
            (f"members.*.{name}", f"{kind}, {n} members", shape, count * n)
            for name, kind, shape, count in layer_rows(model.members[0])
        ]
        return rows + _decoder_rows(model)
    emb = model.embedder
    rows = [("embedder.words", "Embedding", f"(B, T, {emb.words.embedding_dim})", emb.words)]
    if emb.chars is not None:
        chars = emb.chars
        rows.append(
            (
                "embedder.chars.embed",
                "Embedding",
                f"(U, C, {chars.embed.embedding_dim})",
                chars.embed,
            )
        )
        if isinstance(chars, CharCNN):
            rows.append(
                (
                    "embedder.chars.conv",
                    "Conv1d, max over C",
                    f"(U, {chars.output_dim})",
                    chars.conv,
                )
            )
        elif isinstance(chars, CharLSTM):
            rows.append(
                (
                    "embedder.chars.lstm",
                    "BiLSTM, last states",
                    f"(U, {chars.output_dim})",
                    chars.lstm,
                )
            )
    if emb.casing is not None:
        rows.append(
            ("embedder.casing", "Embedding", f"(B, T, {emb.casing.embedding_dim})", emb.casing)
        )
    rnn = model.encoder.rnn
    kind = f"{'Bi' if rnn.bidirectional else ''}{type(rnn).__name__} x{rnn.num_layers}"
    rows.append(("encoder.rnn", kind, f"(B, T, {_rnn_width(rnn)})", rnn))
    k = model.projection.out_features
    rows.append(("projection", "Linear", f"(B, T, {k})", model.projection))
    counted = [(n, t, shape, sum(p.numel() for p in m.parameters())) for n, t, shape, m in rows]
    return counted + _decoder_rows(model)


def _decoder_rows(model: SequenceTagger | Ensemble) -> list[tuple[str, str, str, int]]:
    crf = getattr(model.decoder, "crf", None)
    if not isinstance(crf, CRF):
        return []
    kind = "CRF (Viterbi)" if isinstance(model, SequenceTagger) else "CRF, mean of members'"
    return [("decoder.crf", kind, "(B, T)", sum(p.numel() for p in crf.parameters()))]


def summary(model: SequenceTagger | Ensemble) -> str:
    """The layer table, totals, and what ``model.safetensors`` stores."""
    rows = layer_rows(model)
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    stored = sum(t.numel() for t in model.state_dict().values())
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    head = ("Layer", "Type", "Output shape", "Param #")
    widths = [max(w, len(h)) for w, h in zip(widths, head)]
    line = "-" * (sum(widths) + 6 + 12)
    out = [line, "  ".join(h.ljust(w) for h, w in zip(head[:3], widths)) + f"  {head[3]:>12}", line]
    for name, kind, shape, n in rows:
        out.append(
            f"{name.ljust(widths[0])}  {kind.ljust(widths[1])}  {shape.ljust(widths[2])}  {n:>12,}"
        )
    out += [
        line,
        f"Total params: {total:,}",
        f"Trainable params: {trainable:,}",
        f"Non-trainable params: {total - trainable:,}",
        f"Values stored in model.safetensors: {stored:,}",
    ]
    state = model.state_dict()
    buffers = {}  # an ensemble's members have the same buffers: one line each
    for name, buf in model.named_buffers():
        where = "stored" if name in state else "not stored, rebuilt on load"
        buffers[re.sub(r"^members\.\d+\.", "members.*.", name)] = (tuple(buf.shape), where)
    out += [f"Buffer {name} {shape}: {where}" for name, (shape, where) in buffers.items()]
    out.append("Shapes: B sentences, T tokens, U distinct words in the batch, C characters.")
    return "\n".join(out)
