"""Bulk tagging on Spark: ``tag_dataframe(df, model_dir)``.

The DataFrame's ``text`` column (raw text) or ``tokens`` column (``array<string>``) is
tagged by ``mapInArrow`` (the Arrow form of ``mapInPandas``: the nested entity column
needs no pandas conversion), with the fields of ``tagger predict``'s JSON-lines records
added as columns (``tagger.bulk.arrow_records``): ``entities``,
``array<struct<text, label, start, end, score>>``, and for token lists ``tags``. Each
executor's Python process loads the model once (``cached_tagger``; Spark reuses its
Python workers across tasks). Spark reruns a failed task, up to ``spark.task.maxFailures``
times (``local[N,F]`` masters: F).

``tagger predict SOURCE --output-dir DIR --engine spark`` runs ``job_records`` in
``cluster`` and writes the shards here (``tagger.bulk``).
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import sys
import warnings
from collections.abc import Iterator
from typing import TYPE_CHECKING

from pyspark import StorageLevel
from pyspark.errors import PySparkRuntimeError
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql.pandas.types import from_arrow_schema, from_arrow_type
from pyspark.sql.types import StructField, StructType

from tagger.bulk import BLOCK_ROWS, arrow_records, record_columns, record_types
from tagger.errors import TaggerError

if TYPE_CHECKING:
    import pyarrow as pa

    from tagger.bulk import Job
    from tagger.predict import Tagger

# per Python process: (model folder, device, precision)
_TAGGERS: dict[tuple[str, str, str], Tagger] = {}


def cached_tagger(
    model_dir: str, device: str = "auto", threads: int = 1, precision: str = "auto"
) -> Tagger:
    """The model in ``model_dir``, loaded on the first call in this process only (with
    ``threads`` torch threads: a Spark executor runs one Python process per task slot),
    in ``precision`` as resolved on the executor's machine."""
    key = (os.path.realpath(model_dir), device, precision)
    if key not in _TAGGERS:
        import torch

        from tagger.predict import Tagger

        torch.set_num_threads(threads)
        _TAGGERS[key] = Tagger.load(model_dir, device=device, precision=precision)
    return _TAGGERS[key]


def tag_batches(
    batches: Iterator[pa.RecordBatch],
    model_dir: str,
    text_column: str = "text",
    min_confidence: float = 0.0,
    device: str = "auto",
    threads: int = 1,
    batch_size: int = 256,
    precision: str = "auto",
) -> Iterator[pa.RecordBatch]:
    """The ``mapInArrow`` function: each batch of a partition with its record columns."""
    import pyarrow as pa

    tagger = cached_tagger(model_dir, device, threads, precision)
    for batch in batches:
        table = pa.Table.from_batches([batch])
        tagged = arrow_records(tagger, table, text_column, min_confidence, batch_size)
        yield from tagged.to_batches()


def tag_dataframe(
    df: DataFrame,
    model_dir: str,
    *,
    text_column: str = "text",
    min_confidence: float = 0.0,
    device: str = "auto",
    threads: int = 1,
    batch_size: int = 256,
    precision: str = "auto",
) -> DataFrame:
    """``df`` with the record columns added (lazily, like any transformation). The
    model folder must be readable at ``model_dir`` on every executor; ``batch_size`` is
    token lists per forward pass; ``precision`` is resolved on each executor's machine."""
    from tagger.predict import check_confidence

    check_confidence(min_confidence)
    added = record_columns(df.columns, text_column)
    types = record_types()
    schema = StructType(
        [f for f in df.schema.fields if f.name not in added]
        + [StructField(name, from_arrow_type(types[name])) for name in added]
    )
    tag = functools.partial(
        tag_batches,
        model_dir=os.path.abspath(model_dir),
        text_column=text_column,
        min_confidence=min_confidence,
        device=device,
        threads=threads,
        batch_size=batch_size,
        precision=precision,
    )
    with _no_pandas_warning():
        return df.mapInArrow(tag, schema)


@contextlib.contextmanager
def cluster(job: Job) -> Iterator[None]:
    """Spark for ``job``: the active session, else a new one with master
    ``job.address`` (default ``local[W,4]``: ``job.workers`` threads, a failed task tried
    up to 4 times), stopped at the end."""
    if SparkSession.getActiveSession() is not None:
        yield
        return
    if not (os.environ.get("JAVA_HOME") or shutil.which("java")):
        raise TaggerError(
            "--engine spark needs Java: install a JRE (Debian: apt-get install "
            "default-jre-headless) or set JAVA_HOME"
        )
    master = job.address or f"local[{job.workers},4]"
    builder = SparkSession.builder.master(master).appName("tagger predict")
    builder = builder.config("spark.ui.enabled", "false")
    if master.startswith("local"):  # the Python workers run this Python, with this tagger
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    try:
        with _no_pandas_warning():
            spark = builder.getOrCreate()
    except PySparkRuntimeError as err:
        raise TaggerError(f"--engine spark: cannot start Spark (master {master}): {err}") from None
    spark.sparkContext.setLogLevel("ERROR")
    try:
        yield
    finally:
        spark.stop()


def job_records(job: Job, table: pa.Table) -> Iterator[dict]:
    """What ``tagger predict --output-dir DIR --engine spark`` runs in ``cluster(job)``:
    the rows of ``table`` in partitions of ``BLOCK_ROWS`` rows, all tagged (in parallel,
    kept on the executors) before the records come back in input order."""
    spark = SparkSession.getActiveSession()
    parts = max(1, -(-table.num_rows // BLOCK_ROWS))
    rows = spark.sparkContext.parallelize(list(zip(*table.to_pydict().values())), parts)
    df = spark.createDataFrame(rows, from_arrow_schema(table.schema), verifySchema=False)
    tagged = tag_dataframe(
        df,
        job.model,
        min_confidence=job.min_confidence,
        device=job.device,
        threads=job.threads or 1,
        precision=job.precision,
    ).persist(StorageLevel.MEMORY_AND_DISK)
    try:
        tagged.count()  # tags every partition at once; toLocalIterator runs one at a time
        for row in tagged.toLocalIterator():
            yield row.asDict(recursive=True)
    finally:
        tagged.unpersist()


@contextlib.contextmanager
def _no_pandas_warning() -> Iterator[None]:
    """PySpark warns that it does not fully support pandas >= 3, which this never uses."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "PySpark does not yet fully support", FutureWarning)
        yield
