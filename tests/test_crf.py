"""The CRF against brute-force enumeration of every tag sequence, and its constraints.

The brute force scores paths with the CRF's *raw* parameters and keeps only the paths
that are valid in the scheme (checked by the independent validators in conftest): the
CRF's finite penalties must make invalid paths vanish from Z, Viterbi and marginals.
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from conftest import is_valid_bioes, is_valid_iob2
from hypothesis import given
from hypothesis import strategies as st

from tagger import schemes
from tagger.crf import CRF, constraint_masks

VALID = {"IOB2": is_valid_iob2, "BIOES": is_valid_bioes}
LABEL_SETS = [
    (["O", "B-A", "B-B"], "IOB2"),  # K=3, nothing forbidden
    (["O", "B-A", "I-A"], "IOB2"),
    (["O", "B-A", "I-A", "B-B"], "IOB2"),
    (["O", "B-A", "I-A", "B-B", "I-B"], "IOB2"),
    (["O", "S-A", "S-B"], "BIOES"),  # K=3, nothing forbidden
    (["O", "B-A", "I-A", "E-A", "S-A"], "BIOES"),
]


def random_crf(labels, scheme, gen) -> CRF:
    crf = CRF(labels, scheme).double()
    k = len(labels)
    with torch.no_grad():
        crf.start_transitions.copy_(torch.randn(k, generator=gen, dtype=torch.float64))
        crf.transitions.copy_(torch.randn(k, k, generator=gen, dtype=torch.float64))
        crf.end_transitions.copy_(torch.randn(k, generator=gen, dtype=torch.float64))
    return crf


def random_batch(k, gen, max_len=4, batch=3):
    lengths = torch.randint(1, max_len + 1, (batch,), generator=gen)
    lengths[0] = max_len  # the batch is as long as its longest sentence
    emissions = 2 * torch.randn(batch, max_len, k, generator=gen, dtype=torch.float64)
    mask = torch.arange(max_len)[None, :] < lengths[:, None]
    return emissions, mask, lengths.tolist()


def brute_force(crf, labels, scheme, emissions, length):
    """Valid paths of ``length`` with their raw scores (for one sentence)."""
    k = len(labels)
    paths = [
        p
        for p in itertools.product(range(k), repeat=length)
        if VALID[scheme]([labels[i] for i in p])
    ]
    start, trans, end = crf.start_transitions, crf.transitions, crf.end_transitions
    scores = []
    for p in paths:
        s = start[p[0]] + end[p[-1]] + sum(emissions[t, p[t]] for t in range(length))
        s = s + sum(trans[p[t], p[t + 1]] for t in range(length - 1))
        scores.append(s)
    return paths, torch.stack(scores).detach()


CASES = [
    (labels, scheme, t, seed)
    for labels, scheme in LABEL_SETS
    for t in (1, 2, 3, 4)
    for seed in range(2)
]


@pytest.mark.parametrize(("labels", "scheme", "max_len", "seed"), CASES)
def test_crf_matches_brute_force(labels, scheme, max_len, seed):
    gen = torch.Generator().manual_seed(1000 * seed + 10 * max_len + len(labels))
    crf = random_crf(labels, scheme, gen)
    emissions, mask, lengths = random_batch(len(labels), gen, max_len)
    with torch.no_grad():
        log_z = crf.log_partition(emissions, mask)
        best = crf.decode(emissions, mask)
        marginals = crf.marginals(emissions, mask)
    assert log_z.shape == (3,)
    assert best.shape == mask.shape and marginals.shape == emissions.shape
    for b, length in enumerate(lengths):
        paths, scores = brute_force(crf, labels, scheme, emissions[b], length)
        assert torch.allclose(log_z[b], torch.logsumexp(scores, 0), atol=1e-5)
        assert best[b, :length].tolist() == list(paths[int(scores.argmax())])
        assert (best[b, length:] == 0).all()
        probs = (scores - torch.logsumexp(scores, 0)).exp()
        expected = torch.zeros(length, len(labels), dtype=torch.float64)
        for p, prob in zip(paths, probs):
            expected[range(length), list(p)] += prob
        assert torch.allclose(marginals[b, :length], expected, atol=1e-5)
        assert torch.allclose(marginals[b, :length].sum(1), torch.ones(length, dtype=torch.float64))
        assert (marginals[b, length:] == 0).all()
        # log p(path) for the best path and for a random valid one.
        for p in (paths[int(scores.argmax())], paths[len(paths) // 2]):
            tags = torch.zeros(1, max_len, dtype=torch.long)
            tags[0, :length] = torch.tensor(p)
            ll = crf.log_likelihood(emissions[b : b + 1], tags, mask[b : b + 1])
            want = scores[paths.index(p)] - torch.logsumexp(scores, 0)
            assert torch.allclose(ll[0].detach(), want, atol=1e-5)


def test_padding_does_not_change_results():
    labels, scheme = LABEL_SETS[3]
    gen = torch.Generator().manual_seed(5)
    crf = random_crf(labels, scheme, gen)
    emissions, mask, lengths = random_batch(len(labels), gen, max_len=6, batch=4)
    with torch.no_grad():
        log_z = crf.log_partition(emissions, mask)
        best = crf.decode(emissions, mask)
        marg = crf.marginals(emissions, mask)
        for b, n in enumerate(lengths):
            alone = emissions[b : b + 1, :n]
            ones = torch.ones(1, n, dtype=torch.bool)
            assert torch.allclose(crf.log_partition(alone, ones)[0], log_z[b])
            assert torch.equal(crf.decode(alone, ones)[0], best[b, :n])
            assert torch.allclose(crf.marginals(alone, ones)[0], marg[b, :n])


def test_marginals_are_the_gradient_of_log_z():
    labels, scheme = LABEL_SETS[5]
    gen = torch.Generator().manual_seed(3)
    crf = random_crf(labels, scheme, gen)
    emissions, mask, _ = random_batch(len(labels), gen, max_len=5)
    emissions.requires_grad_(True)
    crf.log_partition(emissions, mask).sum().backward()
    assert torch.allclose(emissions.grad, crf.marginals(emissions.detach(), mask), atol=1e-6)


def test_gradients_flow_and_are_finite():
    labels = schemes.label_set(["PER", "LOC"], "IOB2")
    crf = CRF(labels, "IOB2")
    gen = torch.Generator().manual_seed(0)
    emissions = torch.randn(4, 6, len(labels), generator=gen, requires_grad=True)
    mask = torch.arange(6)[None, :] < torch.tensor([6, 3, 1, 5])[:, None]
    tags = torch.tensor(
        [[1, 2, 0, 3, 4, 4], [0, 1, 0, 0, 0, 0], [3, 0, 0, 0, 0, 0], [0, 0, 3, 4, 0, 0]]
    )
    ll = crf.log_likelihood(emissions, tags, mask)
    assert ll.shape == (4,) and (ll < 0).all()
    (-ll.mean()).backward()
    for grad in (
        emissions.grad,
        crf.transitions.grad,
        crf.start_transitions.grad,
        crf.end_transitions.grad,
    ):
        assert grad is not None and torch.isfinite(grad).all()
    assert crf.transitions.grad.abs().sum() > 0
    assert (emissions.grad[~mask] == 0).all()  # padding gets no gradient


def test_constraint_masks():
    labels = ["O", "B-A", "I-A", "B-B", "I-B"]
    start, trans, end = constraint_masks(labels, "IOB2")
    assert start.tolist() == [True, True, False, True, False]
    assert trans[labels.index("B-A"), labels.index("I-A")]
    assert not trans[labels.index("B-A"), labels.index("I-B")]
    assert not trans[labels.index("O"), labels.index("I-B")]
    assert end.all()
    labels = ["O", "B-A", "I-A", "E-A", "S-A"]
    start, trans, end = constraint_masks(labels, "BIOES")
    assert start.tolist() == [True, True, False, False, True]
    assert end.tolist() == [True, False, False, True, True]
    assert trans[1].tolist() == [False, False, True, True, False]  # after B-A: I-A or E-A
    # Penalties are buffers, not parameters, and are not saved.
    assert set(CRF(labels, "BIOES").state_dict()) == {
        "start_transitions",
        "transitions",
        "end_transitions",
    }


def invalid_bias(labels) -> torch.Tensor:
    """+1 on tags that can make a sequence invalid (I-, E-), 0 elsewhere."""
    return torch.tensor([1.0 if t[0] in "IE" else 0.0 for t in labels])


@given(
    seed=st.integers(0, 2**31 - 1),
    scheme=st.sampled_from(["IOB2", "BIOES"]),
    scale=st.sampled_from([1.0, 10.0, 100.0]),
    bias=st.sampled_from([0.0, 20.0, 1000.0]),
    length=st.integers(1, 8),
)
def test_decode_never_emits_an_invalid_sequence(seed, scheme, scale, bias, length):
    labels = schemes.label_set(["PER", "LOC"], scheme)
    gen = torch.Generator().manual_seed(seed)
    crf = CRF(labels, scheme)
    with torch.no_grad():  # trained transitions may favour anything
        crf.transitions.copy_(10 * torch.randn(crf.transitions.shape, generator=gen))
        crf.start_transitions.copy_(10 * torch.randn(len(labels), generator=gen))
    emissions = scale * torch.randn(6, length, len(labels), generator=gen) + bias * invalid_bias(
        labels
    )
    lengths = torch.randint(1, length + 1, (6,), generator=gen)
    lengths[0] = length
    mask = torch.arange(length)[None, :] < lengths[:, None]
    best = crf.decode(emissions, mask)
    for row, n in zip(best.tolist(), lengths.tolist()):
        tags = [labels[i] for i in row[:n]]
        assert VALID[scheme](tags), tags


def test_decode_constraints_hold_for_any_emission_scale():
    labels = schemes.label_set(["PER"], "IOB2")
    emissions = torch.zeros(1, 1, 3)
    emissions[0, 0, labels.index("I-PER")] = 1e5
    best = CRF(labels, "IOB2").decode(emissions, torch.ones(1, 1, dtype=torch.bool))
    assert is_valid_iob2([labels[i] for i in best[0].tolist()])


# ------------------------------------------------------------------ preconditions


def _valid_inputs():
    """A CRF over 3 labels and valid (emissions, tags, mask): lengths 3, 1."""
    crf = CRF(["O", "B-A", "I-A"], "IOB2")
    emissions = torch.zeros(2, 3, 3)
    mask = torch.tensor([[True, True, True], [True, False, False]])
    tags = torch.tensor([[1, 2, 0], [0, 0, 0]])
    return crf, emissions, tags, mask


def _every_method(crf, emissions, tags, mask):
    """Each public method's call on these inputs."""
    return {
        "log_likelihood": lambda: crf.log_likelihood(emissions, tags, mask),
        "log_partition": lambda: crf.log_partition(emissions, mask),
        "marginals": lambda: crf.marginals(emissions, mask),
        "decode": lambda: crf.decode(emissions, mask),
    }


