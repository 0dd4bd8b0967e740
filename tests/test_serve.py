"""`tagger serve`: the HTTP API on a real tiny model, in process (FastAPI's TestClient,
httpx on the ASGI app) and as a real `tagger serve` subprocess on a free port (raw
sockets for slow and oversized bodies, SIGTERM with a request in flight, two workers);
the micro-batcher; the page in a real headless Chromium (skipped where it cannot start)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import test_report
from conftest import REPO, tiny_config

pytest.importorskip("fastapi", reason='the server needs fastapi: pip install "tagger[serve]"')
pytest.importorskip("uvicorn", reason='the server needs uvicorn: pip install "tagger[serve]"')
httpx = pytest.importorskip("httpx", reason="the tests talk to the server with httpx")

from fastapi.testclient import TestClient  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from tagger.cli import app as cli_app  # noqa: E402
from tagger.serve import Options  # noqa: E402
from tagger.serve import app as app_module  # noqa: E402
from tagger.serve.app import create_app  # noqa: E402
from tagger.serve.batcher import Batcher  # noqa: E402
from tagger.serve.model import TEXTS, TOKENS, load_served  # noqa: E402
from tagger.serve.server import default_threads  # noqa: E402

TEXTS_IN = [
    "John Smith visited Paris on Monday.",
    "Globex opened an office in Tokyo. Mary Jones works for Acme Corp in Berlin.",
    "",
    "  Nothing happened today .  ",
    "Wei Chen met Anna Berg yesterday — in Oslo, naïvely.",
]
TOKENS_IN = [
    ["Angela", "Merkel", "visited", "Madrid", "on", "Monday", "."],
    [],
    ["Shares", "of", "Initech", "rose", "5", "percent", "."],
]
GOOD = {"texts": ["John Smith visited Paris on Monday."]}
chromium = test_report.browser  # the report's headless Chromium fixture (skips without one)


@pytest.fixture(scope="module")
def served(trained_model):
    return load_served(trained_model, device="cpu")


@pytest.fixture(scope="module")
def good_answer(served) -> dict:
    return {"results": served.records(TEXTS, GOOD["texts"])}


@contextmanager
def client_for(model, **options) -> Iterator[TestClient]:
    with TestClient(create_app(model, Options(device="cpu", **options))) as client:
        yield client


def cli_predict(model: Path, lines: list[str], tmp_path: Path, *flags: str) -> list[dict]:
    """What `tagger predict --format jsonl` writes for ``lines``."""
    source = tmp_path / "input.txt"
    source.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    result = CliRunner().invoke(
        cli_app, ["predict", str(source), "--model", str(model), "--format", "jsonl", *flags]
    )
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in result.stdout.splitlines()]


def wait_healthy(client: TestClient, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while client.get("/health").status_code != 200:
        assert time.monotonic() < deadline, "the model never loaded"
        time.sleep(0.05)


# ----------------------------------------------------------------------------- records


def test_records_are_those_of_tagger_predict(served, trained_model, tmp_path):
    with client_for(served) as client:
        answer = client.post("/v1/entities", json={"texts": TEXTS_IN})
        assert answer.status_code == 200
        assert answer.json()["results"] == cli_predict(trained_model, TEXTS_IN, tmp_path)
        assert any(r["entities"] for r in answer.json()["results"])

        threshold = {"texts": TEXTS_IN, "min_confidence": 0.9999}
        kept = client.post("/v1/entities", json=threshold).json()["results"]
        assert kept == cli_predict(trained_model, TEXTS_IN, tmp_path, "--min-confidence", "0.9999")

        answer = client.post("/v1/entities", json={"tokens": TOKENS_IN})
        assert answer.status_code == 200
        lines = [tok for sent in TOKENS_IN if sent for tok in [*sent, ""]]
        expected = cli_predict(trained_model, lines, tmp_path, "--pretokenized")
        got = answer.json()["results"]
        assert [r for r in got if r["tokens"]] == expected  # a file has no empty sentences
        assert got[1] == {"tokens": [], "tags": [], "entities": []}
        assert {e["label"] for r in got for e in r["entities"]} == {"PER", "LOC", "ORG"}
        assert all(0 < e["score"] <= 1 for r in got for e in r["entities"])


def test_model_info(served, trained_model):
    with client_for(served) as client:
        info = client.get("/v1/model").json()
    config = json.loads((trained_model / "config.json").read_text())
    metrics = json.loads((trained_model / "metrics.json").read_text())
    assert info["labels"] == config["labels"] and info["scheme"] == config["scheme"]
    assert info["format_version"] == config["format_version"]
    assert info["kind"] == "model" and info["entity_types"] == ["LOC", "ORG", "PER"]
    assert info["config"]["cell"] == config["config"]["cell"]
    assert info["config"]["hidden_size"] == config["config"]["hidden_size"]
    assert info["scores"]["test_f1"] == metrics["test_f1"]
    assert info["scores"]["dev"] == metrics["dev"]
    assert info["server"]["options"]["max_body_bytes"] == Options().max_body_bytes
    assert info["server"]["pid"] == os.getpid()


@pytest.fixture(scope="module")
def ensemble_model(tmp_path_factory, tiny_corpus) -> Path:
    from tagger.training import train

    out = tmp_path_factory.mktemp("serve") / "ensemble"
    return train(tiny_config(data=str(tiny_corpus), output=str(out), ensemble=2), progress=False)


@pytest.fixture(scope="module")
def spacy_pipeline(tmp_path_factory, trained_model) -> Path:
    from tagger.spacy_component import export_spacy

    return export_spacy(trained_model, tmp_path_factory.mktemp("serve") / "pipeline")


def test_ensemble_and_spacy_pipeline(ensemble_model, spacy_pipeline, trained_model, tmp_path):
    """The same server serves an ensemble and an exported spaCy pipeline; the pipeline
    answers as the model folder it was exported from."""
    with client_for(ensemble_model) as client:
        wait_healthy(client)
        assert client.get("/v1/model").json()["kind"] == "ensemble"
        got = client.post("/v1/entities", json={"texts": TEXTS_IN}).json()["results"]
        assert got == cli_predict(ensemble_model, TEXTS_IN, tmp_path)
    with client_for(spacy_pipeline) as client:
        wait_healthy(client)
        info = client.get("/v1/model").json()
        assert info["kind"] == "spacy" and info["entity_types"] == ["LOC", "ORG", "PER"]
        got = client.post("/v1/entities", json={"texts": TEXTS_IN}).json()["results"]
        assert got == cli_predict(trained_model, TEXTS_IN, tmp_path)


def test_health_is_503_until_the_model_is_loaded(trained_model, monkeypatch):
    import threading

    gate = threading.Event()
    real = app_module.load_served

    def held_back(*args):  # the real load, once the test lets it happen
        assert gate.wait(60)
        return real(*args)

    monkeypatch.setattr(app_module, "load_served", held_back)
    with client_for(trained_model) as client:
        for method, path in (("GET", "/health"), ("GET", "/v1/model"), ("POST", "/v1/entities")):
            answer = client.request(method, path, json=GOOD if method == "POST" else None)
            assert answer.status_code == 503
            assert answer.json() == {"error": "the model is still loading"}
        assert client.get("/").status_code == 200  # the page is there already
        gate.set()
        wait_healthy(client)
        assert client.get("/health").json() == {"status": "ok"}
        assert client.post("/v1/entities", json=GOOD).json()["results"][0]["entities"]


def test_a_model_that_cannot_load_is_503_with_the_reason(tmp_path):
    with client_for(tmp_path / "missing") as client:
        deadline = time.monotonic() + 30
        while "loading" in client.get("/health").json()["error"]:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        answer = client.get("/health")
        assert answer.status_code == 503
        assert answer.json()["error"].startswith("cannot load the model: ")
        assert "no such model folder" in answer.json()["error"]


# ----------------------------------------------------------------------------- bad requests

LIMITS = {"max_body_bytes": 4000, "max_texts": 5, "max_chars": 300}
JSON = {"content-type": "application/json"}
BAD = [
    # (name, request keyword arguments, status, words the error holds)
    ("malformed JSON", {"content": b'{"texts": [', "headers": JSON}, 422, "not valid JSON"),
    ("a list, not an object", {"json": ["a"]}, 422, "JSON object"),
    ("no body", {"content": b"", "headers": JSON}, 422, "JSON object"),
    ("not JSON", {"content": b"texts=a"}, 422, "Content-Type: application/json"),
    ("no input", {"json": {}}, 422, "give texts"),
    ("both inputs", {"json": {"texts": ["a"], "tokens": [["a"]]}}, 422, "give texts"),
    ("empty texts", {"json": {"texts": []}}, 422, "texts is empty"),
    ("empty tokens", {"json": {"tokens": []}}, 422, "tokens is empty"),
    ("a text not a string", {"json": {"texts": ["a", 1]}}, 422, "texts[1]: "),
    ("texts not a list", {"json": {"texts": "a"}}, 422, "texts: Input should be a valid list"),
    ("a token not a string", {"json": {"tokens": [["a", None]]}}, 422, "tokens[0][1]: "),
    ("tokens not nested", {"json": {"tokens": ["a"]}}, 422, "tokens[0]: "),
    ("unknown field", {"json": {**GOOD, "text": "a"}}, 422, "text: Extra inputs"),
    ("confidence above 1", {"json": {**GOOD, "min_confidence": 1.5}}, 422, "min_confidence"),
    ("confidence below 0", {"json": {**GOOD, "min_confidence": -0.1}}, 422, "min_confidence"),
    (
        "confidence NaN",
        {"content": b'{"texts": ["a"], "min_confidence": NaN}', "headers": JSON},
        422,
        "finite",
    ),  # fmt: skip
    ("confidence a string", {"json": {**GOOD, "min_confidence": "0.5"}}, 422, "min_confidence"),
    ("too many texts", {"json": {"texts": ["a"] * 6}}, 413, "6 texts in one request"),
    ("too many token lists", {"json": {"tokens": [["a"]] * 6}}, 413, "6 token lists in one"),
    ("too many characters", {"json": {"texts": ["a" * 200, "b" * 101]}}, 413, "301 characters"),
    ("too many token chars", {"json": {"tokens": [["a" * 301]]}}, 413, "301 characters"),
    ("body over the limit", {"json": {"texts": ["a" * 5000]}}, 413, "larger than 4,000 bytes"),
    (
        "streamed body over the limit",
        {"content": iter([b'{"texts": ["', b"a" * 3000, b"a" * 3000, b'"]}']), "headers": JSON},
        413,
        "larger than 4,000 bytes",
    ),  # fmt: skip
]


@pytest.mark.parametrize(("name", "request_args", "status", "words"), BAD, ids=[b[0] for b in BAD])
def test_bad_requests_get_a_json_error_and_the_next_one_an_answer(
    served, good_answer, name, request_args, status, words
):
    with client_for(served, **LIMITS) as client:
        answer = client.post("/v1/entities", **request_args)
        assert answer.status_code == status, answer.text
        assert answer.headers["content-type"] == "application/json"
        assert list(answer.json()) == ["error"] and words in answer.json()["error"]
        assert "Traceback" not in answer.text
        again = client.post("/v1/entities", json=GOOD)
        assert again.status_code == 200 and again.json() == good_answer


def test_wrong_paths_and_methods_are_json_errors(served):
    with client_for(served) as client:
        assert client.get("/nowhere").json() == {"error": "Not Found"}
        answer = client.get("/v1/entities")
        assert answer.status_code == 405 and answer.json() == {"error": "Method Not Allowed"}


# ----------------------------------------------------------------------------- batching


def test_concurrent_requests_share_model_calls(served, good_answer):
    """16 requests at once: fewer model calls than requests, each answer its own;
    without batching one call per request."""

    async def sixteen(options: Options) -> tuple[list, dict]:
        app = create_app(served, options)
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://serve") as client:
                bodies = [{"texts": [f"{name} visited Paris on Monday."]} for name in NAMES]
                answers = await asyncio.gather(
                    *(client.post("/v1/entities", json=b) for b in bodies)
                )
                stats = (await client.get("/v1/model")).json()["server"]["stats"]
        return [a.json()["results"][0] for a in answers], stats

    batched, stats = asyncio.run(sixteen(Options(device="cpu", batch_wait_ms=50)))
    expected = served.records(TEXTS, [f"{name} visited Paris on Monday." for name in NAMES])
    assert batched == expected
    assert stats["requests"] == 16 and stats["items"] == 16
    assert stats["model_calls"] < 16 and stats["largest_call"] > 1

    alone, stats = asyncio.run(sixteen(Options(device="cpu", batching=False)))
    assert alone == expected
    assert stats["model_calls"] == 16 and stats["largest_call"] == 1


NAMES = ["John Smith", "Mary Jones", "Angela Merkel", "Pedro Alvarez"] * 4


def test_batcher_groups_keys_splits_results_and_drains_on_close(served):
    from concurrent.futures import ThreadPoolExecutor

    def run(key, items):
        return served.records(key[0], items, key[1])

    async def main():
        batcher = Batcher(run, ThreadPoolExecutor(1), wait=0.05, max_items=64)
        batcher.start()
        jobs = [
            batcher.submit((TEXTS, 0.0), ["John Smith visited Paris.", "Globex rose."]),
            batcher.submit((TOKENS, 0.0), TOKENS_IN),
            batcher.submit((TEXTS, 0.0), ["Wei Chen met Anna Berg in Oslo."]),
            batcher.submit((TEXTS, 0.99999), ["Wei Chen met Anna Berg in Oslo."]),
        ]
        tasks = [asyncio.ensure_future(j) for j in jobs]
        await asyncio.sleep(0)  # submitted
        await batcher.close()  # waits for every job it holds
        assert all(t.done() for t in tasks)
        return [t.result() for t in tasks], batcher.stats

    results, stats = asyncio.run(main())
    assert results[0] == served.records(TEXTS, ["John Smith visited Paris.", "Globex rose."])
    assert results[1] == served.records(TOKENS, TOKENS_IN)
    assert results[2] == served.records(TEXTS, ["Wei Chen met Anna Berg in Oslo."])
    assert results[3] == served.records(TEXTS, ["Wei Chen met Anna Berg in Oslo."], 0.99999)
    assert stats.calls == 3  # one per key
    assert stats.requests == 4 and stats.largest == 3


def test_batcher_keeps_the_event_loop_free_and_passes_errors_on(served):
    from concurrent.futures import ThreadPoolExecutor

    def slow(key, items):  # the real model, and a moment more
        time.sleep(0.3)
        if key == "bad":
            raise ValueError("bad input")
        return served.records(TEXTS, items)

    async def main():
        batcher = Batcher(slow, ThreadPoolExecutor(1), wait=0.001, max_items=4)
        batcher.start()
        ticks = 0

        async def tick():
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.01)

        ticker = asyncio.ensure_future(tick())
        good = await batcher.submit("good", ["John Smith visited Paris."])
        with pytest.raises(ValueError, match="bad input"):
            await batcher.submit("bad", ["x"])
        ticker.cancel()
        await batcher.close()
        return good, ticks

    good, ticks = asyncio.run(main())
    assert good == served.records(TEXTS, ["John Smith visited Paris."])
    assert ticks >= 20  # the loop ran on through 0.6 s of model calls


# ----------------------------------------------------------------------------- the command

runner = CliRunner()


def assert_one_error_line(result, *fragments) -> str:
    assert result.exit_code == 1, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert all(f in lines[0] for f in fragments), lines[0]
    return lines[0]


def test_bad_model_path_is_the_same_error_as_predict(tmp_path):
    served = runner.invoke(cli_app, ["serve", str(tmp_path / "nope"), "--port", "0"])
    source = tmp_path / "in.txt"
    source.write_text("a\n")
    predicted = runner.invoke(cli_app, ["predict", str(source), "--model", str(tmp_path / "nope")])
    assert assert_one_error_line(served, "no such model folder") == assert_one_error_line(predicted)


def test_a_spacy_pipeline_without_tagger_ner_is_one_error_line(tmp_path):
    import spacy

    spacy.blank("en").to_disk(tmp_path / "blank")
    result = runner.invoke(cli_app, ["serve", str(tmp_path / "blank")])
    assert_one_error_line(result, "blank: the spaCy pipeline has no tagger_ner component")


def test_missing_server_packages_say_how_to_install(trained_model, monkeypatch):
    monkeypatch.setitem(sys.modules, "fastapi", None)  # import fastapi fails
    result = runner.invoke(cli_app, ["serve", str(trained_model)])
    line = assert_one_error_line(result, "fastapi", 'pip install "tagger[serve]"')
    assert "uvicorn" not in line


def test_port_in_use_is_one_error_line(trained_model):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = runner.invoke(cli_app, ["serve", str(trained_model), "--port", str(port)])
    assert_one_error_line(result, f"127.0.0.1:{port}", "in use", "--port")


@pytest.mark.parametrize(
    ("flag", "value"),
    [("--max-texts", "0"), ("--batch-wait-ms", "-1"), ("--body-timeout", "0"), ("--workers", "0")],
)
def test_bad_settings_are_one_error_line(trained_model, flag, value):
    result = runner.invoke(cli_app, ["serve", str(trained_model), flag, value])
    assert_one_error_line(result, flag)


# ----------------------------------------------------------------------------- real server


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def tagger_serve(model: Path, log: Path, *flags: str) -> Iterator[tuple[subprocess.Popen, str]]:
    """A real `tagger serve` on a free port, once its /health says 200."""
    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    args = [sys.executable, "-m", "tagger", "serve", str(model), "--port", str(port), *flags]
    with log.open("w") as out:
        proc = subprocess.Popen(args, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            try:
                if httpx.get(f"{url}/health", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        yield proc, url
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(30)


def raw_exchange(
    port: int, head: bytes, body: bytes = b"", timeout: float = 30
) -> tuple[int, dict]:
    """Send ``head`` and ``body`` on a fresh connection; the status and JSON answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(head + body)
        return read_response(sock)


