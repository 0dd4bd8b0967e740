"""Load test of ``tagger serve`` on 127.0.0.1: latency and throughput, batching on and off.

    python benchmarks/serve_load.py --model models/conll                 # 20,000 requests
    python benchmarks/serve_load.py --model models/conll --quick         # 500 requests

Starts ``tagger serve MODEL --workers 1`` as a subprocess on a free port of 127.0.0.1
(first with micro-batching, then with ``--no-batching``) and drives it from this
process with ``--clients`` concurrent clients (asyncio keep-alive connections that cost
little CPU, or ``--client httpx``): ``--requests`` requests of
one CoNLL-2003 test sentence each (detokenized raw text, the test sentences in turn),
then as many of ``--sentences`` sentences each. For each run it prints the errors
(anything but a 200 with one record per text), the p50 and p99 latency, words/s (the
CoNLL tokens of the sentences answered, per second of the run) and the server's model
calls, then the ratio of single-sentence words/s with batching on and off. Client and
server share the machine's cores: run it alone.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from tagger.data import read_source

try:
    from predict_file import detokenize
except ImportError:  # run as a module
    from benchmarks.predict_file import detokenize

WARM_UP = 50  # requests before each timed run


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(
    model: str, batching: bool, log: Path, options: list[str]
) -> tuple[subprocess.Popen, str]:
    """``tagger serve`` on a free port with ``options``, once its /health answers 200."""
    port = free_port()
    args = [sys.executable, "-m", "tagger", "serve", model, "--port", str(port), *options]
    args += ["--workers", "1", "--no-access-log"] + ([] if batching else ["--no-batching"])
    with log.open("w") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while True:
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            sys.exit(f"tagger serve did not start:\n{log.read_text()}")
        try:
            if httpx.get(f"{url}/health", timeout=5).status_code == 200:
                return proc, url
        except httpx.TransportError:
            pass
        time.sleep(0.2)


class Connection:
    """One keep-alive HTTP/1.1 connection that POSTs JSON and reads the answer: the
    least a client can do, so that the load generator, which shares the cores with the
    server, costs it as little as possible (``--client httpx`` for httpx's)."""

    def __init__(self, url: str) -> None:
        self.host, port = url.removeprefix("http://").split(":")
        self.port = int(port)
        self.streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def post(self, path: str, payload: dict) -> tuple[int, dict]:
        """The status and the JSON body of ``POST path`` with ``payload``."""
        if self.streams is None:
            self.streams = await asyncio.open_connection(self.host, self.port)
        reader, writer = self.streams
        body = json.dumps(payload).encode()
        writer.write(
            f"POST {path} HTTP/1.1\r\nHost: {self.host}\r\nContent-Type: application/json"
            f"\r\nContent-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
        fields = dict(line.lower().split(": ", 1) for line in head[1:] if line)
        answer = await reader.readexactly(int(fields["content-length"]))
        if fields.get("connection") == "close":
            writer.close()
            self.streams = None
        return int(head[0].split()[1]), json.loads(answer)

    async def close(self) -> None:
        if self.streams is not None:
            self.streams[1].close()
            await self.streams[1].wait_closed()


async def load(
    url: str, bodies: list[list[str]], clients: int, kind: str = "raw"
) -> tuple[list[float], int, float]:
    """Send every body (a list of texts) with ``clients`` concurrent clients (``kind``:
    ``raw`` connections or one httpx pool); the latency of each request in seconds, the
    number of errors, and the wall time."""
    latencies: list[float] = []
    errors = 0
    todo = iter(bodies)
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    http = httpx.AsyncClient(base_url=url, limits=limits, timeout=60)

    async def post(connection: Connection, texts: list[str]) -> tuple[int, dict]:
        if kind == "raw":
            return await connection.post("/v1/entities", {"texts": texts})
        answer = await http.post("/v1/entities", json={"texts": texts})
        return answer.status_code, answer.json()

    async def client() -> None:
        nonlocal errors
        connection = Connection(url)
        for texts in todo:  # one shared iterator: each body is sent once
            start = time.perf_counter()
            try:
                status, answer = await post(connection, texts)
                ok = status == 200 and len(answer["results"]) == len(texts)
            except (httpx.HTTPError, OSError, asyncio.IncompleteReadError, ValueError, KeyError):
                ok = False
                await connection.close()
                connection = Connection(url)
            latencies.append(time.perf_counter() - start)
            errors += not ok
        await connection.close()

    async with http:
        start = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(clients)))
        wall = time.perf_counter() - start
    return latencies, errors, wall


