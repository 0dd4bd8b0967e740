"""A trained tagger in use: token lists or raw text in, tags and entity spans out.

Raw text is tokenized by a blank spaCy pipeline of the model's language plus a
sentencizer; files are read, tagged and written in chunks so memory stays flat.

An entity's ``score`` is the probability the model gives to exactly that span with that
label: for a CRF the mass of every tag sequence holding that mention
(``CRF.span_log_probs``), for softmax output the product of its tokens' tag
probabilities, for an ensemble that of the averaged model it decodes with. Entities
below ``min_confidence`` are dropped, their tokens tagged ``O``.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from tagger import schemes
from tagger.batching import Encoded, bucket_indices, encode, make_batch
from tagger.config import TrainConfig
from tagger.crf import span_positions
from tagger.data import open_binary
from tagger.distributed import SINGLE, World, gather
from tagger.errors import TaggerError
from tagger.io import ModelFiles, load_model, save_model
from tagger.model import Ensemble, SequenceTagger, build_model
from tagger.runtime import (
    precision_autocast,
    resolve_device,
    resolve_precision,
    training_precision,
    trim_memory,
)
from tagger.vocab import Vocab

FORMATS = ("conll", "jsonl")
CHUNK_LINES = 2000  # input lines tokenized and tagged together when streaming
SCORE_DECIMALS = 4  # entity scores in JSON, token scores in CoNLL
# Entity scores cost little next to the encoder (benchmarks/score_cost.py), so JSON
# lines carry them unless --no-scores; the CoNLL column is asked for with --scores.
DEFAULT_SCORES = {"jsonl": True, "conll": False}

# One entity of a sentence: (start, end, label, score), token offsets (end exclusive);
# score is None where it was not asked for.
Entity = tuple[int, int, str, float | None]


def check_confidence(value: float, name: str = "min_confidence") -> float:
    """``value`` if it is a probability threshold in [0, 1]; else a one-line error."""
    if not 0.0 <= value <= 1.0:  # NaN fails too
        raise TaggerError(f"{name} must be between 0 and 1, not {value}")
    return float(value)


class Prediction(NamedTuple):
    """What ``Tagger.tag`` returns, one item per sentence in each list."""

    tags: list[list[str]]  # IOB2
    probs: list[np.ndarray] | None  # with token_scores: each token's probability of its tag
    entities: list[list[Entity]] | None  # with entities: the mentions, in order


class Tagger:
    """A model with its vocabulary and config: what ``Tagger.load(folder)`` returns."""

    def __init__(
        self,
        model: SequenceTagger | Ensemble,
        config: TrainConfig,
        vocab: Vocab,
        metrics: dict | None = None,
        data: dict | None = None,
        temperature: float = 1.0,
        precision: str | None = None,
    ) -> None:
        """``precision``: ``auto``, ``fp32`` or ``bf16`` (``resolve_precision``), or None
        for the precision the model was trained in (``training_precision``), so that a
        model scored during training scores as it did before."""
        self.model = model.eval()
        # The precision it predicts in (fp32 or bf16) and why, for a log line.
        self.precision, self.precision_reason = (
            resolve_precision(precision, self.device)
            if precision is not None
            else (training_precision(self.device, config.precision), "as in training")
        )
        # Divides every score where probabilities are read (never the tags chosen): the
        # calibration ``tagger calibrate`` fits and the model folder records.
        self.temperature = temperature
        self.config = config
        self.vocab = vocab
        self.metrics = metrics or {}
        self.data = data or {}
        # Each label's IOB2 spelling (BIOES E- is I-, S- is B-): enough for CRF output,
        # which the constraints keep valid; softmax output is repaired token by token.
        self._iob2 = np.array([schemes.iob2_label(t) for t in vocab.labels], dtype=object)
        self._valid = config.decoder == "crf"
        self._reader = MentionReader.of(vocab.labels)
        self._nlp = None

    @classmethod
    def load(cls, path: str | Path, device: str = "auto", precision: str = "auto") -> Tagger:
        """The model in a folder, to predict in ``precision`` (``auto``, ``fp32`` or
        ``bf16``: ``resolve_precision``) on ``device``; a damaged folder, or weights that
        do not fit its config and vocabulary, give one ``TaggerError`` line naming the
        file."""
        from tagger.io import CONFIG, WEIGHTS

        files = load_model(path)
        weights = Path(path) / WEIGHTS
        try:  # shapes first, on the meta device: an edited config allocates nothing
            with torch.device("meta"):
                needed = build_model(files.config, files.vocab).state_dict()
        except (ValueError, RuntimeError) as err:
            reason = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise TaggerError(f"{Path(path) / CONFIG}: cannot build the model ({reason})") from None
        found = files.state
        shape = lambda t: "x".join(map(str, t.shape)) or "scalar"  # noqa: E731
        reasons = [
            f"{k} is {shape(found[k])}, the config and vocabulary need {shape(v)}"
            for k, v in needed.items()
            if k in found and found[k].shape != v.shape
        ]
        reasons += [f"no tensor {k}" for k in needed if k not in found]
        reasons += [f"unexpected tensor {k}" for k in found if k not in needed]
        if reasons:
            more = f"; {len(reasons) - 1} more" if len(reasons) > 1 else ""
            raise TaggerError(
                f"{weights}: the weights do not fit the vocabulary/config ({reasons[0]}{more})"
            )
        model = build_model(files.config, files.vocab)
        try:
            model.load_state_dict(files.state)
        except RuntimeError as err:
            reason = str(err).splitlines()[-1].strip() or type(err).__name__
            raise TaggerError(
                f"{weights}: the weights do not fit the vocabulary/config ({reason})"
            ) from None
        return cls(
            model.to(resolve_device(device)),
            files.config,
            files.vocab,
            files.metrics,
            files.data,
            files.temperature,
            precision,
        )

    def save(
        self, path: str | Path, overwrite: bool = False, extras: dict[str, bytes] | None = None
    ) -> Path:
        """Write the model folder (atomically); ``extras`` are more files to put in it."""
        files = ModelFiles(
            self.config,
            self.vocab,
            self.model.state_dict(),
            self.metrics,
            self.data,
            self.temperature,
        )
        return save_model(path, files, overwrite, extras=extras)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def precision_note(self) -> str:
        """``bf16 (auto: bf16 1.6x faster than fp32 here)``: what ``--verbose`` prints."""
        return f"{self.precision} ({self.precision_reason})"

    @property
    def entity_types(self) -> list[str]:
        return sorted({schemes.parse_tag(t)[1] for t in self.vocab.labels if t != schemes.OUTSIDE})

    # ------------------------------------------------------------------ tokens

    def tag(
        self,
        sentences: Sequence[Sequence[str]],
        batch_size: int = 256,
        *,
        entities: bool = True,
        scores: bool = True,
        token_scores: bool = False,
        min_confidence: float = 0.0,
    ) -> Prediction:
        """Tag token lists (an empty list gives empty results): IOB2 tags and, as
        asked, the entities (``scores``: with their probabilities) and each token's
        probability of its tag. Entities below ``min_confidence`` are dropped and their
        tokens tagged ``O``. Every ``predict*`` method is this one call."""
        check_confidence(min_confidence)
        # One pass over the input: a `datasets` column costs a format call per index.
        sentences = list(sentences)
        keep = [i for i, s in enumerate(sentences) if len(s)]
        tags: list[list[str]] = [[] for _ in sentences]
        probs = [np.zeros(0) for _ in sentences] if token_scores else None
        found: list[list[Entity]] | None = [[] for _ in sentences] if entities else None
        if keep:
            enc = encode(self.vocab, [sentences[i] for i in keep])
            done = self.predict_encoded(
                enc,
                batch_size,
                entities=entities,
                scores=scores,
                token_scores=token_scores,
                min_confidence=min_confidence,
            )
            for n, i in enumerate(keep):
                tags[i] = done.tags[n]
                if token_scores:
                    probs[i] = done.probs[n]
                if entities:
                    found[i] = done.entities[n]
        return Prediction(tags, probs, found)

    def predict(
        self,
        sentences: Sequence[Sequence[str]],
        batch_size: int = 256,
        min_confidence: float = 0.0,
    ) -> list[list[str]]:
        """Valid IOB2 tags for each token list (an empty list gives an empty list);
        entities below ``min_confidence`` are tagged ``O``."""
        return self.tag(
            sentences, batch_size, entities=False, scores=False, min_confidence=min_confidence
        ).tags

    def predict_with_scores(
        self,
        sentences: Sequence[Sequence[str]],
        batch_size: int = 256,
        scores: bool = True,
        min_confidence: float = 0.0,
    ) -> tuple[list[list[str]], list[np.ndarray] | None]:
        """IOB2 tags and, with ``scores``, each token's probability of its tag: the CRF
        marginal (or softmax probability) summed over the model's labels that print as
        that IOB2 tag (``B-X`` is ``B-X`` or ``S-X`` of a BIOES model). Softmax output
        that had to be repaired (an ``I-X`` opening a mention prints as ``B-X``) keeps
        the probability of the tag the model chose."""
        found = self.tag(
            sentences,
            batch_size,
            entities=False,
            scores=False,
            token_scores=scores,
            min_confidence=min_confidence,
        )
        return found.tags, found.probs

    def predict_spans(
        self,
        sentences: Sequence[Sequence[str]],
        batch_size: int = 256,
        min_confidence: float = 0.0,
    ) -> list[list[dict]]:
        """The entities of each token list: ``{"start", "end", "label", "score"}`` with
        token offsets (end exclusive) and the probability of exactly that span with that
        label (rounded to ``SCORE_DECIMALS``); those below ``min_confidence`` dropped."""
        found = self.tag(sentences, batch_size, min_confidence=min_confidence)
        return [
            [
                {"start": s, "end": e, "label": label, "score": round(p, SCORE_DECIMALS)}
                for s, e, label, p in ents
            ]
            for ents in found.entities
        ]

    def predict_encoded(
        self,
        enc: Encoded,
        batch_size: int = 256,
        world: World = SINGLE,
        *,
        entities: bool = False,
        scores: bool = False,
        token_scores: bool = False,
        min_confidence: float = 0.0,
    ) -> Prediction:
        """``tag`` for an already encoded split (all of it, also when ``world`` shares
        the work between training processes)."""
        decoded = decode_all(
            self.model,
            enc,
            self._reader,
            batch_size,
            self.device,
            world,
            entities=entities,
            scores=scores,
            token_scores=token_scores,
            min_confidence=min_confidence,
            temperature=self.temperature,
            precision=self.precision,
        )
        tags = [self._iob2[row].tolist() for row in decoded.ids]
        if not self._valid:
            tags = [schemes.to_iob2(t) for t in tags]
        return Prediction(tags, decoded.probs, decoded.entities)

    # ------------------------------------------------------------------ text

    @property
    def nlp(self):
        """The spaCy pipeline that tokenizes raw text: blank language + sentencizer."""
        if self._nlp is None:
            import spacy

            nlp = spacy.blank(self.config.lang)
            nlp.add_pipe("sentencizer")
            nlp.max_length = 10**8  # tokenizer and sentencizer only: no memory blow-up
            self._nlp = nlp
        return self._nlp

    def doc_entities(
        self, docs: Sequence, min_confidence: float = 0.0, scores: bool = True
    ) -> list[list[Entity]]:
        """Entities ``(start, end, label, score)`` of each spaCy ``Doc``, token indices into
        the doc (end exclusive), tagged sentence by sentence (``doc_sentences``) in one
        ``tag`` call; ``score`` is None without ``scores``."""
        sentences, owners = doc_sentences(docs)
        found = self.tag(
            [[t.text for t in s] for s in sentences], scores=scores, min_confidence=min_confidence
        )
        out: list[list[Entity]] = [[] for _ in docs]
        for tokens, ents, d in zip(sentences, found.entities, owners):
            for start, end, label, score in ents:
                out[d].append((tokens[start].i, tokens[end - 1].i + 1, label, score))
        return out

    def tag_docs(
        self, docs: Sequence, min_confidence: float = 0.0, scores: bool = True
    ) -> list[list[Entity]]:
        """``doc_entities`` with character offsets ``(start_char, end_char, label, score)``."""
        return [
            [(doc[s].idx, doc[e - 1].idx + len(doc[e - 1]), label, p) for s, e, label, p in ents]
            for doc, ents in zip(docs, self.doc_entities(docs, min_confidence, scores))
        ]

    def predict_text(self, text: str, min_confidence: float = 0.0) -> list[dict]:
        """Entities in raw text: ``{"text", "label", "start", "end", "score"}`` with
        character offsets; those below ``min_confidence`` dropped."""
        (spans,) = self.tag_docs([self.nlp(text)], min_confidence)
        return [entity_record(text[s:e], label, s, e, p) for s, e, label, p in spans]


def doc_sentences(docs: Sequence) -> tuple[list[list], list[int]]:
    """What the model tags in spaCy docs: each sentence's tokens less whitespace tokens
    (a sentence with none left is skipped), and for each sentence the index in ``docs``
    of the doc it is from. A doc without sentence boundaries is one sentence."""
    sentences, owners = [], []
    for d, doc in enumerate(docs):
        sents = doc.sents if doc.has_annotation("SENT_START") else [doc[:]]
        for sent in sents:
            tokens = [t for t in sent if not t.is_space]
            if tokens:
                sentences.append(tokens)
                owners.append(d)
    return sentences, owners


@dataclass(frozen=True)
class MentionReader:
    """How decoded label ids read as mentions, as tensors for the device.

    A token opens a mention when its label's IOB2 spelling is ``B-`` or its type differs
    from the previous token's, and continues it otherwise (``O`` is outside): the
    boundaries ``schemes.spans`` finds in the tags ``Tagger`` prints, also for softmax
    output it has to repair, but read from the whole batch at once on the device.
    """

    types: tuple[str, ...]  # entity types; type id t > 0 is types[t - 1]
    type_id: torch.Tensor  # (K,) int64: each label's type id, 0 for O
    opens: torch.Tensor  # (K,) bool: the IOB2 spelling is B-
    same_iob2: torch.Tensor  # (K, K) float: both labels print as the same IOB2 tag
    outside: int  # the id of O

    @classmethod
    def of(cls, labels: Sequence[str]) -> MentionReader:
        iob2 = [schemes.iob2_label(t) for t in labels]
        types = tuple(sorted({t[2:] for t in iob2 if t != schemes.OUTSIDE}))
        return cls(
            types=types,
            type_id=torch.tensor(
                [0 if t == schemes.OUTSIDE else 1 + types.index(t[2:]) for t in iob2]
            ),
            opens=torch.tensor([t.startswith("B-") for t in iob2]),
            same_iob2=torch.tensor([[a == b for b in iob2] for a in iob2], dtype=torch.float32),
            outside=list(labels).index(schemes.OUTSIDE),
        )

    def to(self, device: torch.device) -> MentionReader:
        move = lambda t: t.to(device)  # noqa: E731
        return MentionReader(
            self.types, move(self.type_id), move(self.opens), move(self.same_iob2), self.outside
        )

    def mentions(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The mentions in label ids (B, T) under mask (B, T): (N, 3) int64 rows
        ``(sentence, start, end)``, end exclusive, in order."""
        kind = torch.where(mask, self.type_id[ids], 0)  # (B, T) type id, 0 outside
        before = torch.nn.functional.pad(kind, (1, 0))[:, :-1]  # the previous token's
        opens = (kind > 0) & (self.opens[ids] | (kind != before))
        breaks = ~((kind > 0) & ~opens)  # the token does not continue a mention
        steps = ids.size(1)
        positions = torch.arange(steps, device=ids.device)
        # For each position, the first break after it (steps if none): a reversed
        # running minimum of the break positions.
        at = torch.where(breaks, positions, steps)
        next_break = at.flip(1).cummin(1).values.flip(1)
        next_break = torch.cat([next_break[:, 1:], torch.full_like(at[:, :1], steps)], 1)
        rows, starts = opens.nonzero(as_tuple=True)
        return torch.stack([rows, starts, next_break[rows, starts]], 1)

    def drop(self, ids: torch.Tensor, spans: torch.Tensor) -> torch.Tensor:
        """``ids`` with every token of ``spans`` (N, 3) set to O."""
        cover = span_positions(spans[:, 1], spans[:, 2], ids.size(1)).long()  # (N, T)
        hit = torch.zeros_like(ids).index_add_(0, spans[:, 0], cover)
        return ids.masked_fill(hit > 0, self.outside)