def read_response(sock: socket.socket) -> tuple[int, dict]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed without an answer: {data!r}"
        data += chunk
    head, rest = data.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines[1:])
    length = int(headers["content-length"])
    while len(rest) < length:
        chunk = sock.recv(65536)
        assert chunk, "connection closed in the middle of the answer"
        rest += chunk
    return int(lines[0].split()[1]), json.loads(rest[:length])


def post_head(length: int) -> bytes:
    return (
        f"POST /v1/entities HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {length}\r\n\r\n"
    ).encode()


@pytest.fixture(scope="module")
def server(trained_model, tmp_path_factory):
    log = tmp_path_factory.mktemp("serve") / "server.log"
    with tagger_serve(trained_model, log, "--body-timeout", "1", "--no-access-log") as running:
        yield running


def test_real_server_answers_like_predict(server, trained_model, tmp_path):
    _, url = server
    answer = httpx.post(f"{url}/v1/entities", json={"texts": TEXTS_IN}, timeout=30)
    assert answer.status_code == 200
    assert answer.json()["results"] == cli_predict(trained_model, TEXTS_IN, tmp_path)
    assert httpx.get(f"{url}/health").json() == {"status": "ok"}


def test_real_server_refuses_a_declared_oversized_body_before_it_is_sent(server, good_answer):
    _, url = server
    port = int(url.rsplit(":", 1)[1])
    status, answer = raw_exchange(port, post_head(2_000_000))  # no byte of the body sent
    assert status == 413 and "larger than 1,000,000 bytes" in answer["error"]
    assert httpx.post(f"{url}/v1/entities", json=GOOD).json() == good_answer


