"""The spaCy pipeline component ``tagger_ner``: a trained tagger that sets ``doc.ents``.

The factory is registered here and through the ``spacy_factories`` entry point, so
``spacy.load`` finds it in an exported pipeline without the user importing tagger.
A pipeline saved with ``nlp.to_disk`` holds the model folder's own files in the
component's folder; loading it never reads the folder the model was trained into.

This module deliberately has no ``from __future__ import annotations``: spaCy
validates factory arguments from the factory's runtime annotations.
"""

import tempfile
import warnings
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import spacy
import srsly
from spacy import displacy
from spacy.language import Language
from spacy.pipeline import Pipe
from spacy.tokens import Doc, Span
from spacy.training import Example

from tagger import __version__, schemes
from tagger.data import decoded_tags
from tagger.errors import TaggerError
from tagger.io import CONFIG, METRICS, VOCAB, WEIGHTS, check_replaceable, write_dir_with
from tagger.predict import Tagger, check_confidence
from tagger.runtime import PRECISIONS

ENTS_MODES = ("overwrite", "fill")
# ``pipe`` makes one model call per this many tokens at least: sorted by length, that many
# sentences fill full batches of similar lengths, where 256 one-sentence docs (spaCy's
# usual batch) cut into a few short, ragged ones (raw CoNLL-2003 test text: 3.6 s in
# calls of 256 docs, 2.9 s in calls of 32k tokens, one thread).
CALL_TOKENS = 32_768
# What ``predict`` finds in one doc: ``(start, end, label, confidence)`` per entity,
# ``start``/``end`` token indices into the doc (end exclusive), ``confidence`` the
# probability of exactly that span with that label (``Tagger.tag``).
DocEntities = list[tuple[int, int, str, float]]
# The model folder's files that loading reads: the keys of the to_bytes dict, and the
# only names from_bytes ever writes.
MODEL_FILES = (CONFIG, VOCAB, WEIGHTS, METRICS)

if not Span.has_extension("tagger_confidence"):
    Span.set_extension("tagger_confidence", default=None)


@Language.factory(
    "tagger_ner",
    default_config={
        "model": None,
        "ents_mode": "overwrite",
        "min_confidence": 0.0,
        "precision": "auto",
        "scorer": {"@scorers": "spacy.ner_scorer.v1"},
    },
    assigns=["doc.ents", "token.ent_iob", "token.ent_type", "span._.tagger_confidence"],
    default_score_weights={"ents_f": 1.0, "ents_p": 0.0, "ents_r": 0.0, "ents_per_type": None},
)
def make_tagger_ner(
    nlp: Language,
    name: str,
    model: str | None,
    ents_mode: str,
    min_confidence: float,
    precision: str,
    scorer: Callable | None,
) -> "TaggerNER":
    """spaCy factory: ``nlp.add_pipe("tagger_ner", config={"model": "models/tagger"})``."""
    return TaggerNER(
        name,
        model=model,
        ents_mode=ents_mode,
        min_confidence=min_confidence,
        precision=precision,
        scorer=scorer,
    )