@dataclass
class Decoded:
    """What ``decode_all`` finds, one item per sentence of the encoded split."""

    ids: list[np.ndarray]  # model label ids
    probs: list[np.ndarray] | None  # each token's probability of its (IOB2) tag
    entities: list[list[Entity]] | None


def decode_all(
    model: SequenceTagger | Ensemble,
    enc: Encoded,
    reader: MentionReader,
    batch_size: int = 256,
    device: torch.device | None = None,
    world: World = SINGLE,
    *,
    entities: bool = False,
    scores: bool = False,
    token_scores: bool = False,
    min_confidence: float = 0.0,
    temperature: float = 1.0,
    precision: str = "fp32",
) -> Decoded:
    """Best label ids per sentence of an encoded split, in input order; with
    ``entities`` the mentions (``reader``), ``scores`` their probabilities
    (``span_log_probs`` of the model's decoder), ``token_scores`` each token's
    probability of its tag (marginals). With ``min_confidence`` the mentions below it
    are set to O before anything else is read from the labels. ``temperature`` divides
    the scores the probabilities are read from (calibration), not those decoded.
    ``precision`` (fp32 or bf16, ``precision_autocast``) is the encoder's; the decoder
    always reads fp32 emissions.

    Every step runs on the whole batch on the device: the span probabilities take one
    forward-backward pass over the sentences with mentions; the token scores one
    over the batch. In a distributed run each rank decodes every ``world.size``-th
    batch and the results are gathered: the same batches as one process, so the same
    labels, exactly."""
    device = device or next(model.parameters()).device
    reader = reader.to(device)
    was_training = model.training
    model.eval()
    ids: list[np.ndarray] = [None] * len(enc)
    probs: list[np.ndarray] | None = [None] * len(enc) if token_scores else None
    found: list[list[Entity]] | None = [[] for _ in range(len(enc))] if entities else None
    lengths = enc.lengths
    chunks = bucket_indices(lengths, batch_size)[world.rank :: world.size]
    with torch.inference_mode(), precision_autocast(precision, device):
        for chunk in chunks:
            batch = make_batch(enc, chunk).to(device)
            emissions = model.emissions(batch)
            best = model.decoder.decode(emissions, batch.mask)
            if entities or min_confidence > 0:
                spans = reader.mentions(best, batch.mask)
                span_probs = None
                if scores or min_confidence > 0:
                    log_p = model.decoder.span_log_probs(
                        emissions, batch.mask, best, spans, temperature
                    )
                    span_probs = log_p.float().exp()
                if min_confidence > 0:
                    low = span_probs < min_confidence
                    best = reader.drop(best, spans[low])
                    spans, span_probs = spans[~low], span_probs[~low]
                if entities:
                    kinds = reader.type_id[best[spans[:, 0], spans[:, 1]]].cpu().tolist()
                    values = span_probs.cpu().tolist() if scores else [None] * len(kinds)
                    for (row, s, e), kind, p in zip(spans.cpu().tolist(), kinds, values):
                        found[batch.index[row]].append((s, e, reader.types[kind - 1], p))
            rows = best.cpu().numpy()
            if token_scores:
                marg = model.decoder.marginals(emissions, batch.mask, temperature)
                chosen = (marg * reader.same_iob2[best]).sum(2).float().clamp(0, 1)  # rounding
                chosen = chosen.cpu().numpy()
            for row, sent in enumerate(batch.index):
                ids[sent] = rows[row, : lengths[sent]]
                if token_scores:
                    probs[sent] = chosen[row, : lengths[sent]]
    model.train(was_training)
    if world.distributed:
        mine = [
            (s, ids[s], probs[s] if token_scores else None, found[s] if entities else None)
            for chunk in chunks
            for s in chunk
        ]
        for part in gather(mine, world):
            for sent, row, prob, ents in part:
                ids[sent] = row
                if token_scores:
                    probs[sent] = prob
                if entities:
                    found[sent] = ents
    return Decoded(ids, probs, found)