def test_real_server_times_out_a_slow_body(server, good_answer):
    """A Content-Length that promises more than comes: 408 once --body-timeout is up."""
    _, url = server
    port = int(url.rsplit(":", 1)[1])
    start = time.monotonic()
    status, answer = raw_exchange(port, post_head(100), b'{"texts": ["a')
    assert status == 408 and "within 1 s" in answer["error"]
    assert 0.9 < time.monotonic() - start < 10
    assert httpx.post(f"{url}/v1/entities", json=GOOD).json() == good_answer


def test_sigterm_lets_the_request_in_flight_finish(trained_model, good_answer, tmp_path):
    log = tmp_path / "server.log"
    with tagger_serve(trained_model, log, "--no-access-log") as (proc, url):
        port = int(url.rsplit(":", 1)[1])
        body = json.dumps(GOOD).encode()
        with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
            sock.sendall(post_head(len(body)) + body[:10])  # in flight: half a body
            time.sleep(1.0)
            proc.send_signal(signal.SIGTERM)
            time.sleep(1.0)
            assert proc.poll() is None  # waiting for our request
            with pytest.raises(OSError):  # while taking no new ones
                socket.create_connection(("127.0.0.1", port), timeout=5).close()
            sock.sendall(body[10:])
            status, answer = read_response(sock)
        assert status == 200 and answer == good_answer
        assert proc.wait(30) == 0, log.read_text()
    assert "Application shutdown complete" in log.read_text()