class TaggerNER(Pipe):
    """Sets ``doc.ents`` (and so ``token.ent_iob_``/``ent_type_``) sentence by sentence.

    ``model`` is a model folder, loaded on first use or by ``nlp.initialize()``, not
    at construction: ``spacy.load`` builds the component from config.cfg and then
    fills it with ``from_disk``, so the folder named there must never be needed.
    ``ents_mode``: ``"overwrite"`` replaces the doc's entities, ``"fill"`` keeps them
    and adds ours only where they overlap none. ``min_confidence``: entities the model
    gives a lower probability are not set (their tokens stay outside). ``precision``:
    ``auto``, ``fp32`` or ``bf16``, resolved where the model is loaded
    (``Tagger.load``), so an exported pipeline picks what the machine it runs on does best.
    """

    def __init__(
        self,
        name: str = "tagger_ner",
        *,
        model: str | Path | None = None,
        ents_mode: str = "overwrite",
        min_confidence: float = 0.0,
        precision: str = "auto",
        scorer: Callable | None = None,
    ) -> None:
        if ents_mode not in ENTS_MODES:
            raise TaggerError(
                f"{name}: ents_mode must be one of {', '.join(ENTS_MODES)}, not {ents_mode!r}"
            )
        if precision not in PRECISIONS:
            raise TaggerError(
                f"{name}: precision must be one of {', '.join(PRECISIONS)}, not {precision!r}"
            )
        self.name = name
        self.model_path = Path(model) if model is not None else None
        self.ents_mode = ents_mode
        self.min_confidence = check_confidence(min_confidence, f"{name}: min_confidence")
        self.precision = precision
        self.scorer = scorer
        self._tagger: Tagger | None = None

    @property
    def tagger(self) -> Tagger:
        """The loaded tagger; reads ``model_path`` the first time it is needed."""
        if self._tagger is None:
            if self.model_path is None:
                raise TaggerError(
                    f"spaCy component {self.name!r} has no model: add it with "
                    f'config={{"model": "MODEL_FOLDER"}} or load a saved pipeline'
                )
            self._tagger = Tagger.load(self.model_path, precision=self.precision)
        return self._tagger

    @tagger.setter
    def tagger(self, tagger: Tagger) -> None:
        self._tagger = tagger

    @property
    def labels(self) -> tuple[str, ...]:
        """Entity types once a model is loaded, like an uninitialized spaCy component.

        Never loads: ``spacy.load`` reads ``nlp.meta`` (and so this) before
        ``from_disk``, when ``model_path`` may no longer exist.
        """
        return () if self._tagger is None else tuple(self._tagger.entity_types)

    def initialize(
        self, get_examples: Callable[[], Iterable] | None = None, *, nlp: Language | None = None
    ) -> None:
        """Load the model now, so a bad path fails at ``nlp.initialize()``; nothing to train."""
        self.tagger  # noqa: B018 - loads

    # ------------------------------------------------------------------ tagging

    # spaCy's ``TrainablePipe`` contract: ``predict`` computes without touching the
    # docs, ``set_annotations`` writes the result; both calls go through the error
    # handler (``nlp.set_error_handler``), which re-raises unless told otherwise.

    def __call__(self, doc: Doc) -> Doc:
        error_handler = self.get_error_handler()
        try:
            self.set_annotations([doc], self.predict([doc]))
        except Exception as err:
            error_handler(self.name, self, [doc], err)
        return doc  # also when the handler let an error pass: a pipeline needs the doc

    def pipe(self, stream: Iterable[Doc], *, batch_size: int = 128) -> Iterator[Doc]:
        """Tag the docs with one model call over all the sentences of each group of at
        least ``batch_size`` docs and ``CALL_TOKENS`` tokens (the stream's last group may
        hold fewer); the docs come out in order, each group when it is tagged."""
        error_handler = self.get_error_handler()
        for docs in _groups(stream, batch_size, CALL_TOKENS):
            try:
                self.set_annotations(docs, self.predict(docs))
                yield from docs
            except Exception as err:
                error_handler(self.name, self, docs, err)

    def predict(self, docs: Iterable[Doc]) -> list[DocEntities]:
        """The entities of each doc, ``(start, end, label, confidence)`` with token
        indices, from one model call over all the docs' sentences
        (``Tagger.doc_entities``, which ``Tagger.tag_docs`` reads too); those below
        ``min_confidence`` are left out; the docs are left unchanged."""
        return self.tagger.doc_entities(list(docs), self.min_confidence)

    def set_annotations(self, docs: Iterable[Doc], predictions: list[DocEntities]) -> None:
        """Set ``doc.ents`` (and ``span._.tagger_confidence``) from ``predict``'s output,
        replacing the doc's entities or, with ``ents_mode`` ``"fill"``, adding to them."""
        for doc, entities in zip(docs, predictions):
            spans = []
            for start, end, label, confidence in entities:
                span = Span(doc, start, end, label=label)
                span._.tagger_confidence = confidence
                spans.append(span)
            if self.ents_mode == "fill":
                taken = {i for ent in doc.ents for i in range(ent.start, ent.end)}
                spans = [*doc.ents, *(s for s in spans if taken.isdisjoint(range(s.start, s.end)))]
            doc.ents = sorted(spans, key=lambda s: s.start)

    # ------------------------------------------------------------ serialization
    # ``exclude`` is part of spaCy's contract (it passes ["vocab"]); the model
    # folder is one indivisible unit, so there is nothing else to leave out.

    def to_disk(self, path: str | Path, *, exclude: Iterable[str] = ()) -> None:
        """Write the model folder's files into ``path`` (replaced whole if it exists)."""
        self.tagger.save(path, overwrite=True)

    def from_disk(self, path: str | Path, *, exclude: Iterable[str] = ()) -> "TaggerNER":
        """Load the model folder ``to_disk`` wrote (spaCy calls this in ``spacy.load``)."""
        self._tagger = Tagger.load(path, precision=self.precision)
        return self

    def to_bytes(self, *, exclude: Iterable[str] = ()) -> bytes:
        """The model folder's files as a msgpack dict ``{file name: bytes}`` (no pickle)."""
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp) / "model"
            self.to_disk(folder)
            return srsly.msgpack_dumps({name: (folder / name).read_bytes() for name in MODEL_FILES})

    def from_bytes(self, bytes_data: bytes, *, exclude: Iterable[str] = ()) -> "TaggerNER":
        """Load what ``to_bytes`` wrote, with the checks of a model folder (checksum, ...)."""
        try:
            files = srsly.msgpack_loads(bytes_data)
        except ValueError as err:
            raise TaggerError(f"{self.name}: not serialized tagger_ner data ({err})") from None
        if not isinstance(files, dict) or sorted(files) != sorted(MODEL_FILES):
            raise TaggerError(
                f"{self.name}: serialized data must hold exactly {', '.join(MODEL_FILES)}"
            )
        with tempfile.TemporaryDirectory() as tmp:
            for name, data in files.items():
                (Path(tmp) / name).write_bytes(data)
            self._tagger = Tagger.load(tmp, precision=self.precision)
        return self


