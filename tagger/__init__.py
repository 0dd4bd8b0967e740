"""tagger: recurrent neural taggers for named-entity recognition.

The public API is imported lazily, so ``tagger --help`` does not pay for torch/spaCy::

    import tagger
    data = tagger.load_data("conll2003")            # DatasetDict (tokens, ner_tags)
    path = tagger.train(tagger.TrainConfig(data="data/"))
    model = tagger.Tagger.load(path)
    model.predict_text("Angela Merkel visited Paris.")
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "load_data": "tagger.data",
    "Vocab": "tagger.vocab",
    "TrainConfig": "tagger.config",
    "train": "tagger.training",
    "Tagger": "tagger.predict",
    "evaluate": "tagger.evaluation",
    "TaggerError": "tagger.errors",
}

__all__ = [*_EXPORTS, "__version__"]


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'tagger' has no attribute {name!r}")
