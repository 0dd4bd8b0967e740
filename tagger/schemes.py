"""Tag schemes (IOB1, IOB2, BIOES): parsing, detection, lossless conversion, spans.

Everything inside the toolkit runs on IOB2 or BIOES; readers normalise whatever they
find to IOB2 the conlleval way (an ``I-X`` that does not continue an ``X`` mention
opens one), so entity counts match conlleval and seqeval's default mode.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

OUTSIDE = "O"
SCHEMES = ("IOB2", "BIOES")
# BILOU spellings map onto BIOES.
_PREFIX_ALIASES = {"L": "E", "U": "S"}
_PREFIXES = {"B", "I", "E", "S"}


def parse_tag(tag: str) -> tuple[str, str | None]:
    """Split ``B-PER`` into ``("B", "PER")``; ``O`` gives ``("O", None)``.

    Raises ``ValueError`` with a readable reason for anything else (``X-PER``, ``I-``).
    """
    if tag == OUTSIDE:
        return OUTSIDE, None
    prefix, sep, etype = tag.partition("-")
    prefix = _PREFIX_ALIASES.get(prefix, prefix)
    if not sep or prefix not in _PREFIXES:
        raise ValueError(
            f"tag {tag!r} is not valid: expected O, or B-, I-, E- or S- followed by a type"
        )
    if not etype:
        raise ValueError(f"tag {tag!r} has no entity type after {prefix}-")
    return prefix, etype


def detect_scheme(tag_sequences: Iterable[Sequence[str]]) -> str:
    """Name the scheme of valid tags: ``BIOES``, ``IOB1`` or ``IOB2``.

    IOB1 is recognised by a mention opened with ``I-`` (CoNLL-2003's original files);
    a corpus of only ``O`` tags counts as IOB2.
    """
    iob1 = False
    for tags in tag_sequences:
        prev_type = None
        for tag in tags:
            prefix, etype = parse_tag(tag)
            if prefix in ("E", "S"):
                return "BIOES"
            if prefix == "I" and etype != prev_type:
                iob1 = True
            prev_type = etype
    return "IOB1" if iob1 else "IOB2"


def to_iob2(tags: Sequence[str]) -> list[str]:
    """Normalise IOB1, IOB2, BIOES or BILOU tags to IOB2 (conlleval mention boundaries)."""
    out: list[str] = []
    prev_prefix, prev_type = OUTSIDE, None
    for tag in tags:
        prefix, etype = parse_tag(tag)
        if prefix == OUTSIDE:
            out.append(OUTSIDE)
        elif prefix in ("B", "S") or etype != prev_type or prev_prefix in ("E", "S"):
            out.append(f"B-{etype}")
        else:
            out.append(f"I-{etype}")
        prev_prefix, prev_type = prefix, etype
    return out


def iob2_label(tag: str) -> str:
    """One label's IOB2 spelling: ``E-X`` -> ``I-X``, ``S-X`` -> ``B-X``."""
    prefix, etype = parse_tag(tag)
    if prefix == OUTSIDE:
        return OUTSIDE
    return f"{'B' if prefix in ('B', 'S') else 'I'}-{etype}"


def iob2_to_bioes(tags: Sequence[str]) -> list[str]:
    """Convert valid IOB2 tags to BIOES (single-token mentions ``S-``, last tokens ``E-``)."""
    out: list[str] = []
    for i, tag in enumerate(tags):
        prefix, etype = parse_tag(tag)
        if prefix == OUTSIDE:
            out.append(OUTSIDE)
            continue
        continues = i + 1 < len(tags) and tags[i + 1] == f"I-{etype}"
        if prefix == "B":
            out.append(f"{'B' if continues else 'S'}-{etype}")
        else:
            out.append(f"{'I' if continues else 'E'}-{etype}")
    return out


def convert(tags: Sequence[str], scheme: str) -> list[str]:
    """Convert tags of any known scheme to ``scheme`` (``IOB2`` or ``BIOES``)."""
    iob2 = to_iob2(tags)
    if scheme == "IOB2":
        return iob2
    if scheme == "BIOES":
        return iob2_to_bioes(iob2)
    raise ValueError(f"unknown tag scheme {scheme!r}; choose one of {', '.join(SCHEMES)}")


def spans(tags: Sequence[str]) -> list[tuple[int, int, str]]:
    """Mentions as ``(start, end_exclusive, type)`` token offsets, conlleval boundaries."""
    found: list[tuple[int, int, str]] = []
    start, etype = None, None
    for i, tag in enumerate(to_iob2(tags)):
        prefix, tag_type = parse_tag(tag)
        if start is not None and prefix != "I":
            found.append((start, i, etype))
            start = None
        if prefix == "B":
            start, etype = i, tag_type
    if start is not None:
        found.append((start, len(tags), etype))
    return found


def label_set(entity_types: Iterable[str], scheme: str) -> list[str]:
    """All labels of ``scheme`` for these types, ``O`` first, then grouped by type."""
    prefixes = ("B", "I") if scheme == "IOB2" else ("B", "I", "E", "S")
    return [OUTSIDE] + [f"{p}-{t}" for t in sorted(set(entity_types)) for p in prefixes]


def allowed_transition(prev: str | None, tag: str, scheme: str) -> bool:
    """Whether ``tag`` may follow ``prev`` (``None`` = sentence start) in ``scheme``.

    A following ``None`` tag is expressed by calling with ``tag="O"`` for the end
    check through :func:`allowed_end`.
    """
    p_prefix, p_type = parse_tag(prev) if prev is not None else (OUTSIDE, None)
    prefix, etype = parse_tag(tag)
    if scheme == "IOB2":
        return prefix != "I" or (p_prefix in ("B", "I") and p_type == etype)
    # BIOES: an open mention (B, I) must continue with I/E of its type.
    if p_prefix in ("B", "I"):
        return prefix in ("I", "E") and etype == p_type
    return prefix in (OUTSIDE, "B", "S")


def allowed_end(tag: str, scheme: str) -> bool:
    """Whether a sentence may end on ``tag`` (BIOES forbids ending inside a mention)."""
    return scheme == "IOB2" or parse_tag(tag)[0] not in ("B", "I")
