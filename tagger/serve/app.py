"""The HTTP API and its page, as one FastAPI app: ``create_app``.

Every answer is JSON (the page aside), and every error is ``{"error": "..."}`` with its
status: 413 for a body, a number of texts or of characters over the limits, 408 for a
body that takes too long to arrive, 422 for anything malformed, 503 while the model
loads. uvicorn has no limit of its own on the size of a body or the time it takes, so
``BodyLimit`` counts the bytes as they arrive and keeps the time.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from html import escape
from importlib.resources import files
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic_core import PydanticCustomError
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tagger import __version__
from tagger.errors import TaggerError
from tagger.report import PALETTE, TYPE_COLOURS
from tagger.runtime import set_threads
from tagger.serve import Options
from tagger.serve.batcher import Batcher
from tagger.serve.model import TEXTS, TOKENS, ServedModel, load_served

logger = logging.getLogger("uvicorn.error")  # where uvicorn says what the server does

# The page may run its own inline script and styles and call this server, nothing else.
CSP = (
    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
    "img-src data:; connect-src 'self'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)
PAGE = files("tagger.serve").joinpath("page.html")


class EntitiesRequest(BaseModel):
    """The body of ``POST /v1/entities``: raw ``texts`` or pre-tokenized ``tokens``."""

    model_config = ConfigDict(extra="forbid", strict=True)

    texts: list[str] | None = Field(None, min_length=1, description="Raw texts to tag.")
    tokens: list[list[str]] | None = Field(
        None, min_length=1, description="Pre-tokenized sentences: a list of token lists."
    )
    min_confidence: float = Field(
        0.0, ge=0.0, le=1.0, allow_inf_nan=False, description="Leave out entities below it."
    )

    @model_validator(mode="after")
    def _one_input(self) -> EntitiesRequest:
        if (self.texts is None) == (self.tokens is None):
            raise PydanticCustomError(
                "one_input", "give texts (a list of strings) or tokens (a list of token lists)"
            )
        return self


@dataclass
class ServerState:
    """What a running app holds (``app.state.tagger``)."""

    served: ServedModel | None = None  # None while loading
    error: str | None = None  # why loading failed
    batcher: Batcher | None = None  # while the app runs


def create_app(model: str | Path | ServedModel, options: Options | None = None) -> FastAPI:
    """The ASGI app serving ``model``: a loaded ``ServedModel``, or a path to load (a
    model folder, an ensemble or a spaCy pipeline folder) in the model thread once the
    app starts, ``/health`` answering 503 until it is in."""
    options = (options or Options()).check()
    state = ServerState(served=model if isinstance(model, ServedModel) else None)
    page = PAGE.read_text(encoding="utf-8")

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        executor = ThreadPoolExecutor(1, thread_name_prefix="tagger-model")
        set_threads(options.threads)
        state.batcher = Batcher(
            lambda key, items: state.served.records(key[0], items, key[1]),
            executor,
            wait=options.batch_wait,
            max_items=options.batch_items,
        )
        state.batcher.start()
        if state.served is None:
            loop = asyncio.get_running_loop()
            loading = loop.run_in_executor(
                executor, load_served, model, options.device, options.precision
            )
            loading.add_done_callback(lambda done: _loaded(state, done))
        try:
            yield
        finally:  # uvicorn calls this once the requests in flight have their answers
            await state.batcher.close()
            executor.shutdown(wait=True)

    app = FastAPI(
        title="tagger",
        version=__version__,
        lifespan=lifespan,
        docs_url=None,  # the interactive docs load scripts from a CDN
        redoc_url=None,
    )
    app.state.tagger = state
    app.add_middleware(BodyLimit, max_bytes=options.max_body_bytes, timeout=options.body_timeout)

    def ready() -> ServedModel:
        if state.served is None:
            raise HTTPException(503, state.error or "the model is still loading")
        return state.served

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def index() -> HTMLResponse:
        types = state.served.tagger.entity_types if state.served else []
        colours = dict(zip(types, _colours(types)))
        html = page.replace("{{colours}}", escape(json.dumps(colours)))
        return HTMLResponse(html, headers={"Content-Security-Policy": CSP})

    @app.get("/health")
    async def health() -> JSONResponse:
        """200 once the model is loaded, 503 before (or if it cannot be)."""
        ready()
        return JSONResponse({"status": "ok"})

    @app.get("/v1/model")
    async def model_info() -> JSONResponse:
        """The model (labels, scheme, config, training scores) and the server's settings
        and counters."""
        info = ready().info()
        server = {
            "options": asdict(options),
            "stats": state.batcher.stats.as_dict(),
            "pid": os.getpid(),  # tells the workers of `--workers N` apart
        }
        return JSONResponse({**info, "server": server})

    @app.post("/v1/entities")
    async def entities(body: EntitiesRequest) -> JSONResponse:
        """The ``tagger predict --format jsonl`` record of each text or token list."""
        ready()
        kind, items = (TEXTS, body.texts) if body.texts is not None else (TOKENS, body.tokens)
        if len(items) > options.max_texts:
            what = "texts" if kind == TEXTS else "token lists"
            raise HTTPException(
                413,
                f"{len(items):,} {what} in one request; this server takes at most "
                f"{options.max_texts:,}",
            )
        chars = sum(map(len, items)) if kind == TEXTS else sum(len(t) for s in items for t in s)
        if chars > options.max_chars:
            raise HTTPException(
                413,
                f"{chars:,} characters in one request; this server takes at most "
                f"{options.max_chars:,}",
            )
        records = await state.batcher.submit((kind, body.min_confidence), items)
        return JSONResponse({"results": records})

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, err: HTTPException) -> JSONResponse:
        return JSONResponse({"error": err.detail}, err.status_code, headers=err.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, err: RequestValidationError) -> JSONResponse:
        return JSONResponse({"error": explain(err.errors(), request)}, 422)

    @app.exception_handler(Exception)
    async def crashed(request: Request, err: Exception) -> JSONResponse:
        # Starlette logs the traceback after this answer; the client gets one line.
        return JSONResponse({"error": f"internal error: {type(err).__name__}"}, 500)

    return app


def _loaded(state: ServerState, done: asyncio.Future) -> None:
    """Take the model the model thread loaded, or say why it could not."""
    err = done.exception()
    if err is None:
        state.served = done.result()
        tagger = state.served.tagger
        logger.info(
            "tagger: model %s loaded; precision: %s", state.served.path, tagger.precision_note
        )
    else:
        state.error = f"cannot load the model: {err}"
        if not isinstance(err, TaggerError):
            logger.error("tagger: loading the model failed", exc_info=err)
        else:
            logger.error("tagger: %s", state.error)


def _colours(types: list[str]) -> list[str]:
    """displaCy's colour for each entity type (``tagger.report``'s); the palette in turn
    for the others."""
    spare = itertools.cycle(PALETTE)
    return [TYPE_COLOURS.get(t) or next(spare) for t in types]


def explain(errors: list[dict], request: Request) -> str:
    """One line for what was wrong with a request body (the first problem)."""
    first = errors[0]
    kind, where = first["type"], [str(p) for p in first["loc"][1:]]  # loc[0] is "body"
    more = f" (and {len(errors) - 1} more problems)" if len(errors) > 1 else ""
    if kind == "json_invalid":
        return f"the body is not valid JSON: {first['ctx']['error']} at character {where[0]}"
    if not where and kind != "one_input":
        if "json" not in request.headers.get("content-type", ""):
            return "the body must be JSON, sent with Content-Type: application/json"
        return "the body must be a JSON object with texts or tokens"
    if not where:
        return first["msg"]
    path = where[0] + "".join(f"[{p}]" for p in where[1:])
    if kind == "too_short":
        return f"{path} is empty: give at least one{more}"
    return f"{path}: {first['msg']}{more}"


class BodyLimit:
    """ASGI middleware: 413 for a request body over ``max_bytes`` (said by its
    Content-Length, or counted as it streams in, whatever the header claims), 408 for
    one that takes more than ``timeout`` seconds to arrive in full. The errors are
    raised as ``HTTPException`` from ``receive``, so the app's handler writes them."""

    def __init__(self, app: ASGIApp, max_bytes: int, timeout: float) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.timeout = timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        too_large = f"the request body is larger than {self.max_bytes:,} bytes"
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.max_bytes:
            await JSONResponse({"error": too_large}, 413)(scope, receive, send)
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        received, complete = 0, False

        async def limited() -> Message:
            nonlocal received, complete
            if complete:  # after the body: disconnect notices, no deadline
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), max(deadline - loop.time(), 0))
            except asyncio.TimeoutError:
                raise HTTPException(
                    408, f"the request body did not arrive within {self.timeout:g} s"
                ) from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise HTTPException(413, too_large)
                complete = not message.get("more_body", False)
            return message

        await self.app(scope, limited, send)