# ---------------------------------------------------------------------- files


def read_lines(source: str | Path, encoding: str = "utf-8") -> Iterator[str]:
    """Lines of a file (``-`` = stdin) without line ends; bad bytes name line and offset.

    A UTF-16/32 byte-order mark, gzip data, NUL bytes, undecodable bytes (with the
    likely encoding) and read errors are one line naming the file (and line)."""
    from tagger.data import codec_name, text_lines

    codec_name(encoding)  # an unknown encoding fails before the file is opened
    if str(source) == "-":
        name = "<stdin>"
        stream = getattr(sys.stdin, "buffer", sys.stdin)
        if stream is None:  # started with standard input closed
            raise TaggerError("<stdin>: cannot read: standard input is closed")
    else:
        name = str(source)
        stream = open_binary(source)  # closed below
    try:
        for line in text_lines(stream, name, encoding):
            yield line.rstrip("\r")
    finally:
        if name != "<stdin>":
            stream.close()


def _chunks(items: Iterable, size: int) -> Iterator[list]:
    chunk = []
    for item in items:
        chunk.append(item)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _pretokenized_sentences(lines: Iterable[str]) -> Iterator[list[str]]:
    """One token per line, blank lines between sentences (CoNLL-like, first column)."""
    tokens: list[str] = []
    for line in lines:
        fields = line.split()
        if fields:
            tokens.append(fields[0])
        elif tokens:
            yield tokens
            tokens = []
    if tokens:
        yield tokens


