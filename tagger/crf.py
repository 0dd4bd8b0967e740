"""Linear-chain CRF with scheme constraints: log-likelihood, Viterbi, marginals.

Shapes: ``emissions`` (batch, seq_len, num_tags), floating point; ``mask`` (batch,
seq_len), bool; ``tags`` (batch, seq_len), int64 label ids in ``[0, num_tags)`` (padding
too: 0 will do); ``allowed`` (batch, seq_len, num_tags), bool, the tags each token may
have under partial annotation (at least one per real token; padding rows are ignored).
Batch first; seq_len is at least 1, every sequence has at least one token
(``mask[:, 0]`` all true) and its mask is a prefix of ones. The public methods check all
of this (like pytorch-crf's ``_validate``) and raise ``ValueError`` naming the broken
precondition: a caller's bug, never bad user data.
All loops run over time steps only; each step is one batched tensor operation.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from tagger import schemes

# Added to forbidden transitions: large enough that no path through one can win or
# carry probability mass, finite so gradients stay clean.
FORBIDDEN = -1e4


def constraint_masks(labels: Sequence[str], scheme: str) -> tuple[torch.Tensor, ...]:
    """Boolean ``(start (K,), transitions (K, K) [from, to], end (K,))`` of allowed moves."""
    k = len(labels)
    start = torch.tensor([schemes.allowed_transition(None, t, scheme) for t in labels])
    trans = torch.tensor(
        [[schemes.allowed_transition(a, b, scheme) for b in labels] for a in labels]
    ).reshape(k, k)
    end = torch.tensor([schemes.allowed_end(t, scheme) for t in labels])
    return start, trans, end


class CRF(nn.Module):
    """CRF over ``num_tags`` labels; ``labels``/``scheme`` forbid invalid transitions."""

    def __init__(self, labels: Sequence[str], scheme: str = "IOB2") -> None:
        super().__init__()
        k = len(labels)
        self.num_tags = k
        self.start_transitions = nn.Parameter(torch.zeros(k))
        self.transitions = nn.Parameter(torch.zeros(k, k))
        self.end_transitions = nn.Parameter(torch.zeros(k))
        start, trans, end = constraint_masks(labels, scheme)
        penalty = lambda allowed: torch.where(allowed, 0.0, FORBIDDEN)  # noqa: E731
        # Derived from the labels, so not saved with the weights.
        self.register_buffer("start_penalty", penalty(start), persistent=False)
        self.register_buffer("trans_penalty", penalty(trans), persistent=False)
        self.register_buffer("end_penalty", penalty(end), persistent=False)

    def _scores(self, hard: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Start, transition and end scores with the constraints applied: a finite
        penalty for the likelihood (clean gradients), ``-inf`` for decoding (so no
        emission score, however large, can buy a forbidden move)."""
        if hard:
            return (
                self.start_transitions.masked_fill(self.start_penalty < 0, float("-inf")),
                self.transitions.masked_fill(self.trans_penalty < 0, float("-inf")),
                self.end_transitions.masked_fill(self.end_penalty < 0, float("-inf")),
            )
        return (
            self.start_transitions + self.start_penalty,
            self.transitions + self.trans_penalty,
            self.end_transitions + self.end_penalty,
        )

    def _validate(
        self,
        emissions: torch.Tensor,
        mask: torch.Tensor,
        tags: torch.Tensor | None = None,
        allowed: torch.Tensor | None = None,
    ) -> None:
        """Raise ``ValueError`` unless the inputs meet the preconditions in the module
        docstring. Shapes and dtypes cost nothing; the values are checked with a few
        batched tensor operations and read back together (one device sync)."""
        if emissions.dim() != 3 or emissions.size(2) != self.num_tags:
            raise ValueError(
                f"CRF: emissions must have shape (batch, seq_len, num_tags={self.num_tags}), "
                f"not {tuple(emissions.shape)}"
            )
        if not emissions.is_floating_point():
            raise ValueError(f"CRF: emissions must be floating point, not {emissions.dtype}")
        if emissions.size(1) < 1:
            raise ValueError("CRF: every sequence needs at least one token, but seq_len is 0")
        if mask.shape != emissions.shape[:2]:
            raise ValueError(
                f"CRF: mask must have shape (batch, seq_len) = {tuple(emissions.shape[:2])} "
                f"like the emissions, not {tuple(mask.shape)}"
            )
        if mask.dtype != torch.bool:
            raise ValueError(f"CRF: mask must be a bool tensor, not {mask.dtype}")
        if tags is not None:
            if tags.shape != mask.shape:
                raise ValueError(
                    f"CRF: tags must have shape (batch, seq_len) = {tuple(mask.shape)} "
                    f"like the mask, not {tuple(tags.shape)}"
                )
            if tags.dtype != torch.long:
                raise ValueError(f"CRF: tags must be int64 (torch.long), not {tags.dtype}")
        if allowed is not None:
            if allowed.shape != emissions.shape:
                raise ValueError(
                    f"CRF: allowed must have shape (batch, seq_len, num_tags) = "
                    f"{tuple(emissions.shape)} like the emissions, not {tuple(allowed.shape)}"
                )
            if allowed.dtype != torch.bool:
                raise ValueError(f"CRF: allowed must be a bool tensor, not {allowed.dtype}")
        checks = {
            "first": mask[:, 0].all(),
            "prefix": ~(mask[:, 1:] & ~mask[:, :-1]).any(),
        }
        if tags is not None:
            checks["in_range"] = ((tags >= 0) & (tags < self.num_tags)).all()
        if allowed is not None:
            checks["some_allowed"] = (allowed.any(2) | ~mask).all()
        passed = dict(zip(checks, torch.stack(list(checks.values())).tolist()))
        if not passed["first"]:
            empty = (~mask[:, 0]).nonzero()[0, 0].item()
            raise ValueError(
                "CRF: every sequence needs at least one token (mask[:, 0] all true); "
                f"sequence {empty} has none"
            )
        if not passed["prefix"]:
            row = (mask[:, 1:] & ~mask[:, :-1]).any(1).nonzero()[0, 0].item()
            raise ValueError(
                "CRF: each sequence's mask must be a prefix of ones (no true after a false); "
                f"sequence {row}'s is not"
            )
        if not passed.get("in_range", True):
            bad = tags[(tags < 0) | (tags >= self.num_tags)][0].item()
            raise ValueError(
                f"CRF: tags must be label ids in [0, num_tags={self.num_tags}) (padding too), "
                f"not {bad}"
            )
        if not passed.get("some_allowed", True):
            row, pos = (~allowed.any(2) & mask).nonzero()[0].tolist()
            raise ValueError(
                "CRF: allowed must leave every token at least one tag; "
                f"token {pos} of sequence {row} has none"
            )

    def log_likelihood(
        self, emissions: torch.Tensor, tags: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor:
        """Log p(tags | emissions) per sequence: emissions (batch, seq_len, num_tags),
        tags and mask (batch, seq_len) -> (batch,)."""
        self._validate(emissions, mask, tags)
        return self._path_score(emissions, tags, mask) - self._log_partition(emissions, mask)

    def partial_log_likelihood(
        self, emissions: torch.Tensor, allowed: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor:
        """Log p(some tag path the partial labels allow | emissions) per sequence:
        emissions and allowed (batch, seq_len, num_tags), mask (batch, seq_len) ->
        (batch,).

        For partially annotated sentences (Tsuboi et al., 2008, "Training conditional
        random fields using incomplete annotations"): where a token's tag is unknown,
        the numerator sums over every valid path through the tags ``allowed`` leaves it,
        log sum_{allowed paths} exp(score) - log Z, instead of fixing one path. So
        annotation that cannot tell, e.g., "not annotated" from ``O`` teaches nothing
        about which of its allowed tags is right, and nothing wrong. With exactly one
        tag allowed per token this is ``log_likelihood`` of those tags (up to rounding).

        The numerator is the forward algorithm over the emissions with every disallowed
        tag's score replaced by ``FORBIDDEN``: like the forbidden transitions, finite,
        so those paths carry no probability yet the gradients stay clean (and the
        disallowed scores get none from the numerator). The tags allowed must leave at
        least one path the scheme allows (the annotated one does); else the numerator
        is only as large as the penalty lets it be and the loss is huge.
        """
        self._validate(emissions, mask, allowed=allowed)
        constrained = emissions.masked_fill(~allowed, FORBIDDEN)
        return self._log_partition(constrained, mask) - self._log_partition(emissions, mask)

    def _path_score(self, emissions, tags, mask) -> torch.Tensor:
        start, trans, end = self._scores()
        maskf = mask.to(emissions.dtype)
        emit = emissions.gather(2, tags.unsqueeze(2)).squeeze(2)  # (B, T)
        step = trans[tags[:, :-1], tags[:, 1:]]  # (B, T-1)
        last = tags.gather(1, (mask.sum(1) - 1).unsqueeze(1)).squeeze(1)  # (B,)
        return start[tags[:, 0]] + (emit * maskf).sum(1) + (step * maskf[:, 1:]).sum(1) + end[last]

    def _alphas(self, emissions, mask) -> list[torch.Tensor]:
        """Forward variables per step, each (B, K); padding steps carry the last value."""
        start, trans, _ = self._scores()
        alpha = start + emissions[:, 0]
        alphas = [alpha]
        for t in range(1, emissions.size(1)):
            nxt = torch.logsumexp(alpha.unsqueeze(2) + trans, dim=1) + emissions[:, t]
            alpha = torch.where(mask[:, t, None], nxt, alpha)
            alphas.append(alpha)
        return alphas

    def log_partition(self, emissions: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """log Z per sequence by the forward algorithm in log space: emissions (batch,
        seq_len, num_tags) and mask (batch, seq_len) -> (batch,)."""
        self._validate(emissions, mask)
        return self._log_partition(emissions, mask)

    def _log_partition(self, emissions: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        _, _, end = self._scores()
        return torch.logsumexp(self._alphas(emissions, mask)[-1] + end, dim=1)

    def marginals(self, emissions: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """p(tag_t = k | emissions): emissions (batch, seq_len, num_tags) and mask (batch,
        seq_len) -> (batch, seq_len, num_tags); 0 at padding."""
        self._validate(emissions, mask)
        _, trans, end = self._scores()
        alphas = self._alphas(emissions, mask)
        log_z = torch.logsumexp(alphas[-1] + end, dim=1)
        beta = end.expand_as(alphas[0])
        betas = [beta]
        for t in range(emissions.size(1) - 2, -1, -1):
            nxt = torch.logsumexp(trans + (emissions[:, t + 1] + beta).unsqueeze(1), dim=2)
            beta = torch.where(mask[:, t + 1, None], nxt, end.expand_as(nxt))
            betas.append(beta)
        betas.reverse()
        log_marg = torch.stack(alphas, 1) + torch.stack(betas, 1) - log_z[:, None, None]
        return log_marg.exp() * mask.unsqueeze(2)

    def decode(self, emissions: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Best tag sequence per sentence (Viterbi): emissions (batch, seq_len, num_tags)
        and mask (batch, seq_len) -> label ids (batch, seq_len), int64; 0 at padding."""
        self._validate(emissions, mask)
        start, trans, end = self._scores(hard=True)
        batch, seq_len, k = emissions.shape
        score = start + emissions[:, 0]
        identity = torch.arange(k, device=emissions.device).expand(batch, k)
        history = []
        for t in range(1, seq_len):
            best, back = (score.unsqueeze(2) + trans).max(dim=1)
            keep = mask[:, t, None]
            score = torch.where(keep, best + emissions[:, t], score)
            # Past a sentence's end the back-pointer is the identity, so the best last
            # tag is carried back unchanged to the sentence's real last position.
            history.append(torch.where(keep, back, identity))
        tag = (score + end).argmax(dim=1)
        path = [tag]
        for back in reversed(history):
            tag = back.gather(1, tag.unsqueeze(1)).squeeze(1)
            path.append(tag)
        path.reverse()
        return torch.stack(path, 1) * mask
