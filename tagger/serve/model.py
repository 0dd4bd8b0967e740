"""The model a server holds: a tagger and the spaCy pipeline that tokenizes its texts.

``tagger serve`` takes what ``tagger predict --model`` takes (a model folder, single
or ensemble, both read by ``Tagger.load``) and also a spaCy pipeline folder written by
``tagger export-spacy``: its ``tagger_ner`` component's folder is a model folder, and the
rest of the pipeline (tokenizer, sentencizer) splits the texts. The records are those
of ``tagger predict --format jsonl``, built by the same functions.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tagger.errors import TaggerError
from tagger.io import CONFIG, read_header
from tagger.predict import Tagger, text_record, tokens_record

SPACY_FILES = ("config.cfg", "meta.json")  # what makes a folder a spaCy pipeline
FACTORY = "tagger_ner"
TEXTS, TOKENS = "texts", "tokens"  # the two kinds of input


@dataclass
class ServedModel:
    """A loaded tagger, the pipeline that splits raw text for it, and where it came from."""

    tagger: Tagger
    nlp: Any  # spacy.Language: tokenizer and sentencizer
    path: Path  # what was asked for
    kind: str  # "model", "ensemble" or "spacy"
    format_version: int  # of the model folder (the spaCy component's)

    def records(self, kind: str, items: Sequence, min_confidence: float = 0.0) -> list[dict]:
        """One ``tagger predict --format jsonl`` record per text (``TEXTS``: text and
        entities with character offsets) or per token list (``TOKENS``: tokens, IOB2
        tags, entities with token offsets), from one ``Tagger.tag`` call over them all."""
        if kind == TOKENS:
            found = self.tagger.tag(items, min_confidence=min_confidence)
            return [
                tokens_record(list(tokens), tags, ents)
                for tokens, tags, ents in zip(items, found.tags, found.entities)
            ]
        docs = list(self.nlp.pipe(items, batch_size=256))
        spans = self.tagger.tag_docs(docs, min_confidence)
        return [text_record(text, found) for text, found in zip(items, spans)]

    def info(self) -> dict:
        """What ``GET /v1/model`` says about the model: labels, scheme, the architecture,
        the training scores of ``metrics.json`` and the folder's format version."""
        tagger = self.tagger
        config = tagger.config
        metrics = tagger.metrics
        return {
            "path": str(self.path),
            "kind": self.kind,
            "format_version": self.format_version,
            "labels": list(tagger.vocab.labels),
            "entity_types": tagger.entity_types,
            "scheme": config.scheme,
            "lang": config.lang,
            "config": {
                **dataclasses.asdict(config.model),
                "words": len(tagger.vocab.words),
                "data": config.data,
                "calibration_temperature": tagger.temperature,
            },
            "scores": {
                key: metrics.get(key) for key in ("best_epoch", "dev_f1", "test_f1", "dev", "test")
            },
            "device": str(tagger.device),
            "precision": tagger.precision,
            "precision_reason": tagger.precision_reason,
        }


def load_served(path: str | Path, device: str = "auto", precision: str = "auto") -> ServedModel:
    """The model at ``path``, to run on ``device`` in ``precision``: a model folder
    (``Tagger.load``: one ``TaggerError`` line for a missing or damaged one) or a spaCy
    pipeline folder holding a ``tagger_ner``."""
    path = Path(path)
    if not all((path / name).is_file() for name in SPACY_FILES) or (path / CONFIG).exists():
        tagger = Tagger.load(path, device=device, precision=precision)
        kind = "ensemble" if tagger.config.ensemble > 1 else "model"
        return ServedModel(tagger, tagger.nlp, path, kind, _version(path))
    import spacy

    try:
        components = spacy.util.load_config(path / "config.cfg")["components"]
        names = [n for n, c in components.items() if c.get("factory") == FACTORY]
        if not names:
            raise TaggerError(f"{path}: the spaCy pipeline has no {FACTORY} component")
        # The pipeline without our component splits the texts; the component's own
        # folder is a model folder, loaded on the device asked for.
        nlp = spacy.load(path, exclude=names)
    except (OSError, ValueError, KeyError) as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise TaggerError(f"{path}: cannot load the spaCy pipeline ({reason})") from None
    folder = path / names[0]
    tagger = Tagger.load(folder, device=device, precision=precision)
    return ServedModel(tagger, nlp, path, "spacy", _version(folder))


def _version(folder: Path) -> int:
    return read_header(folder)["format_version"]