def test_valid_inputs_pass_every_method():
    crf, emissions, tags, mask = _valid_inputs()
    for call in _every_method(crf, emissions, tags, mask).values():
        call()


BROKEN = {
    # name: (change to the valid inputs, part of the message)
    "emissions not 3-d": (lambda e, t, m: (e[0], t, m), r"emissions must have shape"),
    "wrong num_tags": (
        lambda e, t, m: (torch.zeros(2, 3, 4), t, m),
        r"num_tags=3\), not \(2, 3, 4\)",
    ),
    "integer emissions": (lambda e, t, m: (e.long(), t, m), r"emissions must be floating point"),
    "no time steps": (
        lambda e, t, m: (e[:, :0], t[:, :0], m[:, :0]),
        r"at least one token, but seq_len is 0",
    ),
    "mask of another shape": (lambda e, t, m: (e, t, m[:, :2]), r"mask must have shape"),
    "mask of another batch": (lambda e, t, m: (e, t, m[:1]), r"mask must have shape"),
    "mask not bool": (lambda e, t, m: (e, t, m.long()), r"mask must be a bool tensor"),
    "an empty sentence": (
        lambda e, t, m: (e, t, torch.tensor([[True, True, True], [False, False, False]])),
        r"at least one token \(mask\[:, 0\] all true\); sequence 1 has none",
    ),
    "mask not a prefix": (
        lambda e, t, m: (e, t, torch.tensor([[True, False, True], [True, False, False]])),
        r"prefix of ones .*sequence 0",
    ),
}
TAG_BROKEN = {
    "tags of another shape": (lambda e, t, m: (e, t[:, :2], m), r"tags must have shape"),
    "tags not int64": (lambda e, t, m: (e, t.int(), m), r"tags must be int64"),
    "tag too large": (
        lambda e, t, m: (e, torch.tensor([[1, 2, 3], [0, 0, 0]]), m),
        r"tags must be label ids in \[0, num_tags=3\) \(padding too\), not 3",
    ),
    "negative tag at padding": (
        lambda e, t, m: (e, torch.tensor([[1, 2, 0], [0, -1, 0]]), m),
        r"tags must be label ids .*not -1",
    ),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
@pytest.mark.parametrize("method", ["log_likelihood", "log_partition", "marginals", "decode"])
def test_broken_precondition_raises_value_error(case, method):
    crf, *valid = _valid_inputs()
    change, message = BROKEN[case]
    emissions, tags, mask = change(*valid)
    with pytest.raises(ValueError, match=r"^CRF: .*" + message):
        _every_method(crf, emissions, tags, mask)[method]()


@pytest.mark.parametrize("case", sorted(TAG_BROKEN))
def test_broken_tags_raise_value_error(case):
    crf, *valid = _valid_inputs()
    change, message = TAG_BROKEN[case]
    emissions, tags, mask = change(*valid)
    with pytest.raises(ValueError, match=r"^CRF: .*" + message):
        crf.log_likelihood(emissions, tags, mask)
    crf.decode(emissions, mask)  # the tags are only log_likelihood's


def test_an_empty_batch_is_allowed():
    crf = CRF(["O", "B-A", "I-A"], "IOB2")
    emissions, mask = torch.zeros(0, 2, 3), torch.zeros(0, 2, dtype=torch.bool)
    assert crf.log_partition(emissions, mask).shape == (0,)


# ------------------------------------------------------------------ partial labels


def one_hot(tags, mask, k) -> torch.Tensor:
    """(B, T, K) bool: only the tag allowed at real tokens, nothing at padding."""
    return torch.nn.functional.one_hot(tags, k).bool() & mask.unsqueeze(2)


def random_valid_tags(labels, scheme, lengths, max_len, gen) -> torch.Tensor:
    """(B, max_len) a random valid path per sentence, 0 at padding."""
    tags = torch.zeros(len(lengths), max_len, dtype=torch.long)
    for b, n in enumerate(lengths):
        paths = [
            p
            for p in itertools.product(range(len(labels)), repeat=n)
            if VALID[scheme]([labels[i] for i in p])
        ]
        tags[b, :n] = torch.tensor(paths[int(torch.randint(len(paths), (1,), generator=gen))])
    return tags


@pytest.mark.parametrize(("labels", "scheme"), LABEL_SETS)
def test_partial_likelihood_with_every_token_fixed_is_the_likelihood(labels, scheme):
    gen = torch.Generator().manual_seed(len(labels))
    crf = random_crf(labels, scheme, gen)
    emissions, mask, lengths = random_batch(len(labels), gen, max_len=4, batch=4)
    tags = random_valid_tags(labels, scheme, lengths, 4, gen)
    allowed = one_hot(tags, mask, len(labels))
    with torch.no_grad():
        partial = crf.partial_log_likelihood(emissions, allowed, mask)
        full = crf.log_likelihood(emissions, tags, mask)
    assert partial.shape == (4,)
    assert torch.allclose(partial, full, rtol=0, atol=1e-10)


PARTIAL_CASES = [
    (labels, scheme, t, seed)
    for labels, scheme in LABEL_SETS
    if len(labels) <= 4
    for t in (1, 3, 4)
    for seed in range(3)
]


@pytest.mark.parametrize(("labels", "scheme", "max_len", "seed"), PARTIAL_CASES)
def test_partial_likelihood_matches_brute_force(labels, scheme, max_len, seed):
    """log sum over the valid paths through the allowed tags of p(path), enumerated."""
    gen = torch.Generator().manual_seed(1000 * seed + 10 * max_len + len(labels) + 7)
    crf = random_crf(labels, scheme, gen)
    k = len(labels)
    emissions, mask, lengths = random_batch(k, gen, max_len)
    # the annotated path is always allowed; each other tag with probability 1/2
    tags = random_valid_tags(labels, scheme, lengths, max_len, gen)
    allowed = one_hot(tags, mask, k) | (torch.rand(emissions.shape, generator=gen) < 0.5)
    with torch.no_grad():
        partial = crf.partial_log_likelihood(emissions, allowed, mask)
    for b, length in enumerate(lengths):
        paths, scores = brute_force(crf, labels, scheme, emissions[b], length)
        kept = [i for i, p in enumerate(paths) if all(allowed[b, t, p[t]] for t in range(length))]
        want = torch.logsumexp(scores[kept], 0) - torch.logsumexp(scores, 0)
        assert torch.allclose(partial[b], want, atol=1e-6)
    assert (partial <= 1e-12).all()  # a log-probability


def test_unreachable_tags_keep_the_loss_and_gradients_finite():
    """Where no path reaches a tag (emissions spread by thousands, or partial labels
    that allow only I-PER after an O), the forward algorithm's sums underflow to 0:
    their log stays finite, so the loss and every gradient do too."""
    labels = schemes.label_set(["PER", "LOC"], "IOB2")
    crf = CRF(labels, "IOB2")
    gen = torch.Generator().manual_seed(0)
    emissions = 3000 * torch.randn(2, 5, len(labels), generator=gen)
    emissions.requires_grad_(True)
    mask = torch.ones(2, 5, dtype=torch.bool)
    tags = torch.zeros(2, 5, dtype=torch.long)
    i_per = labels.index("I-PER")
    allowed = one_hot(tags, mask, len(labels))
    allowed[1, 2] = False
    allowed[1, 2, i_per] = True  # O then I-PER: a path the scheme forbids
    losses = -crf.partial_log_likelihood(emissions, allowed, mask)
    losses = torch.cat([losses, -crf.log_likelihood(emissions, tags, mask)])
    assert torch.isfinite(losses).all() and losses[1] > 100
    losses.sum().backward()
    for grad in (emissions.grad, crf.transitions.grad, crf.start_transitions.grad):
        assert torch.isfinite(grad).all()


def test_partial_gradients_are_finite_and_the_difference_of_marginals():
    """Tokens tagged O may be LOC (an open type): d/d emissions of the partial
    log-likelihood is p(tag | allowed) - p(tag), finite, and 0 at padding."""
    labels = schemes.label_set(["PER", "LOC"], "IOB2")
    crf = CRF(labels, "IOB2")
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        crf.transitions.copy_(torch.randn(crf.transitions.shape, generator=gen))
    emissions = torch.randn(4, 6, len(labels), generator=gen, dtype=torch.float64)
    emissions.requires_grad_(True)
    crf.double()
    mask = torch.arange(6)[None, :] < torch.tensor([6, 3, 1, 5])[:, None]
    tags = torch.tensor(
        [[3, 4, 0, 1, 2, 2], [0, 1, 0, 0, 0, 0], [3, 0, 0, 0, 0, 0], [0, 0, 3, 4, 0, 0]]
    )
    open_type = torch.tensor([schemes.parse_tag(t)[1] == "LOC" for t in labels])
    allowed = one_hot(tags, mask, len(labels)) | ((tags == 0) & mask)[..., None] & open_type
    ll = crf.partial_log_likelihood(emissions, allowed, mask)
    assert (ll < 0).all()
    full = crf.log_likelihood(emissions, tags, mask)
    assert (ll[[0, 1, 3]] > full[[0, 1, 3]]).all()  # more paths count where O may be LOC
    assert torch.allclose(ll[2], full[2])  # one B-PER: nothing to relax
    ll.sum().backward()
    for grad in (emissions.grad, crf.transitions.grad, crf.start_transitions.grad):
        assert grad is not None and torch.isfinite(grad).all()
    assert (emissions.grad[~mask] == 0).all()
    with torch.no_grad():
        constrained = crf.marginals(emissions.masked_fill(~allowed, -1e4), mask)
        want = constrained - crf.marginals(emissions, mask)
    assert torch.allclose(emissions.grad, want, atol=1e-8)


ALLOWED_BROKEN = {
    "allowed of another shape": (lambda a: a[:, :2], r"allowed must have shape"),
    "allowed not bool": (lambda a: a.long(), r"allowed must be a bool tensor"),
    "a token with no tag allowed": (
        lambda a: torch.cat([a[:, :1], torch.zeros_like(a[:, 1:2]), a[:, 2:]], 1),
        r"at least one tag; token 1 of sequence 0 has none",
    ),
}


@pytest.mark.parametrize("case", sorted(ALLOWED_BROKEN))
def test_broken_allowed_raises_value_error(case):
    crf, emissions, tags, mask = _valid_inputs()
    allowed = one_hot(tags, mask, 3)
    crf.partial_log_likelihood(emissions, allowed, mask)  # valid; padding allows nothing
    change, message = ALLOWED_BROKEN[case]
    with pytest.raises(ValueError, match=r"^CRF: .*" + message):
        crf.partial_log_likelihood(emissions, change(allowed), mask)
    for broken in BROKEN.values():  # the other preconditions are checked too
        bad_emissions, _, bad_mask = broken[0](emissions, tags, mask)
        with pytest.raises(ValueError, match=r"^CRF: .*" + broken[1]):
            crf.partial_log_likelihood(bad_emissions, allowed, bad_mask)


# ------------------------------------------------------------------ span probabilities


def brute_span_probs(crf, labels, scheme, emissions, length):
    """{(start, end, type): p(exactly that mention)} over every mention of a valid path,
    and for each the most probable path holding it (its tags)."""
    paths, scores = brute_force(crf, labels, scheme, emissions, length)
    probs = (scores - torch.logsumexp(scores, 0)).exp()
    found, holder = {}, {}
    for path, prob in sorted(zip(paths, probs.tolist()), key=lambda x: -x[1]):
        for span in schemes.spans([labels[i] for i in path]):
            found[span] = found.get(span, 0.0) + prob
            holder.setdefault(span, path)
    return found, holder


SPAN_CASES = [
    (labels, scheme, t, seed)
    for labels, scheme in LABEL_SETS
    for t in (1, 2, 4)
    for seed in range(2)
]


@pytest.mark.parametrize(("labels", "scheme", "max_len", "seed"), SPAN_CASES)
def test_span_probabilities_match_brute_force(labels, scheme, max_len, seed):
    """Every mention any valid path has, scored with a path that holds it: the sum of
    p(path) over the valid paths with exactly that mention (in IOB2, a B-X I-X span
    followed by I-X is another mention, and the constraints forbid invalid paths)."""
    gen = torch.Generator().manual_seed(100 * seed + 10 * max_len + len(labels))
    crf = random_crf(labels, scheme, gen)
    emissions, mask, lengths = random_batch(len(labels), gen, max_len)
    for b, length in enumerate(lengths):
        want, holder = brute_span_probs(crf, labels, scheme, emissions[b], length)
        spans = sorted(want)
        # One row per mention: the sentence with a path that holds it.
        tags = torch.zeros(len(spans), max_len, dtype=torch.long)
        for n, span in enumerate(spans):
            tags[n, :length] = torch.tensor(holder[span])
        index = torch.tensor([[n, s, e] for n, (s, e, _) in enumerate(spans)]).reshape(-1, 3)
        with torch.no_grad():
            got = crf.span_log_probs(
                emissions[b].expand(len(spans), -1, -1), mask[b].expand(len(spans), -1), tags, index
            )
        assert got.shape == (len(spans),) and (got <= 0).all()
        expected = torch.tensor([want[s] for s in spans], dtype=torch.float64)
        assert torch.allclose(got.exp(), expected, atol=1e-6), spans


@pytest.mark.parametrize(("labels", "scheme"), LABEL_SETS)
def test_span_probabilities_of_decoded_paths_in_a_padded_batch(labels, scheme):
    """The use in prediction: every mention of each sentence's Viterbi path, all in one
    call over a padded batch where some sentences have none; each equals the brute force
    and the same sentence scored alone."""
    gen = torch.Generator().manual_seed(len(labels) + 40)
    crf = random_crf(labels, scheme, gen)
    emissions, mask, lengths = random_batch(len(labels), gen, max_len=5, batch=6)
    emissions[1] -= 50 * torch.tensor([t != "O" for t in labels], dtype=torch.float64)  # no mention
    with torch.no_grad():
        best = crf.decode(emissions, mask)
        spans, want = [], []
        for b, length in enumerate(lengths):
            probs, _ = brute_span_probs(crf, labels, scheme, emissions[b], length)
            for s, e, etype in schemes.spans([labels[i] for i in best[b, :length]]):
                spans.append([b, s, e])
                want.append(probs[(s, e, etype)])
        assert spans and 1 not in {b for b, _, _ in spans}
        index = torch.tensor(spans)
        got = crf.span_log_probs(emissions, mask, best, index).exp()
        assert torch.allclose(got, torch.tensor(want, dtype=torch.float64), atol=1e-6)
        for n, (b, s, e) in enumerate(spans):
            n_b = lengths[b]
            alone = crf.span_log_probs(
                emissions[b : b + 1, :n_b],
                mask[b : b + 1, :n_b],
                best[b : b + 1, :n_b],
                torch.tensor([[0, s, e]]),
            )
            assert torch.allclose(alone.exp()[0], got[n], atol=1e-10)


@pytest.mark.parametrize(("labels", "scheme"), LABEL_SETS)
def test_mentions_starting_at_a_token_share_its_opening_marginal(labels, scheme):
    """Summed over every end and type, the mentions starting at token t have the
    probability that t opens a mention (B-X or S-X): its marginals. A one-token
    sentence: p(O) plus every single-token mention's probability is 1."""
    gen = torch.Generator().manual_seed(len(labels) + 77)
    crf = random_crf(labels, scheme, gen)
    opening = [i for i, t in enumerate(labels) if t[0] in "BS"]
    for length in (1, 4):
        emissions = 2 * torch.randn(1, length, len(labels), generator=gen, dtype=torch.float64)
        mask = torch.ones(1, length, dtype=torch.bool)
        with torch.no_grad():
            marg = crf.marginals(emissions, mask)[0]
        want, holder = brute_span_probs(crf, labels, scheme, emissions[0], length)
        spans = sorted(want)
        tags = torch.tensor([holder[s] for s in spans])
        index = torch.tensor([[n, s, e] for n, (s, e, _) in enumerate(spans)])
        with torch.no_grad():
            probs = crf.span_log_probs(
                emissions.expand(len(spans), -1, -1), mask.expand(len(spans), -1), tags, index
            ).exp()
        for t in range(length):
            at_t = sum(p for p, (s, _, _) in zip(probs.tolist(), spans) if s == t)
            assert at_t == pytest.approx(float(marg[t, opening].sum()), abs=1e-9)
        if length == 1:
            assert float(probs.sum() + marg[0, labels.index("O")]) == pytest.approx(1.0)


def test_a_longer_iob2_mention_is_not_the_shorter_one():
    """IOB2: p(B-A at 0 alone) excludes the paths where I-A follows, so the one-token and
    two-token mentions starting at 0 add up to p(B-A at 0)."""
    labels = ["O", "B-A", "I-A"]
    crf = CRF(labels, "IOB2").double()
    emissions = torch.tensor([[[0.0, 2.0, 0.0], [0.0, 0.0, 3.0]]], dtype=torch.float64)
    mask = torch.ones(1, 2, dtype=torch.bool)
    tags = torch.tensor([[1, 2]])
    with torch.no_grad():
        one, two = crf.span_log_probs(emissions, mask, tags, torch.tensor([[0, 0, 1], [0, 0, 2]]))
        marg = crf.marginals(emissions, mask)
    # Paths and scores: (B,O) 2, (B,B) 2, (B,I) 5, (O,O) 0, (O,B) 0; I-A cannot open.
    z = 2 + 2 * math.e**2 + math.e**5
    assert float(one.exp()) == pytest.approx(2 * math.e**2 / z)  # (B,O) and (B,B)
    assert float(two.exp()) == pytest.approx(math.e**5 / z)
    assert float(one.exp() + two.exp()) == pytest.approx(float(marg[0, 0, 1]))


SPAN_BROKEN = {
    "spans not 2-d": (lambda s: s[0], r"spans must have shape \(num_spans, 3\)"),
    "spans of 2 columns": (lambda s: s[:, :2], r"spans must have shape"),
    "spans not int64": (lambda s: s.int(), r"spans must be int64"),
    "sentence out of the batch": (
        lambda s: torch.tensor([[2, 0, 1]]),
        r"span 0 is \(2, 0, 1\)",
    ),
    "negative sentence": (lambda s: torch.tensor([[0, 0, 1], [-1, 0, 1]]), r"span 1 is"),
    "empty span": (lambda s: torch.tensor([[0, 1, 1]]), r"0 <= start < end <= its length"),
    "past the sentence's end": (lambda s: torch.tensor([[1, 0, 2]]), r"span 0 is \(1, 0, 2\)"),
}


@pytest.mark.parametrize("case", sorted(SPAN_BROKEN))
def test_broken_spans_raise_value_error(case):
    crf, emissions, tags, mask = _valid_inputs()  # lengths 3, 1
    valid = torch.tensor([[0, 0, 2], [1, 0, 1]])
    assert crf.span_log_probs(emissions, mask, tags, valid).shape == (2,)
    assert crf.span_log_probs(emissions, mask, tags, valid[:0]).shape == (0,)
    change, message = SPAN_BROKEN[case]
    with pytest.raises(ValueError, match=r"^CRF: .*" + message):
        crf.span_log_probs(emissions, mask, tags, change(valid))
    for broken in {**BROKEN, **TAG_BROKEN}.values():  # the other preconditions too
        bad_emissions, bad_tags, bad_mask = broken[0](emissions, tags, mask)
        with pytest.raises(ValueError, match=r"^CRF: .*" + broken[1]):
            crf.span_log_probs(bad_emissions, bad_mask, bad_tags, valid[:1])
