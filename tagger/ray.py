"""Bulk tagging on Ray Data: ``Dataset.map_batches(TaggerBatch, ...)``.

Each actor loads the model once (``TaggerBatch.__init__``) and then tags the batches it is
handed: raw text in a ``text`` column, or token lists in a ``tokens`` column. It returns
the batch with the fields of ``tagger predict``'s JSON-lines records added as Arrow
columns (``tagger.bulk.arrow_records``): ``entities``, a ``list<struct<text, label,
start, end, score>>`` (character offsets for text, token offsets for token lists), and
for token lists ``tags``. Ray Data restarts an actor that dies and retries its batch.

``tagger predict SOURCE --output-dir DIR --engine ray`` runs ``job_records`` in
``cluster`` and writes the shards here (``tagger.bulk``). This module is ``tagger.ray``;
it imports the ``ray`` package with absolute imports, so the two never shadow each other.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import TYPE_CHECKING

import ray
import ray.data

from tagger.bulk import BLOCK_ROWS, arrow_records
from tagger.errors import TaggerError

if TYPE_CHECKING:
    import pyarrow as pa

    from tagger.bulk import Job


class TaggerBatch:
    """A callable class for ``Dataset.map_batches``: the model is loaded once per actor.

    ``batch_size`` is token lists per forward pass; ``threads`` the torch threads of the
    actor (1 by default: Ray reserves one CPU per actor, and actors are the parallelism);
    ``precision`` is resolved by each actor on its own node (``Tagger.load``)."""

    def __init__(
        self,
        model_dir: str,
        min_confidence: float = 0.0,
        text_column: str = "text",
        batch_size: int = 256,
        device: str = "auto",
        threads: int = 1,
        precision: str = "auto",
    ) -> None:
        import torch

        from tagger.predict import Tagger, check_confidence

        self.min_confidence = check_confidence(min_confidence)
        self.text_column = text_column
        self.batch_size = batch_size
        torch.set_num_threads(threads)
        self.tagger = Tagger.load(model_dir, device=device, precision=precision)

    def __call__(self, batch) -> pa.Table:
        """Tag a batch (a ``pyarrow.Table``, a pandas ``DataFrame`` or a dict of numpy
        arrays, whichever ``batch_format`` gives); returns it with the record columns."""
        return arrow_records(
            self.tagger, _as_table(batch), self.text_column, self.min_confidence, self.batch_size
        )


def _as_table(batch) -> pa.Table:
    import pyarrow as pa

    if isinstance(batch, pa.Table):
        return batch
    if isinstance(batch, dict):  # numpy columns; token lists are object arrays of arrays
        return pa.table({name: pa.array(list(values)) for name, values in batch.items()})
    return pa.Table.from_pandas(batch, preserve_index=False)


def tag_dataset(
    ds: ray.data.Dataset,
    model_dir: str,
    *,
    concurrency: int = 1,
    min_confidence: float = 0.0,
    text_column: str = "text",
    device: str = "auto",
    threads: int = 1,
    batch_size: int = 256,
    batch_rows: int = BLOCK_ROWS,
    precision: str = "auto",
) -> ray.data.Dataset:
    """``ds`` with the record columns added by a pool of ``concurrency`` ``TaggerBatch``
    actors of ``threads`` CPUs each, and one GPU each where ``device`` is ``cuda``, or
    ``auto`` on a cluster that has GPUs; ``batch_rows`` rows per call of an actor;
    ``precision`` as ``TaggerBatch`` takes it. ``model_dir`` must be readable on every
    node."""
    gpus = device == "cuda" or (
        device == "auto" and ray.is_initialized() and ray.cluster_resources().get("GPU", 0) > 0
    )
    return ds.map_batches(
        TaggerBatch,
        fn_constructor_kwargs={
            "model_dir": os.path.abspath(model_dir),
            "min_confidence": min_confidence,
            "text_column": text_column,
            "batch_size": batch_size,
            "device": device,
            "threads": threads,
            "precision": precision,
        },
        batch_size=batch_rows,
        batch_format="pyarrow",
        compute=ray.data.ActorPoolStrategy(size=concurrency),
        num_cpus=threads,
        num_gpus=1 if gpus else None,
    )


@contextlib.contextmanager
def cluster(job: Job) -> Iterator[None]:
    """Ray for ``job``: the cluster this process is connected to, else the one at
    ``job.address`` (default: a new local one), left again at the end."""
    if ray.is_initialized():
        yield
        return
    try:
        ray.init(address=job.address, include_dashboard=False, logging_level="WARNING")
    except (ConnectionError, ValueError, RuntimeError) as err:
        where = f"the cluster at {job.address}" if job.address else "a local cluster"
        raise TaggerError(f"--engine ray: cannot start {where}: {err}") from None
    try:
        yield
    finally:
        ray.shutdown()


def job_records(job: Job, table: pa.Table) -> Iterator[dict]:
    """What ``tagger predict --output-dir DIR --engine ray`` runs in ``cluster(job)``:
    the rows of ``table`` tagged by ``job.workers`` actors, in blocks of ``BLOCK_ROWS``,
    their records back in input order."""
    blocks = [table.slice(i, BLOCK_ROWS) for i in range(0, table.num_rows, BLOCK_ROWS)]
    blocks = blocks or [table]
    tagged = tag_dataset(
        ray.data.from_arrow(blocks),
        job.model,
        concurrency=min(job.workers, len(blocks)),  # an actor per block at most
        min_confidence=job.min_confidence,
        device=job.device,
        threads=job.threads or 1,
        batch_rows=BLOCK_ROWS,
        precision=job.precision,
    )
    tagged.context.execution_options.preserve_order = True  # shards are in input order
    tagged.context.enable_progress_bars = False
    for batch in tagged.iter_batches(batch_size=None, batch_format="pyarrow"):
        yield from batch.to_pylist()