def test_two_workers_each_with_a_model(trained_model, good_answer, tmp_path):
    log = tmp_path / "server.log"
    with tagger_serve(trained_model, log, "--workers", "2", "--no-access-log") as (proc, url):
        pids = set()
        deadline = time.monotonic() + 60
        while len(pids) < 2 and time.monotonic() < deadline:
            with httpx.Client(base_url=url) as client:  # a new connection each time
                answer = client.get("/v1/model")
                if answer.status_code == 200:
                    pids.add(answer.json()["server"]["pid"])
                    threads = answer.json()["server"]["options"]["threads"]
                    assert threads == default_threads(2) >= 1
        assert len(pids) == 2 and proc.pid not in pids
        for _ in range(4):
            assert httpx.post(f"{url}/v1/entities", json=GOOD).json() == good_answer
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, log.read_text()


# ----------------------------------------------------------------------------- the page


def test_page_is_self_contained(served):
    with client_for(served) as client:
        page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    policy = page.headers["content-security-policy"]
    assert "default-src 'none'" in policy and "connect-src 'self'" in policy
    assert "http://" not in page.text and "https://" not in page.text
    assert "{{colours}}" not in page.text
    assert "&quot;PER&quot;: &quot;#aa9cfc&quot;" in page.text  # displaCy's colours


