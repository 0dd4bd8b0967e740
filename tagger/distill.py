"""Distillation (``tagger train --teacher MODEL``): one model learns to give the label
distributions of a teacher, typically an ensemble, so it keeps most of the teacher's
accuracy at a single model's speed.

The teacher's per-token distributions are its CRF marginals (an ensemble's: those of
the averaged CRF it decodes with) at ``distill_temperature``, computed once when the run
starts for the training sentences and for raw text given with ``--unlabeled`` (tokenized
and split into sentences as ``tagger predict`` does). The student's loss per sentence is

    (1 - w) * NLL(gold tags) + w * tau^2 * sum_t KL(p_teacher,t || p_student,t)

with ``w = distill_weight`` and ``tau = distill_temperature`` (Hinton et al. 2015; the
student's marginals at tau come from a differentiable forward-backward pass,
``CRF.log_marginals``). Unlabeled sentences have no gold term.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch
from torch import nn

from tagger import schemes
from tagger.batching import Batch, Encoded, bucket_indices, encode, make_batch
from tagger.errors import TaggerError
from tagger.io import WEIGHTS
from tagger.vocab import Vocab

TEXT_CHUNK = 1000  # unlabeled lines tokenized together


class Teacher:
    """A trained model folder whose label distributions a student learns."""

    def __init__(self, path: str | Path, labels: list[str], device: torch.device) -> None:
        from tagger.predict import Tagger

        self.path = Path(path)
        self.tagger = Tagger.load(path, device=str(device))
        theirs, ours = self.tagger.vocab.labels, labels
        if sorted(theirs) != sorted(ours):
            raise TaggerError(
                f"{path}: the teacher's labels ({', '.join(theirs)}) are not the student's "
                f"({', '.join(ours)}); train the student with the teacher's scheme and data"
            )
        self.order = [theirs.index(label) for label in ours]  # student label -> teacher's
        self.weights_sha256 = hashlib.sha256((self.path / WEIGHTS).read_bytes()).hexdigest()

    def distributions(
        self, tokens: list[list[str]], temperature: float, batch_size: int = 256
    ) -> np.ndarray:
        """(n_tokens, K) float32: each token's label distribution at ``temperature``, in
        the student's label order, the sentences' tokens one after another."""
        model, enc = self.tagger.model, encode(self.tagger.vocab, tokens)
        out = np.zeros((int(enc.offsets[-1]), len(self.order)), dtype=np.float32)
        model.eval()
        with torch.inference_mode():
            for chunk in bucket_indices(enc.lengths, batch_size):
                batch = make_batch(enc, chunk).to(self.tagger.device)
                emissions = model.emissions(batch)
                marg = model.decoder.marginals(emissions, batch.mask, temperature)
                marg = marg[:, :, self.order].float().cpu().numpy()
                for row, sent in enumerate(batch.index):
                    start, stop = enc.offsets[sent], enc.offsets[sent + 1]
                    out[start:stop] = marg[row, : stop - start]
        return out


def read_unlabeled(
    path: str | Path, lang: str, encoding: str, held_out: set[tuple[str, ...]]
) -> tuple[list[list[str]], int]:
    """The sentences of a raw text file (one or more paragraphs per line), tokenized
    as ``tagger predict`` tokenizes, less any sentence that is also in dev or test
    (``held_out``): ``(token lists, how many were left out)``."""
    from tagger.predict import doc_sentences, read_lines
    from tagger.spans import pipeline

    nlp = pipeline(lang)
    sentences: list[list[str]] = []
    left_out = 0
    lines = [line for line in read_lines(path, encoding) if line.strip()]
    for start in range(0, len(lines), TEXT_CHUNK):
        found, _ = doc_sentences(list(nlp.pipe(lines[start : start + TEXT_CHUNK])))
        for sentence in found:
            tokens = [t.text for t in sentence]
            if tuple(tokens) in held_out:
                left_out += 1
            else:
                sentences.append(tokens)
    if not sentences:
        raise TaggerError(f"{path}: no sentences to distil on (empty, or only dev/test text)")
    return sentences, left_out


def distillation_split(
    teacher: Teacher,
    vocab: Vocab,
    train_tokens: list[list[str]],
    train_tags: list[list[str]],
    unlabeled: list[list[str]],
    temperature: float,
) -> Encoded:
    """The training split of a distilling run: the training sentences (with their tags
    in the run's scheme) and then the unlabeled ones, with the teacher's distributions."""
    tokens = [list(t) for t in train_tokens] + unlabeled
    tags = list(train_tags) + [[schemes.OUTSIDE] * len(t) for t in unlabeled]
    enc = encode(vocab, tokens, tags)
    enc.soft = teacher.distributions(tokens, temperature)
    enc.unlabeled = np.arange(len(tokens)) >= len(train_tokens)
    return enc


class Distilling(nn.Module):
    """The student's training loss with a teacher (module docstring): wraps the model so
    that DistributedDataParallel sees one forward pass."""

    def __init__(self, model: nn.Module, weight: float, temperature: float) -> None:
        super().__init__()
        self.model, self.weight, self.temperature = model, weight, temperature

    def forward(self, batch: Batch) -> torch.Tensor:
        """Mean loss per sentence of a batch that carries ``soft`` and ``labeled``."""
        emissions = self.model.emissions(batch)
        decoder, tau = self.model.decoder, self.temperature
        gold = decoder.sentence_losses(emissions, batch.tags, batch.mask, batch.allowed)
        log_q = decoder.token_log_probs(emissions, batch.mask, tau)
        p = batch.soft
        kl = torch.where(p > 0, p * (p.clamp(min=1e-30).log() - log_q), 0.0).sum((1, 2))
        loss = (1 - self.weight) * gold * batch.labeled + self.weight * tau**2 * kl
        return loss.mean()