def entity_record(text: str, label: str, start: int, end: int, score: float | None) -> dict:
    """One entity as JSON output holds it; ``score`` (when known) to ``SCORE_DECIMALS``."""
    record = {"text": text, "label": label, "start": start, "end": end}
    if score is not None:
        record["score"] = round(score, SCORE_DECIMALS)
    return record


def text_record(text: str, spans: list[Entity]) -> dict:
    """The JSON record of a tagged raw text: ``spans`` are ``Tagger.tag_docs``' entities
    with character offsets into ``text``."""
    return {
        "text": text,
        "entities": [entity_record(text[s:e], label, s, e, p) for s, e, label, p in spans],
    }


def tokens_record(tokens: list[str], tags: list[str], entities: list[Entity] | None = None) -> dict:
    """The JSON record of a tagged token list; entity offsets count tokens. The
    ``entities`` of ``Tagger.tag`` carry their scores; without them they are read from
    the tags."""
    if entities is None:
        entities = [(s, e, label, None) for s, e, label in schemes.spans(tags)]
    return {
        "tokens": tokens,
        "tags": tags,
        "entities": [
            entity_record(" ".join(tokens[s:e]), label, s, e, p) for s, e, label, p in entities
        ],
    }


def _conll(sentences: list[list[str]], found: Prediction) -> str:
    """CoNLL text: token and tag per line (and with token scores, its probability)."""
    if found.probs is None:
        lines = (
            "".join(f"{t} {g}\n" for t, g in zip(toks, tags))
            for toks, tags in zip(sentences, found.tags)
        )
    else:
        lines = (
            "".join(f"{t} {g} {p:.{SCORE_DECIMALS}f}\n" for t, g, p in zip(toks, tags, probs))
            for toks, tags, probs in zip(sentences, found.tags, found.probs)
        )
    return "".join(block + "\n" for block in lines)