def model_calls(url: str) -> int:
    return httpx.get(f"{url}/v1/model", timeout=30).json()["server"]["stats"]["model_calls"]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", required=True, help="model folder (or spaCy pipeline)")
    parser.add_argument("--data", default="../shared/data/conll2003", help="CoNLL-2003 folder")
    parser.add_argument("--requests", type=int, default=20_000, help="requests per run")
    parser.add_argument("--quick", action="store_true", help="500 requests per run")
    parser.add_argument("--sentences", type=int, default=64, help="per request, second run")
    parser.add_argument(
        "--multi-requests",
        type=int,
        metavar="N",
        help="requests of the second run [default: as many as the first]",
    )
    parser.add_argument(
        "--single-only", action="store_true", help="only the one-sentence runs (the speed-up)"
    )
    parser.add_argument("--clients", type=int, default=16, help="concurrent clients")
    parser.add_argument(
        "--client",
        choices=("raw", "httpx"),
        default="raw",
        help="raw keep-alive connections (the lightest) or an httpx pool",
    )
    parser.add_argument(
        "--serve-option",
        action="append",
        default=[],
        metavar="OPTION",
        help="passed to tagger serve, e.g. --serve-option=--threads=1 (repeatable)",
    )
    args = parser.parse_args()
    requests = 500 if args.quick else args.requests

    tests = read_source(args.data).splits["test"]
    pool = [(detokenize(s.tokens), len(s.tokens)) for s in tests if s.tokens]

    def bodies(size: int, count: int) -> tuple[list[list[str]], int]:
        """``count`` lists of ``size`` texts, the test sentences in turn; their words."""
        picked = [pool[i % len(pool)] for i in range(size * count)]
        texts = [text for text, _ in picked]
        words = sum(n for _, n in picked)
        return [texts[i : i + size] for i in range(0, len(texts), size)], words

    print(
        f"model {args.model}; {len(pool):,} CoNLL-2003 test sentences; {requests:,} requests "
        f"per run, {args.clients} {args.client} clients; {os.cpu_count()} cores shared by "
        f"client and server; tagger serve {' '.join(args.serve_option) or 'defaults'}"
    )
    print(
        f"{'server':<12} {'sentences':>9} {'requests':>9} {'errors':>6} {'p50 ms':>8} "
        f"{'p99 ms':>8} {'words/s':>9} {'model calls':>11}"
    )
    single: dict[bool, float] = {}
    failed = 0
    with tempfile.TemporaryDirectory() as tmp:
        for batching in (True, False):
            log = Path(tmp) / f"serve-{batching}.log"
            proc, url = start_server(args.model, batching, log, args.serve_option)
            try:
                warm, _ = bodies(1, WARM_UP)
                asyncio.run(load(url, warm, args.clients, args.client))
                for size in (1,) if args.single_only else (1, args.sentences):
                    count = requests if size == 1 else (args.multi_requests or requests)
                    sent, words = bodies(size, count)
                    before = model_calls(url)
                    latencies, errors, wall = asyncio.run(
                        load(url, sent, args.clients, args.client)
                    )
                    calls = model_calls(url) - before
                    p50, p99 = (1000 * q for q in _percentiles(latencies))
                    name = "batching" if batching else "no batching"
                    print(
                        f"{name:<12} {size:>9} {len(sent):>9,} {errors:>6} {p50:>8.1f} "
                        f"{p99:>8.1f} {words / wall:>9,.0f} {calls:>11,}"
                    )
                    failed += errors
                    if size == 1:
                        single[batching] = words / wall
            finally:
                proc.send_signal(signal.SIGTERM)
                status = proc.wait(60)
            if status != 0:
                sys.exit(f"tagger serve exited {status}:\n{log.read_text()}")
    print(f"single-sentence words/s, batching on / off: {single[True] / single[False]:.2f}x")
    if failed:
        sys.exit(f"{failed} requests failed")


def _percentiles(values: list[float]) -> tuple[float, float]:
    """p50 and p99 (``statistics.quantiles``, inclusive method)."""
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    return cuts[49], cuts[98]


if __name__ == "__main__":
    main()