def test_page_in_a_real_browser(chromium, server, tmp_path):
    _, url = server
    page = chromium.new_page(viewport={"width": 900, "height": 560})
    problems: list[str] = []
    page.on(
        "console",
        lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None,
    )
    page.on("pageerror", lambda err: problems.append(f"page error: {err}"))
    page.on("requestfailed", lambda r: problems.append(f"request failed: {r.url}"))
    page.goto(url + "/")
    page.wait_for_load_state("load")
    page.wait_for_function("() => document.getElementById('model').textContent.includes('LOC')")
    page.fill("#text", "John Smith visited Paris on Monday. Globex opened an office in Tokyo.")
    page.click("#tag")
    page.wait_for_selector("mark.ent")
    marks = page.eval_on_selector_all(
        "mark.ent",
        "ms => ms.map(m => [m.firstChild.textContent, m.dataset.label, m.title,"
        " getComputedStyle(m).backgroundColor])",
    )
    assert [(text, label) for text, label, _, _ in marks] == [
        ("John Smith", "PER"),
        ("Paris", "LOC"),
        ("Globex", "ORG"),
        ("Tokyo", "LOC"),
    ]
    assert all(title.startswith(f"{label}, score 0.") or title == f"{label}, score 1.000"
               for _, label, title, _ in marks)  # fmt: skip
    assert marks[0][3] == "rgb(170, 156, 252)"  # displaCy's PER
    assert page.inner_text("#status") == "4 entities"
    assert page.locator("#entities tbody tr").count() == 4
    page.fill("#text", "")  # an empty text: no entities, no error
    page.click("#tag")
    page.wait_for_function("() => document.getElementById('status').textContent === '0 entities'")
    page.fill("#text", "John Smith visited Paris on Monday.")
    page.click("#tag")
    page.wait_for_function("() => document.getElementById('status').textContent === '2 entities'")
    shot = tmp_path / "serve.png"
    page.screenshot(path=str(shot), full_page=True)
    page.close()
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert problems == []
