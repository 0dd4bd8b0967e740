"""``tagger serve``: a model over HTTP (FastAPI + uvicorn, the ``serve`` extra).

    from tagger.serve import Options, create_app, serve
    app = create_app("models/tagger")          # an ASGI app: uvicorn, TestClient, ...
    serve("models/tagger", port=8000)          # or run it, like `tagger serve`

``POST /v1/entities`` answers with the records of ``tagger predict --format jsonl``;
requests that arrive together share one model call (``batcher``), which runs in one
thread beside the event loop. ``Options`` holds the limits and the batching settings.
This package imports without fastapi; ``create_app`` and ``serve`` need it.
"""

from __future__ import annotations

import importlib
import math
from dataclasses import dataclass

from tagger.errors import TaggerError

INSTALL = 'pip install "tagger[serve]"'


@dataclass(frozen=True)
class Options:
    """How a server runs: device and threads, batching, and the limits on a request."""

    device: str = "auto"
    precision: str = "auto"  # tagger.runtime.PRECISIONS
    threads: int | None = None  # torch threads (None: torch's default)
    batching: bool = True  # False: one model call per request
    batch_wait_ms: float = 5.0  # how long the first request of a batch waits for others
    max_batch_sentences: int = 64  # texts or token lists in one model call
    max_body_bytes: int = 1_000_000
    max_texts: int = 1000  # texts or token lists in one request
    max_chars: int = 100_000  # characters of all of a request's texts or tokens
    body_timeout: float = 10.0  # seconds a client may take to send its body

    def check(self) -> Options:
        """``self`` if every setting is in range; else one ``TaggerError`` naming the flag."""
        from tagger.runtime import PRECISIONS

        counts = {
            "--max-batch-sentences": self.max_batch_sentences,
            "--max-body-bytes": self.max_body_bytes,
            "--max-texts": self.max_texts,
            "--max-chars": self.max_chars,
        }
        for flag, value in counts.items():
            if value < 1:
                raise TaggerError(f"{flag} must be 1 or more, not {value}")
        if self.threads is not None and self.threads < 1:
            raise TaggerError(f"--threads must be 1 or more, not {self.threads}")
        if self.precision not in PRECISIONS:
            raise TaggerError(
                f"--precision must be one of {', '.join(PRECISIONS)}, not {self.precision!r}"
            )
        if not (math.isfinite(self.batch_wait_ms) and 0 <= self.batch_wait_ms <= 1000):
            raise TaggerError(f"--batch-wait-ms must be from 0 to 1000, not {self.batch_wait_ms}")
        if not (math.isfinite(self.body_timeout) and self.body_timeout > 0):
            raise TaggerError(f"--body-timeout must be seconds above 0, not {self.body_timeout}")
        return self

    @property
    def batch_items(self) -> int:
        """Most texts or token lists the batcher puts in one call (1: no batching)."""
        return self.max_batch_sentences if self.batching else 1

    @property
    def batch_wait(self) -> float:
        """Seconds the batcher waits for more requests (0: no batching)."""
        return self.batch_wait_ms / 1000 if self.batching else 0.0


def require_packages() -> None:
    """One ``TaggerError`` line saying how to install what the server needs, if missing."""
    missing = []
    for name in ("fastapi", "uvicorn"):
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise TaggerError(f"tagger serve needs {' and '.join(missing)} (not installed): {INSTALL}")


def __getattr__(name: str):
    if name == "create_app":
        from tagger.serve.app import create_app

        return create_app
    if name == "serve":
        from tagger.serve.server import serve

        return serve
    raise AttributeError(f"module 'tagger.serve' has no attribute {name!r}")
