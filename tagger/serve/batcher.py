"""Micro-batching: requests that arrive together share one model call.

A request is a *job*: a key (what kind of input, which threshold) and its items (texts
or token lists). The batcher takes the first job waiting, collects more for at most
``wait`` seconds or until ``max_items`` items are in hand, and runs them in the one model
thread, one call per key, while the event loop goes on accepting requests. A model
tags a batch of 64 sentences in little more time than one, so under load this is what
throughput comes from; with ``max_items=1`` every request is its own call.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field


@dataclass
class Stats:
    """What the batcher has done: requests answered, model calls, items, the largest call."""

    requests: int = 0
    calls: int = 0
    items: int = 0
    largest: int = 0

    def as_dict(self) -> dict:
        return {
            "requests": self.requests,
            "model_calls": self.calls,
            "items": self.items,
            "largest_call": self.largest,
        }


@dataclass
class _Job:
    key: Hashable
    items: Sequence
    future: asyncio.Future = field(repr=False)


class Batcher:
    """Runs ``run(key, items) -> results`` (one result per item) on ``executor`` for the
    jobs given to ``submit``, several jobs of the same key in one call."""

    def __init__(
        self,
        run: Callable[[Hashable, list], list],
        executor: Executor,
        wait: float = 0.005,
        max_items: int = 64,
    ) -> None:
        self._run = run
        self._executor = executor
        self.wait = wait
        self.max_items = max_items
        self.stats = Stats()
        self._queue: asyncio.Queue[_Job] = asyncio.Queue()
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        """Start collecting (in the running event loop)."""
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def submit(self, key: Hashable, items: Sequence) -> list:
        """The results for ``items``, computed with whatever else arrives meanwhile."""
        future = asyncio.get_running_loop().create_future()
        await self._queue.put(_Job(key, items, future))
        return await future

    async def close(self) -> None:
        """Finish every job already submitted, then stop (the server's shutdown calls
        this after the requests in flight have their answers)."""
        await self._queue.join()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            jobs = [await self._queue.get()]
            size = len(jobs[0].items)
            deadline = loop.time() + self.wait
            while size < self.max_items:
                try:
                    job = self._queue.get_nowait()  # already waiting: no timer needed
                except asyncio.QueueEmpty:
                    left = deadline - loop.time()
                    if left <= 0:
                        break
                    try:
                        job = await asyncio.wait_for(self._queue.get(), left)
                    except asyncio.TimeoutError:
                        break
                jobs.append(job)
                size += len(job.items)
            # A request cancelled while its job waited costs nothing.
            live = [j for j in jobs if not j.future.done()]
            try:
                if live:
                    await self._answer(loop, live)
            except Exception as err:  # noqa: BLE001 - a bug here must not hang the requests
                for job in live:
                    if not job.future.done():
                        job.future.set_exception(err)
            finally:
                for _ in jobs:
                    self._queue.task_done()

    async def _answer(self, loop: asyncio.AbstractEventLoop, jobs: list[_Job]) -> None:
        groups: dict[Hashable, list[_Job]] = {}
        for job in jobs:
            groups.setdefault(job.key, []).append(job)
        calls = [(key, [item for j in group for item in j.items]) for key, group in groups.items()]
        outcomes = await loop.run_in_executor(self._executor, _run_all, self._run, calls)
        self.stats.calls += len(calls)
        for (_, items), group, outcome in zip(calls, groups.values(), outcomes):
            self.stats.items += len(items)
            self.stats.largest = max(self.stats.largest, len(items))
            start = 0
            for job in group:
                mine = slice(start, start + len(job.items))
                start = mine.stop
                self.stats.requests += 1
                if job.future.done():  # its request was cancelled during the call
                    continue
                if isinstance(outcome, BaseException):
                    job.future.set_exception(outcome)
                else:
                    job.future.set_result(outcome[mine])


def _run_all(run: Callable[[Hashable, list], list], calls: list[tuple[Hashable, list]]) -> list:
    """Each call's results, or the exception it raised (in the model thread)."""
    outcomes = []
    for key, items in calls:
        try:
            outcomes.append(run(key, items))
        except Exception as err:  # noqa: BLE001 - handed to the jobs' requests
            outcomes.append(err)
    return outcomes
