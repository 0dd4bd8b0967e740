"""Running the app: ``serve`` checks the model and the address, then hands over to uvicorn.

With one worker the model checked is the model served. With several, uvicorn starts
them as fresh processes that each build the app (``worker_app``) from the settings
this process leaves in the environment and load their own copy of the model.
SIGTERM or Ctrl-C stops accepting connections, lets the requests in flight finish
(the batcher answers every job it holds) and exits 0.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import socket
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

from tagger.errors import TaggerError
from tagger.serve import Options, require_packages
from tagger.serve.model import load_served

if TYPE_CHECKING:
    from fastapi import FastAPI

ENVIRONMENT = "TAGGER_SERVE"  # JSON settings for the worker processes


def serve(
    model: str | Path,
    host: str = "127.0.0.1",
    port: int = 8000,
    workers: int = 1,
    options: Options | None = None,
    access_log: bool = True,
) -> None:
    """Serve ``model`` on ``host:port`` until SIGTERM or Ctrl-C. A missing package, a
    bad model or an address in use is one ``TaggerError`` line, before anything runs."""
    require_packages()
    import uvicorn

    from tagger.serve.app import create_app

    options = (options or Options()).check()
    if workers < 1:
        raise TaggerError(f"--workers must be 1 or more, not {workers}")
    if options.threads is None:
        options = Options(**{**asdict(options), "threads": default_threads(workers)})
    # a bad folder, or bf16 asked for where it cannot run, fails here, once
    served = load_served(model, options.device, options.precision)
    check_address(host, port)
    settings = dict(host=host, port=port, access_log=access_log, timeout_graceful_shutdown=None)
    previous = signal.signal(signal.SIGTERM, _stopped)
    try:
        if workers == 1:
            uvicorn.run(create_app(served, options), **settings)
            return
        del served  # each worker loads its own copy
        os.environ[ENVIRONMENT] = json.dumps({"model": str(model), "options": asdict(options)})
        uvicorn.run(f"{__name__}:worker_app", factory=True, workers=workers, **settings)
    finally:
        signal.signal(signal.SIGTERM, previous)


def default_threads(workers: int) -> int:
    """Torch threads per worker when ``--threads`` is not given: the cores shared out
    among the workers, less one for the event loop each, and at least one. Load test on
    2 cores (client and server, fp32): one thread served 5,401 words/s with batching and
    2,394 without, two threads 3,601 and 1,154; torch's second thread spun while the
    event loop waited for a core."""
    return max(1, (os.cpu_count() or 1) // workers - 1)


def _stopped(signum: int, frame: object) -> None:
    """SIGTERM outside uvicorn's own handling: uvicorn sends it to itself again once it
    has shut down gracefully (and before it starts, nothing is in flight), so it means
    a clean exit, status 0."""
    raise SystemExit(0)


def worker_app() -> FastAPI:
    """The app of one of several workers, from the settings ``serve`` left in the
    environment; it loads the model itself, ``/health`` answering 503 until then."""
    from tagger.serve.app import create_app

    settings = json.loads(os.environ[ENVIRONMENT])
    return create_app(settings["model"], Options(**settings["options"]))


def check_address(host: str, port: int) -> None:
    """A ``TaggerError`` line if ``host:port`` cannot be listened on (in use, no such
    address, a privileged port), rather than uvicorn's log lines."""
    if not 0 <= port <= 65535:
        raise TaggerError(f"--port must be from 0 to 65535, not {port}")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as err:
        raise TaggerError(f"cannot listen on {host}:{port}: {err.strerror}") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does
        try:
            sock.bind(address)
        except OSError as err:
            reason = err.strerror or str(err)
            in_use = err.errno == errno.EADDRINUSE
            hint = "; stop the server using it or choose another --port" if in_use else ""
            raise TaggerError(f"cannot listen on {host}:{port}: {reason}{hint}") from None