def predict_lines(
    tagger: Tagger,
    lines: Iterable[str],
    fmt: str = "jsonl",
    pretokenized: bool = False,
    scores: bool | None = None,
    min_confidence: float = 0.0,
) -> Iterator[str]:
    """Tag a stream of input lines; yields output text chunk by chunk.

    ``scores`` (default ``DEFAULT_SCORES[fmt]``): JSON lines give each entity its
    probability; CoNLL adds a column, each token's probability of its tag. Entities
    below ``min_confidence`` are left out (their tokens tagged O)."""
    if fmt not in FORMATS:
        raise TaggerError(f"unknown output format {fmt!r}; choose one of {', '.join(FORMATS)}")
    check_confidence(min_confidence)
    scores = DEFAULT_SCORES[fmt] if scores is None else scores
    conll = {"entities": False, "scores": False, "token_scores": scores}
    options = conll if fmt == "conll" else {"scores": scores}
    if pretokenized:
        for chunk in _chunks(_pretokenized_sentences(lines), CHUNK_LINES):
            trim_memory()
            found = tagger.tag(chunk, min_confidence=min_confidence, **options)
            if fmt == "conll":
                yield _conll(chunk, found)
            else:
                yield "".join(
                    json.dumps(tokens_record(toks, tags, ents), ensure_ascii=False) + "\n"
                    for toks, tags, ents in zip(chunk, found.tags, found.entities)
                )
        return
    for chunk in _chunks(lines, CHUNK_LINES):
        trim_memory()
        docs = list(tagger.nlp.pipe(chunk, batch_size=256))
        if fmt == "jsonl":
            spans = tagger.tag_docs(docs, min_confidence, scores)
            yield "".join(
                json.dumps(text_record(line, found), ensure_ascii=False) + "\n"
                for line, found in zip(chunk, spans)
            )
        else:
            sentences = [
                [t.text for t in sent if not t.is_space] for doc in docs for sent in doc.sents
            ]
            sentences = [s for s in sentences if s]
            yield _conll(sentences, tagger.tag(sentences, min_confidence=min_confidence, **options))
