"""A trained tagger in use: token lists or raw text in, tags and entity spans out.

Raw text is tokenized by a blank spaCy pipeline of the model's language plus a
sentencizer; files are read, tagged and written in chunks so memory stays flat.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np
import torch

from tagger import schemes
from tagger.batching import Encoded, bucket_indices, encode, make_batch
from tagger.config import TrainConfig
from tagger.data import open_binary
from tagger.distributed import SINGLE, World, gather
from tagger.errors import TaggerError
from tagger.io import ModelFiles, load_model, save_model
from tagger.model import Ensemble, SequenceTagger, build_model
from tagger.runtime import autocast, resolve_device, trim_memory
from tagger.vocab import Vocab

FORMATS = ("conll", "jsonl")
CHUNK_LINES = 2000  # input lines tokenized and tagged together when streaming


class Tagger:
    """A model with its vocabulary and config: what ``Tagger.load(folder)`` returns."""

    def __init__(
        self,
        model: SequenceTagger | Ensemble,
        config: TrainConfig,
        vocab: Vocab,
        metrics: dict | None = None,
        data: dict | None = None,
    ) -> None:
        self.model = model.eval()
        self.config = config
        self.vocab = vocab
        self.metrics = metrics or {}
        self.data = data or {}
        # Each label's IOB2 spelling (BIOES E- is I-, S- is B-): enough for CRF output,
        # which the constraints keep valid; softmax output is repaired token by token.
        self._iob2 = np.array([schemes.iob2_label(t) for t in vocab.labels], dtype=object)
        self._valid = config.decoder == "crf"
        self._nlp = None

    @classmethod
    def load(cls, path: str | Path, device: str = "auto") -> Tagger:
        """The model in a folder; a damaged folder, or weights that do not fit its config
        and vocabulary, give one ``TaggerError`` line naming the file."""
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
            model.to(resolve_device(device)), files.config, files.vocab, files.metrics, files.data
        )

    def save(
        self, path: str | Path, overwrite: bool = False, extras: dict[str, bytes] | None = None
    ) -> Path:
        """Write the model folder (atomically); ``extras`` are more files to put in it."""
        files = ModelFiles(
            self.config, self.vocab, self.model.state_dict(), self.metrics, self.data
        )
        return save_model(path, files, overwrite, extras=extras)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def entity_types(self) -> list[str]:
        return sorted({schemes.parse_tag(t)[1] for t in self.vocab.labels if t != schemes.OUTSIDE})

    # ------------------------------------------------------------------ tokens

    def predict(self, sentences: Sequence[Sequence[str]], batch_size: int = 256) -> list[list[str]]:
        """Valid IOB2 tags for each token list (an empty list gives an empty list)."""
        return self.predict_with_scores(sentences, batch_size, scores=False)[0]

    def predict_with_scores(
        self, sentences: Sequence[Sequence[str]], batch_size: int = 256, scores: bool = True
    ) -> tuple[list[list[str]], list[np.ndarray] | None]:
        """IOB2 tags and, with ``scores``, each token's probability of its tag.

        The probability is the CRF marginal, or the softmax probability.
        """
        # One pass over the input: a `datasets` column costs a format call per index.
        sentences = list(sentences)
        keep = [i for i, s in enumerate(sentences) if len(s)]
        tags: list[list[str]] = [[] for _ in sentences]
        probs: list[np.ndarray] | None = [np.zeros(0) for _ in sentences] if scores else None
        if not keep:
            return tags, probs
        enc = encode(self.vocab, [sentences[i] for i in keep])
        found, best = self.predict_encoded(enc, batch_size, scores)
        for n, i in enumerate(keep):
            tags[i] = found[n]
            if scores:
                probs[i] = best[n]
        return tags, probs

    def predict_encoded(
        self, enc: Encoded, batch_size: int = 256, scores: bool = False, world: World = SINGLE
    ) -> tuple[list[list[str]], list[np.ndarray] | None]:
        """IOB2 tags (and tag probabilities) for an already encoded split (all of it, also
        when ``world`` shares the work between training processes)."""
        ids, best = decode_all(self.model, enc, batch_size, self.device, scores, world)
        tags = [self._iob2[row].tolist() for row in ids]
        if not self._valid:
            tags = [schemes.to_iob2(t) for t in tags]
        return tags, best

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

    def tag_docs(self, docs: Sequence) -> list[list[tuple[int, int, str]]]:
        """Entity spans ``(start_char, end_char, label)`` for each spaCy ``Doc``, tagged
        sentence by sentence (``doc_sentences``)."""
        sentences, owners = doc_sentences(docs)
        tags = self.predict([[t.text for t in s] for s in sentences])
        found: list[list[tuple[int, int, str]]] = [[] for _ in docs]
        for tokens, tag_list, d in zip(sentences, tags, owners):
            for start, end, label in schemes.spans(tag_list):
                last = tokens[end - 1]
                found[d].append((tokens[start].idx, last.idx + len(last.text), label))
        return found

    def predict_text(self, text: str) -> list[dict]:
        """Entities in raw text: ``{"text", "label", "start", "end"}`` with character offsets."""
        (spans,) = self.tag_docs([self.nlp(text)])
        return [{"text": text[s:e], "label": label, "start": s, "end": e} for s, e, label in spans]


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


def decode_all(
    model: SequenceTagger | Ensemble,
    enc: Encoded,
    batch_size: int = 256,
    device: torch.device | None = None,
    scores: bool = False,
    world: World = SINGLE,
) -> tuple[list[np.ndarray], list[np.ndarray] | None]:
    """Best label ids per sentence of an encoded split, in input order, and with
    ``scores`` each chosen label's probability (CRF marginal or softmax).

    In a distributed run each rank decodes every ``world.size``-th batch and the results
    are gathered: the same batches as one process, so the same labels, exactly."""
    device = device or next(model.parameters()).device
    was_training = model.training
    model.eval()
    ids: list[np.ndarray] = [None] * len(enc)
    probs: list[np.ndarray] | None = [None] * len(enc) if scores else None
    lengths = enc.lengths
    chunks = bucket_indices(lengths, batch_size)[world.rank :: world.size]
    with torch.inference_mode(), autocast(device):
        for chunk in chunks:
            batch = make_batch(enc, chunk).to(device)
            emissions = model.emissions(batch)
            best = model.decoder.decode(emissions, batch.mask)
            rows = best.cpu().numpy()
            if scores:
                marg = model.decoder.marginals(emissions, batch.mask)
                chosen = marg.gather(2, best.unsqueeze(2)).squeeze(2).float().cpu().numpy()
            for row, sent in enumerate(batch.index):
                ids[sent] = rows[row, : lengths[sent]]
                if scores:
                    probs[sent] = chosen[row, : lengths[sent]]
    model.train(was_training)
    if world.distributed:
        mine = [(s, ids[s], probs[s] if scores else None) for chunk in chunks for s in chunk]
        for part in gather(mine, world):
            for sent, row, prob in part:
                ids[sent] = row
                if scores:
                    probs[sent] = prob
    return ids, probs


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


def tokens_record(tokens: list[str], tags: list[str]) -> dict:
    """The JSON record of a tagged token list; entity offsets count tokens."""
    return {
        "tokens": tokens,
        "tags": tags,
        "entities": [
            {"text": " ".join(tokens[s:e]), "label": label, "start": s, "end": e}
            for s, e, label in schemes.spans(tags)
        ],
    }


def predict_lines(
    tagger: Tagger, lines: Iterable[str], fmt: str = "jsonl", pretokenized: bool = False
) -> Iterator[str]:
    """Tag a stream of input lines; yields output text chunk by chunk."""
    if fmt not in FORMATS:
        raise TaggerError(f"unknown output format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if pretokenized:
        for chunk in _chunks(_pretokenized_sentences(lines), CHUNK_LINES):
            trim_memory()
            tags = tagger.predict(chunk)
            if fmt == "conll":
                yield "".join(
                    "".join(f"{t} {g}\n" for t, g in zip(toks, tg)) + "\n"
                    for toks, tg in zip(chunk, tags)
                )
            else:
                yield "".join(
                    json.dumps(tokens_record(toks, tg), ensure_ascii=False) + "\n"
                    for toks, tg in zip(chunk, tags)
                )
        return
    for chunk in _chunks(lines, CHUNK_LINES):
        trim_memory()
        docs = list(tagger.nlp.pipe(chunk, batch_size=256))
        if fmt == "jsonl":
            spans = tagger.tag_docs(docs)
            yield "".join(
                json.dumps(
                    {
                        "text": line,
                        "entities": [
                            {"text": line[s:e], "label": lab, "start": s, "end": e}
                            for s, e, lab in found
                        ],
                    },
                    ensure_ascii=False,
                )
                + "\n"
                for line, found in zip(chunk, spans)
            )
        else:
            sentences = [
                [t.text for t in sent if not t.is_space] for doc in docs for sent in doc.sents
            ]
            sentences = [s for s in sentences if s]
            tags = tagger.predict(sentences)
            yield "".join(
                "".join(f"{t} {g}\n" for t, g in zip(toks, tg)) + "\n"
                for toks, tg in zip(sentences, tags)
            )