def _groups(stream: Iterable[Doc], docs: int, tokens: int) -> Iterator[list[Doc]]:
    """The stream in consecutive lists of at least ``docs`` docs holding at least
    ``tokens`` tokens (the last list whatever is left)."""
    group, held = [], 0
    for doc in stream:
        group.append(doc)
        held += len(doc)
        if len(group) >= docs and held >= tokens:
            yield group
            group, held = [], 0
    if group:
        yield group


# ---------------------------------------------------------------------- pipelines


def build_pipeline(
    tagger: Tagger,
    lang: str | None = None,
    ents_mode: str = "overwrite",
    min_confidence: float = 0.0,
) -> Language:
    """A blank spaCy pipeline (the model's language unless ``lang``), a sentencizer
    and ``tagger_ner`` holding ``tagger``: the tokenization the model was trained for."""
    lang = lang or tagger.config.lang
    try:
        nlp = spacy.blank(lang)
    except ImportError:
        raise TaggerError(f"spaCy has no language {lang!r}") from None
    nlp.add_pipe("sentencizer")
    config = {"ents_mode": ents_mode, "min_confidence": min_confidence}
    component = nlp.add_pipe("tagger_ner", config=config)
    component.tagger = tagger  # config keeps model = null: the weights travel with nlp
    return nlp


def export_spacy(
    model_dir: str | Path,
    out_dir: str | Path,
    lang: str | None = None,
    overwrite: bool = False,
) -> Path:
    """Write a spaCy pipeline folder for ``spacy.load``: tokenizer, sentencizer, tagger_ner.

    The folder is self-contained (the model's files are copied in) and written whole
    into a temporary sibling first, so a failure never leaves half a pipeline.
    """
    out = Path(out_dir)
    check_replaceable(out, ("spacy",), overwrite, "output folder")
    # Only its files are written; the pipeline keeps precision "auto", for where it runs.
    tagger = Tagger.load(model_dir, precision="fp32")
    nlp = build_pipeline(tagger, lang)
    cfg = tagger.config
    nlp.meta.update(
        name="tagger_ner",
        version=__version__,
        description=(
            f"Named-entity tagger ({cfg.cell}, {cfg.decoder} decoder) exported from "
            f"{Path(model_dir).name} by tagger {__version__}: "
            f"{', '.join(tagger.entity_types)}"
        ),
    )
    write_dir_with(out, nlp.to_disk, f"the pipeline to {out}")
    return out


# ---------------------------------------------------------------------- scoring, display


def spacy_scores(nlp: Language, dataset: Any, batch_size: int = 256) -> dict:
    """``nlp.evaluate`` on a split with ``tokens`` and ``ner_tags`` (ClassLabel).

    Each sentence is one doc on its gold tokens, marked as one sentence so the
    sentencizer keeps it whole: the model sees exactly what ``tagger.evaluate``
    gives it, and spaCy's entity scores can be set beside seqeval's.
    """
    examples = []
    for words, tags in zip(dataset["tokens"], decoded_tags(dataset)):
        if not words:
            continue
        starts = [True] + [False] * (len(words) - 1)
        predicted = Doc(nlp.vocab, words=words, sent_starts=starts)
        reference = Doc(nlp.vocab, words=words, sent_starts=starts, ents=schemes.to_iob2(tags))
        examples.append(Example(predicted, reference))
    return nlp.evaluate(examples, batch_size=batch_size)


def render_html(docs: Iterable[Doc]) -> str:
    """A standalone displaCy page of the docs' entities."""
    with warnings.catch_warnings():
        # W006 "no entities to visualize": a doc without entities is normal here.
        warnings.filterwarnings("ignore", message=r"\[W006\]")
        return displacy.render(list(docs), style="ent", page=True, jupyter=False)
