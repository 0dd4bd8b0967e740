"""Linear-chain CRF with scheme constraints: log-likelihood, Viterbi, marginals, span
probabilities.

Shapes: ``emissions`` (batch, seq_len, num_tags), floating point; ``mask`` (batch,
seq_len), bool; ``tags`` (batch, seq_len), int64 label ids in ``[0, num_tags)`` (padding
too: 0 will do); ``allowed`` (batch, seq_len, num_tags), bool, the tags each token may
have under partial annotation (at least one per real token; padding rows are ignored);
``spans`` (num_spans, 3), int64 rows ``(sentence, start, end)``, token offsets with
``start < end <=`` the sentence's length (end exclusive).
Batch first; seq_len is at least 1, every sequence has at least one token
(``mask[:, 0]`` all true) and its mask is a prefix of ones. The public methods check all
of this (like pytorch-crf's ``_validate``) and raise ``ValueError`` naming the broken
precondition: a caller's bug, never bad user data.
All loops run over time steps only; each step is one batched tensor operation.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from tagger import schemes

# Added to forbidden transitions: large enough that no path through one can win or
# carry probability mass, finite so gradients stay clean.
FORBIDDEN = -1e4
TINY = torch.finfo(torch.float64).tiny  # log sums of exponentials never take log 0


def constraint_masks(labels: Sequence[str], scheme: str) -> tuple[torch.Tensor, ...]:
    """Boolean ``(start (K,), transitions (K, K) [from, to], end (K,))`` of allowed moves."""
    k = len(labels)
    start = torch.tensor([schemes.allowed_transition(None, t, scheme) for t in labels])
    trans = torch.tensor(
        [[schemes.allowed_transition(a, b, scheme) for b in labels] for a in labels]
    ).reshape(k, k)
    end = torch.tensor([schemes.allowed_end(t, scheme) for t in labels])
    return start, trans, end


def continuation_mask(labels: Sequence[str]) -> torch.Tensor:
    """Boolean ``(K, K)`` [from, to]: tag ``to`` continues the mention that tag ``from``
    is part of (its IOB2 spelling is ``I-`` of the same type: ``I-X``, or ``E-X`` in
    BIOES). A mention ends at a token only if the next token's tag does not continue it.

    Only IOB2 needs this: there ``B-X`` may be followed by ``I-X`` or not, whereas a
    BIOES mention ends with ``E-X``/``S-X``, which nothing continuing may follow anyway.
    """
    iob2 = [schemes.iob2_label(t) for t in labels]
    return torch.tensor(
        [[a != schemes.OUTSIDE and b == "I-" + a[2:] for b in iob2] for a in iob2]
    ).reshape(len(labels), len(labels))


def span_positions(start: torch.Tensor, end: torch.Tensor, seq_len: int) -> torch.Tensor:
    """Boolean ``(N, seq_len)``: position t lies in ``[start[n], end[n])``; start, end (N,)."""
    positions = torch.arange(seq_len, device=start.device)
    return (positions >= start[:, None]) & (positions < end[:, None])


def sum_over_spans(
    values: torch.Tensor, rows: torch.Tensor, start: torch.Tensor, end: torch.Tensor
) -> torch.Tensor:
    """``values[rows[n], start[n]:end[n]].sum()`` for every n: values (B, T), rows, start
    and end (N,) -> (N,). An empty range sums to 0."""
    inside = span_positions(start, end, values.size(1))
    return torch.where(inside, values[rows], 0.0).sum(1)


def log_sum_step(trans: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """One step of the forward algorithm over ``trans`` (K, K) [from, to]: scores (B, K)
    -> (B, K), ``log sum_j exp(scores[:, j] + trans[j, k])`` for each k.

    One matrix product of exponentials, not a log-sum-exp over a (B, K, K) tensor:
    about 3 times faster on CPU with its gradient (B 64, T 20, K 17: 6 against 16 ms).
    Each row of scores is shifted by its maximum and the transitions by theirs, and the
    product runs in float64, so only a path more than e^-700 below the step's best is
    lost to underflow (forbidden moves, at ``FORBIDDEN``, vanish exactly, as they
    should). A tag no path reaches gets the log of the smallest double, about 708 below
    the best, rather than -inf, so the gradient stays finite. The shifts do not change
    the sum, so no gradient flows through them.
    """
    top = trans.detach().max()
    weights = (trans - top).double().exp()

    def step(scores: torch.Tensor) -> torch.Tensor:
        peak = scores.detach().amax(1, keepdim=True)
        total = (scores - peak).double().exp() @ weights
        return total.clamp_min(TINY).log().to(scores.dtype) + (peak + top)

    return step


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
        self.register_buffer("continues", continuation_mask(labels), persistent=False)

    def _scores(
        self, hard: bool = False, temperature: float = 1.0
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Start, transition and end scores with the constraints applied: a finite
        penalty for the likelihood (clean gradients), ``-inf`` for decoding (so no
        emission score, however large, can buy a forbidden move). ``temperature``
        divides the learnt scores (not the penalties) for calibrated probabilities."""
        if hard:
            return (
                self.start_transitions.masked_fill(self.start_penalty < 0, float("-inf")),
                self.transitions.masked_fill(self.trans_penalty < 0, float("-inf")),
                self.end_transitions.masked_fill(self.end_penalty < 0, float("-inf")),
            )
        return (
            self.start_transitions / temperature + self.start_penalty,
            self.transitions / temperature + self.trans_penalty,
            self.end_transitions / temperature + self.end_penalty,
        )

    def _validate(
        self,
        emissions: torch.Tensor,
        mask: torch.Tensor,
        tags: torch.Tensor | None = None,
        allowed: torch.Tensor | None = None,
        spans: torch.Tensor | None = None,
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
        if spans is not None:
            if spans.dim() != 2 or spans.size(1) != 3:
                raise ValueError(
                    "CRF: spans must have shape (num_spans, 3), rows (sentence, start, end), "
                    f"not {tuple(spans.shape)}"
                )
            if spans.dtype != torch.long:
                raise ValueError(f"CRF: spans must be int64 (torch.long), not {spans.dtype}")
        checks = {
            "first": mask[:, 0].all(),
            "prefix": ~(mask[:, 1:] & ~mask[:, :-1]).any(),
        }
        if tags is not None:
            checks["in_range"] = ((tags >= 0) & (tags < self.num_tags)).all()
        if allowed is not None:
            checks["some_allowed"] = (allowed.any(2) | ~mask).all()
        if spans is not None:
            bad_span = self._bad_spans(spans, mask)
            checks["spans_inside"] = ~bad_span.any()
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
        if not passed.get("spans_inside", True):
            n = bad_span.nonzero()[0, 0].item()
            raise ValueError(
                "CRF: spans must be rows (sentence, start, end) of a sentence in the batch "
                "with 0 <= start < end <= its length; "
                f"span {n} is {tuple(spans[n].tolist())}"
            )

    @staticmethod
    def _bad_spans(spans: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(N,) bool: the span is not inside a sentence of the batch."""
        row, start, end = spans.unbind(1)
        known = (row >= 0) & (row < mask.size(0))
        # A sentence outside the batch reads the length 0 padded on at the end.
        lengths = nn.functional.pad(mask.sum(1), (0, 1))
        length = lengths[torch.where(known, row, mask.size(0))]
        return ~((start >= 0) & (start < end) & (end <= length))

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

    def _alphas(self, emissions, mask, temperature: float = 1.0) -> list[torch.Tensor]:
        """Forward variables per step, each (B, K); padding steps carry the last value.
        ``temperature`` divides the transition scores (the caller divides the
        emissions)."""
        start, trans, _ = self._scores(temperature=temperature)
        step = log_sum_step(trans)
        alpha = start + emissions[:, 0]
        alphas = [alpha]
        for t in range(1, emissions.size(1)):
            nxt = step(alpha) + emissions[:, t]
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

    def _betas(
        self, emissions: torch.Tensor, mask: torch.Tensor, temperature: float = 1.0
    ) -> torch.Tensor:
        """Backward variables (B, T, K): log-sum of the scores of every way to go on from
        tag k at step t to the sentence's end, that step's emission excluded; padding
        steps hold the end scores. ``temperature`` as in ``_alphas``."""
        _, trans, end = self._scores(temperature=temperature)
        step = log_sum_step(trans.T)  # from tag j: sum over the next tag k
        beta = end.expand_as(emissions[:, 0])
        betas = [beta]
        for t in range(emissions.size(1) - 2, -1, -1):
            nxt = step(emissions[:, t + 1] + beta)
            beta = torch.where(mask[:, t + 1, None], nxt, end.expand_as(nxt))
            betas.append(beta)
        betas.reverse()
        return torch.stack(betas, 1)

    def marginals(
        self, emissions: torch.Tensor, mask: torch.Tensor, temperature: float = 1.0
    ) -> torch.Tensor:
        """p(tag_t = k | emissions): emissions (batch, seq_len, num_tags) and mask (batch,
        seq_len) -> (batch, seq_len, num_tags); 0 at padding. ``temperature`` T > 0
        divides every score (emissions and transitions): the distribution
        p(y) ~ exp(score(y) / T) that a calibrated model reports (``tagger calibrate``);
        the best path is the same for every T."""
        self._validate(emissions, mask)
        emissions = emissions / temperature
        alphas, betas, log_z = self._forward_backward(emissions, mask, temperature)
        log_marg = alphas + betas - log_z[:, None, None]
        return log_marg.exp() * mask.unsqueeze(2)

    def log_marginals(
        self, emissions: torch.Tensor, mask: torch.Tensor, temperature: float = 1.0
    ) -> torch.Tensor:
        """log p(tag_t = k | emissions) at ``temperature``, differentiable, so a student
        can be trained to match a teacher's marginals (``tagger.distill``). emissions
        (batch, seq_len, num_tags) and mask (batch, seq_len) -> (batch, seq_len,
        num_tags); 0 at padding."""
        self._validate(emissions, mask)
        alphas, betas, log_z = self._forward_backward(emissions / temperature, mask, temperature)
        return (alphas + betas - log_z[:, None, None]) * mask.unsqueeze(2)

    def _forward_backward(
        self, emissions: torch.Tensor, mask: torch.Tensor, temperature: float = 1.0
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Forward and backward variables (B, T, K) and log Z (B,), what probabilities
        are read from. The emissions come already divided by ``temperature``; the
        transitions are divided here."""
        _, _, end = self._scores(temperature=temperature)
        alphas = torch.stack(self._alphas(emissions, mask, temperature), 1)
        log_z = torch.logsumexp(alphas[:, -1] + end, dim=1)
        return alphas, self._betas(emissions, mask, temperature), log_z

    def span_log_probs(
        self,
        emissions: torch.Tensor,
        mask: torch.Tensor,
        tags: torch.Tensor,
        spans: torch.Tensor,
        temperature: float = 1.0,
    ) -> torch.Tensor:
        """log p(tokens start..end-1 have exactly the tags ``tags`` gives them, and token
        ``end`` does not continue that mention | emissions), per span: emissions (batch,
        seq_len, num_tags), mask and tags (batch, seq_len), spans (num_spans, 3) rows
        ``(sentence, start, end)`` -> (num_spans,), at most 0.

        For a span that is one mention of the decoded path (``tags[start]`` opens it,
        ``B-X``/``S-X``) this is the probability of exactly that span with that label:
        the sum over every tag sequence that has this mention, whatever it does
        elsewhere. With forward and backward variables, in log space,

            alpha_start(y_start) + sum_{start < t < end} (trans(y_t-1, y_t) + emit_t(y_t))
            + log sum_{k does not continue y_end-1} exp(trans(y_end-1, k) + emit_end(k)
              + beta_end(k))  [the end score instead at the sentence's end]  - log Z.

        The left boundary needs no term: a tag that opens a mention cannot continue one.
        On the right, ``continuation_mask`` leaves out ``I-X`` after an IOB2 mention of
        type X; a BIOES mention ends on ``E-X``/``S-X``, which the constraints already
        keep anything continuing from following. Scores are those of the likelihood
        (finite penalties), like ``marginals``, so a one-token sentence's ``S-X`` span
        probabilities and its ``O`` marginal add up to 1.

        One forward-backward pass over the sentences that have spans only (trimmed to
        the longest of them), whatever the number of entities (``log_sum_step``):
        together about twice a Viterbi pass. ``temperature``: as in ``marginals``.
        """
        self._validate(emissions, mask, tags, spans=spans)
        if spans.size(0) == 0:
            return emissions.new_zeros(0)
        emissions = emissions / temperature
        rows, which = spans[:, 0].unique(return_inverse=True)  # sentences with spans
        steps = int(mask[rows].sum(1).max())
        emissions, mask, tags = emissions[rows, :steps], mask[rows, :steps], tags[rows, :steps]
        _, trans, end = self._scores(temperature=temperature)
        alphas, betas, log_z = self._forward_backward(emissions, mask, temperature)
        start, stop = spans[:, 1], spans[:, 2]
        first, last = tags[which, start], tags[which, stop - 1]  # (N,) the span's end tags
        head = alphas[which, start, first]  # every way to reach the span's first tag
        # move[r, t]: transition into tag t and its emission (0 at t = 0)
        emit = emissions.gather(2, tags.unsqueeze(2)).squeeze(2)
        move = nn.functional.pad(trans[tags[:, :-1], tags[:, 1:]] + emit[:, 1:], (1, 0))
        body = sum_over_spans(move, which, start + 1, stop)
        after = stop.clamp(max=steps - 1)  # the next token (clamped: unused at the end)
        onward = trans[last] + emissions[which, after] + betas[which, after]  # (N, K)
        onward = onward.masked_fill(self.continues[last], float("-inf")).logsumexp(1)
        at_end = stop >= mask.sum(1)[which]
        tail = torch.where(at_end, end[last], onward)
        return (head + body + tail - log_z[which]).clamp(max=0.0)

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
