"""Shared fixtures: tiny CoNLL corpora written to tmp folders and one small trained model.

Torch is pinned to one intra-op thread: on a small, busy machine the default (one
thread per core) makes these tiny models train many times slower.
"""

from __future__ import annotations

import os
import random
import signal
import sys
from pathlib import Path

# No test may reach the network; hub tests monkeypatch `datasets.load_dataset`.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")  # inherited by CLI subprocesses too
# `auto` precision is fp32 here, as in training, so that scores compare with training's
# and with fp32 sums on any CPU; tests/test_precision.py unsets it to test `auto` itself.
os.environ.setdefault("TAGGER_PRECISION", "fp32")

import pytest  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402

# No example database (it would litter the checkout); no deadline (torch warms up slowly).
settings.register_profile(
    "tagger", deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile("tagger")

REPO = Path(__file__).resolve().parents[1]
CONLL2003 = Path(__file__).resolve().parents[2] / "shared/data/conll2003"

# Tiny but learnable: every name always carries the same type.
PEOPLE = ["John Smith", "Mary Jones", "Angela Merkel", "Pedro Alvarez", "Wei Chen", "Anna Berg"]
PLACES = ["Paris", "Berlin", "New York", "Tokyo", "Madrid", "Oslo"]
ORGS = ["Acme Corp", "Globex", "United Nations", "Initech", "Red Cross"]
TEMPLATES = [
    "{PER} visited {LOC} on Monday .",
    "{PER} works for {ORG} in {LOC} .",
    "{ORG} opened an office in {LOC} .",
    "The weather in {LOC} was fine .",
    "{PER} met {PER} yesterday .",
    "Shares of {ORG} rose 5 percent .",
    "Nothing happened today .",
]


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "slow: reads the real CoNLL-2003 corpus in ../shared (skipped when absent)"
    )


def make_sentences(
    n: int, seed: int, templates: list[str] = TEMPLATES, pools: dict | None = None
) -> list[tuple[list[str], list[str]]]:
    """``n`` synthetic IOB2 sentences from ``templates`` (``{TYPE}`` slots filled from
    ``pools``; by default the templates and names above)."""
    rng = random.Random(seed)
    pools = pools or {"PER": PEOPLE, "LOC": PLACES, "ORG": ORGS}
    out = []
    for _ in range(n):
        tokens, tags = [], []
        for word in rng.choice(templates).split():
            if word.startswith("{"):
                etype = word[1:-1]
                name = rng.choice(pools[etype]).split()
                tokens += name
                tags += [f"B-{etype}"] + [f"I-{etype}"] * (len(name) - 1)
            else:
                tokens.append(word)
                tags.append("O")
        out.append((tokens, tags))
    return out


def conll_text(sentences, docstart: bool = True) -> str:
    """Two-column CoNLL text, written independently of ``tagger.data.format_conll``."""
    parts = ["-DOCSTART- O\n\n"] if docstart else []
    for tokens, tags in sentences:
        parts.append("".join(f"{t} {g}\n" for t, g in zip(tokens, tags)) + "\n")
    return "".join(parts)


def write_corpus(folder: Path, n_train=60, n_dev=15, n_test=15, seed=0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, n, s in (
        ("train.txt", n_train, seed),
        ("dev.txt", n_dev, seed + 1),
        ("test.txt", n_test, seed + 2),
    ):
        (folder / name).write_text(conll_text(make_sentences(n, s)), encoding="utf-8")
    return folder


def tiny_config(**overrides):
    """A TrainConfig for models that train in a second or two."""
    from tagger.config import TrainConfig

    values = dict(
        hidden_size=16,
        word_dim=16,
        char_dim=8,
        char_hidden=8,
        casing_dim=4,
        dropout=0.0,
        word_dropout=0.0,
        unk_replace=0.0,
        batch_size=8,
        lr=0.02,
        max_epochs=2,
        patience=5,
        device="cpu",
        threads=1,
    )
    values.update(overrides)
    return TrainConfig(**values)


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread():
    import torch

    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory) -> Path:
    """A folder with train.txt / dev.txt / test.txt of synthetic IOB2 sentences."""
    return write_corpus(tmp_path_factory.mktemp("tiny_corpus"))


@pytest.fixture(scope="session")
def trained_model(tmp_path_factory, tiny_corpus) -> Path:
    """A small CRF tagger trained once on the tiny corpus (its model folder)."""
    from tagger.training import train

    out = tmp_path_factory.mktemp("models") / "crf"
    config = tiny_config(data=str(tiny_corpus), output=str(out), decoder="crf", max_epochs=8)
    return train(config, progress=False)


@pytest.fixture(scope="session")
def tagger_model(trained_model):
    from tagger.predict import Tagger

    return Tagger.load(trained_model, device="cpu")


@pytest.fixture(scope="session")
def bundled_dir() -> Path:
    from tagger.data import bundled_data_dir

    folder = bundled_data_dir()
    if not all((folder / f).is_file() for f in ("train.txt", "dev.txt", "test.txt")):
        pytest.skip(f"the bundled corpus is not in {folder}")
    return folder


def default_sigint() -> None:
    """``preexec_fn`` for a child that must see Ctrl-C: a shell starts background jobs
    with SIGINT ignored, and a child inherits that (Python then never raises
    KeyboardInterrupt), so tests of Ctrl-C restore the default first."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.fixture
def python() -> str:
    return sys.executable


# --------------------------------------------------------------------------- validators
# Written from the scheme definitions, independently of tagger.schemes.


def _split(tag: str) -> tuple[str, str | None]:
    return ("O", None) if tag == "O" else (tag[0], tag[2:])


def is_valid_iob2(tags) -> bool:
    """IOB2: an ``I-X`` only directly after ``B-X`` or ``I-X``."""
    prev = ("O", None)
    for tag in tags:
        prefix, etype = _split(tag)
        if prefix not in "BIO":
            return False
        if prefix == "I" and not (prev[0] in "BI" and prev[1] == etype):
            return False
        prev = (prefix, etype)
    return True


def is_valid_bioes(tags) -> bool:
    """BIOES: ``B-X (I-X)* E-X`` or ``S-X``; nothing left open at the end."""
    open_type = None
    for tag in tags:
        prefix, etype = _split(tag)
        if open_type is None:
            if prefix in ("I", "E"):
                return False
            if prefix == "B":
                open_type = etype
        else:
            if prefix not in ("I", "E") or etype != open_type:
                return False
            if prefix == "E":
                open_type = None
    return open_type is None
