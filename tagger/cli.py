"""The ``tagger`` command: a thin typer layer over the Python API.

Heavy libraries (torch, spaCy, datasets) are imported inside the commands so that
``tagger --help`` starts fast. A ``TaggerError`` or an ``OSError`` becomes one ``error:``
line and exit 1 (``user_errors``), never a traceback.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import json
import os
import sys
import types
import typing
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from tagger.config import CHOICES, DEFAULT_MODEL_DIR, FLAGS, HELP, NO_FLAG, TrainConfig
from tagger.errors import TaggerError

app = typer.Typer(
    help="Train, evaluate and run recurrent named-entity taggers (CoNLL data, spaCy tokenization).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode=None,  # keep "[default: ...]" in help texts literal
)


class ConvertTarget(str, Enum):
    conll = "conll"
    jsonl = "jsonl"
    spacy = "spacy"


class Format(str, Enum):
    conll = "conll"
    jsonl = "jsonl"


class Engine(str, Enum):  # tagger.bulk.ENGINES
    local = "local"
    ray = "ray"
    spark = "spark"


class ShardFormat(str, Enum):  # tagger.bulk.SHARD_FORMATS
    jsonl = "jsonl"
    parquet = "parquet"


class Precision(str, Enum):  # tagger.runtime.PRECISIONS
    auto = "auto"
    fp32 = "fp32"
    bf16 = "bf16"


def user_errors(command):
    """Turn ``TaggerError`` and any ``OSError`` (a full disk, a closed pipe, no
    permission) into one ``error: ...`` line on stderr and exit status 1, never a
    traceback; Ctrl-C exits 130. Standard output is flushed before the command returns,
    so a failed write to it is still reported here."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        guard = _StdoutGuard.install()
        try:
            result = command(*args, **kwargs)
            if sys.stdout is not None:
                sys.stdout.flush()
            return result
        except TaggerError as err:  # a list of problems (bad spans): one line each
            for line in str(err).splitlines() or [""]:
                _say(f"error: {line}")
            raise typer.Exit(1) from None
        except KeyboardInterrupt as err:  # training says what it saved and how to go on
            _say(str(err) or "interrupted")
            raise typer.Exit(130) from None
        except OSError as err:
            _say(f"error: {_os_error(err)}")
            raise typer.Exit(1) from None
        finally:
            if guard is not None:
                guard.remove()

    return wrapper


class _StdoutError(OSError):
    """A write to standard output failed (``> /dev/full``, ``| head``)."""


class _StdoutGuard:
    """Stands in for ``sys.stdout`` while a command runs, so that a failed write to it
    (by ``typer.echo``, ``print`` or ``write_atomic``) is told apart from other errors."""

    def __init__(self, stream) -> None:
        self._stream = stream

    @classmethod
    def install(cls) -> _StdoutGuard | None:
        if sys.stdout is None or isinstance(sys.stdout, cls):
            return None
        sys.stdout = guard = cls(sys.stdout)
        return guard

    def remove(self) -> None:
        if sys.stdout is self:
            sys.stdout = self._stream

    def write(self, text):
        try:
            return self._stream.write(text)
        except OSError as err:
            raise _StdoutError(err.errno, err.strerror) from None

    def writelines(self, lines) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        try:
            self._stream.flush()
        except OSError as err:
            raise _StdoutError(err.errno, err.strerror) from None

    def __getattr__(self, name):
        return getattr(self._stream, name)


def _os_error(err: OSError) -> str:
    """The message for an ``OSError``: ``FILE: reason``, or what failed on stdout."""
    reason = err.strerror or str(err) or type(err).__name__
    if isinstance(err, _StdoutError):
        _silence_stdout()
        return f"cannot write standard output: {reason}"
    name = err.filename
    if name is not None:
        return f"{os.fsdecode(name) if isinstance(name, bytes) else name}: {reason}"
    return reason


def _silence_stdout() -> None:
    """Point a broken standard output at /dev/null: what is still buffered in it would
    otherwise fail again at exit, and Python would print its own message then."""
    try:
        fd = sys.stdout.fileno()
        null = os.open(os.devnull, os.O_WRONLY)
    except (AttributeError, ValueError, OSError):
        return
    try:
        os.dup2(null, fd)
    except OSError:
        pass
    finally:
        os.close(null)


def _say(line: str) -> None:
    """One line on stderr; nothing if stderr itself cannot be written."""
    try:
        typer.echo(line, err=True)
    except (OSError, ValueError):
        return


DataOpt = Annotated[
    str | None,
    typer.Option(
        "--data",
        help="Hub id (e.g. conll2003), folder of CoNLL files (train.txt, dev.txt, test.txt) "
        "or a training file. Default: the bundled corpus.",
    ),
]
ModelDataOpt = Annotated[
    str | None,
    typer.Option(
        "--data", help="Data source (as for train). Default: what the model was trained on."
    ),
]
DevOpt = Annotated[Path | None, typer.Option(help=f"{HELP['dev'].capitalize()}.")]
TestOpt = Annotated[Path | None, typer.Option(help=f"{HELP['test'].capitalize()}.")]
RevisionOpt = Annotated[str | None, typer.Option(help="Hub revision (branch, tag or commit).")]
EncodingOpt = Annotated[str | None, typer.Option(help="Text encoding of the input files.")]
TagColumnOpt = Annotated[
    int | None, typer.Option(help="Column holding the tag (0-based; -1 = last).")
]
DataFormat = Enum("DataFormat", [(v, v) for v in CHOICES["data_format"]], type=str)
Misaligned = Enum("Misaligned", [(v, v) for v in CHOICES["misaligned"]], type=str)
DataFormatOpt = Annotated[
    DataFormat | None, typer.Option("--format", help=f"{HELP['data_format']}.")
]
LangOpt = Annotated[str | None, typer.Option(help="spaCy language that tokenizes span texts.")]
MisalignedOpt = Annotated[Misaligned | None, typer.Option(help=f"{HELP['misaligned']}.")]
MapLabelsOpt = Annotated[str | None, typer.Option(help=f"{HELP['map_labels']}.")]
DeviceOpt = Annotated[
    str | None, typer.Option(help="auto, cpu, cuda or cuda:N (auto = GPU when present).")
]
PrecisionOpt = Annotated[
    Precision,
    typer.Option(
        help="Precision of the encoder: auto (bf16 where a short probe finds it faster "
        "on this CPU, or on a GPU with bf16), fp32 or bf16 (the CRF stays fp32)."
    ),
]
VerboseOpt = Annotated[
    bool, typer.Option("--verbose", "-v", help="Say on stderr which precision runs, and why.")
]


# ----------------------------------------------------------------- train
# `tagger train` is generated from TrainConfig: a flag for every field (spelled as in
# FLAGS, or --field-name), its help from HELP, its choices from CHOICES and the default
# shown from TrainConfig(). Every flag defaults to None, so that only the flags given on
# the command line override --config. A new field needs no edit here.


def config_options(config_cls: type[TrainConfig] = TrainConfig) -> list[inspect.Parameter]:
    """One keyword parameter ``Annotated[T | None, typer.Option(...)] = None`` per field of
    ``config_cls`` (but ``NO_FLAG``): the typer options of the fields, in field order."""
    defaults = config_cls()
    hints = typing.get_type_hints(config_cls)
    taken = _run_options()
    params = []
    for field in dataclasses.fields(config_cls):
        name = field.name
        if name in NO_FLAG:
            continue
        if name in taken:
            raise TypeError(f"config field {name!r} clashes with tagger train's --{name}")
        kind = _option_type(name, hints[name])
        decls = FLAGS.get(name) or (_flag(name, bool_flag=kind is bool),)
        help_text = HELP.get(name, "")
        shown = _shown_default(getattr(defaults, name), decls[0])
        if shown is not None:
            help_text = f"{help_text} [default: {shown}]".strip()
        option = typer.Option(*decls, help=help_text, show_default=False)
        params.append(
            inspect.Parameter(
                name,
                inspect.Parameter.KEYWORD_ONLY,
                default=None,
                annotation=Annotated[kind | None, option],
            )
        )
    return params


def _option_type(name: str, hint) -> type:
    """The value type of a field's flag: an Enum of ``CHOICES[name]``, or the field's
    type without ``None``."""
    if name in CHOICES:
        title = "".join(part.title() for part in name.split("_"))
        return Enum(title, [(value, value) for value in CHOICES[name]], type=str)
    union = typing.get_origin(hint) in (typing.Union, types.UnionType)
    kinds = [t for t in (typing.get_args(hint) if union else (hint,)) if t is not type(None)]
    if len(kinds) != 1 or kinds[0] not in (bool, int, float, str):
        raise TypeError(f"config field {name!r} of type {hint} has no command-line form")
    return kinds[0]


def _flag(name: str, bool_flag: bool) -> str:
    """``--field-name``, or ``--field-name/--no-field-name`` for a bool."""
    flag = name.replace("_", "-")
    return f"--{flag}/--no-{flag}" if bool_flag else f"--{flag}"


def _shown_default(value, decl: str) -> str | None:
    """How help shows a field's default: the value, a bool's flag spelling without the
    dashes (``bidirectional``, ``no-overwrite``), nothing for None."""
    if value is None:
        return None
    if isinstance(value, bool):
        on, _, off = decl.partition("/")
        return (on if value else off).lstrip("-")
    return str(value)


def train_command(config_cls: type[TrainConfig] = TrainConfig):
    """The ``train`` command function for ``config_cls``: ``**options`` with a signature
    (``__signature__``, which typer reads) of the fields' options and ``_train``'s own."""

    def train(**options) -> None:
        """Train a tagger and save it to a model folder (the bundled corpus by default)."""
        _train(config_cls, **options)

    params = [*config_options(config_cls), *_run_options().values()]
    train.__signature__ = inspect.Signature(params)
    return train


def _run_options() -> dict[str, inspect.Parameter]:
    """The options of ``tagger train`` that are not config fields: ``_train``'s own."""
    params = inspect.signature(_train, eval_str=True).parameters
    return {name: p for name, p in params.items() if p.kind is p.KEYWORD_ONLY}


def _train(
    config_cls: type[TrainConfig],
    *,
    config: Annotated[
        Path | None,
        typer.Option(
            help="JSON or .toml file of config fields (`tagger init-config` writes one); "
            "flags given here override it"
        ),
    ] = None,
    resume: Annotated[
        Path | None,
        typer.Option(
            help="continue an interrupted run from its checkpoint folder (OUTPUT.checkpoint); "
            "only --max-epochs, --patience, --device and --threads may change"
        ),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option(help="build data, vocabulary and model, print the summary, stop")
    ] = False,
    nproc: Annotated[
        int | None,
        typer.Option(
            help="train data-parallel in this many processes on this machine (torchrun; "
            "gloo on CPU, NCCL on GPUs); for several machines run torchrun yourself"
        ),
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="no progress output")] = False,
    **flags,
) -> None:
    """``tagger train``: the given ``flags`` (not None) override ``--config`` or the
    defaults, or the checkpoint's settings with ``--resume``."""
    if nproc is not None:
        from tagger.distributed import launch

        raise typer.Exit(launch(nproc, ["train", *_without_option(sys.argv[1:], "--nproc")]))
    from tagger.training import train as run

    base = config_cls.from_file(config) if config else config_cls()
    given = {k: _plain(v) for k, v in flags.items() if v is not None}
    if resume is not None:
        if config is not None or dry_run:
            raise TaggerError("--resume takes its settings from the checkpoint, not --config")
        run(progress=not quiet, resume=resume, **given)
        return
    final = config_cls.from_dict({**base.to_dict(), **given})
    if dry_run:
        from tagger.training import dry_run as summarize

        typer.echo(summarize(final, say=typer.echo))
        return
    run(final, progress=not quiet)


train = app.command()(user_errors(train_command()))


@app.command()
@user_errors
def evaluate(
    model: Annotated[Path, typer.Argument(help="Model folder.")],
    data: ModelDataOpt = None,
    split: Annotated[str, typer.Option(help="Split to score: train, validation or test.")] = "test",
    dev: DevOpt = None,
    test: TestOpt = None,
    strict: Annotated[bool, typer.Option(help="seqeval strict IOB2 mode.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the scores as JSON.")] = False,
    device: DeviceOpt = None,
    revision: RevisionOpt = None,
    encoding: EncodingOpt = None,
    tag_column: TagColumnOpt = None,
    data_format: DataFormatOpt = None,
    lang: LangOpt = None,
    misaligned: MisalignedOpt = None,
    map_labels: MapLabelsOpt = None,
    min_confidence: Annotated[
        float,
        typer.Option(help="Drop predicted entities below this confidence; shows the change."),
    ] = 0.0,
    errors: Annotated[
        bool,
        typer.Option(
            "--errors",
            help="Classify every wrong prediction (wrong type / boundary / both, missed, "
            "spurious): counts, confusion matrix, most frequent errors.",
        ),
    ] = False,
    top: Annotated[int, typer.Option(help="Most frequent errors to list with --errors.")] = 10,
    precision: PrecisionOpt = Precision.auto,
    verbose: VerboseOpt = False,
) -> None:
    """Score a model on a data split: per-type precision, recall, F1 (seqeval), and the
    reliability of its entity confidences. Entity types the model does not know count
    as missed and are named under the table."""
    from tagger.evaluation import evaluate as run
    from tagger.evaluation import format_calibration, format_report
    from tagger.predict import check_confidence

    check_confidence(min_confidence, "--min-confidence")
    tagger = _load_tagger(model, device, precision, verbose)
    options = dict(
        split=split,
        strict=strict,
        dev=dev,
        test=test,
        revision=revision,
        encoding=encoding,
        tag_column=tag_column,
        data_format=_plain(data_format),
        lang=lang,
        misaligned=_plain(misaligned),
        map_labels=map_labels,
    )
    # data None: what the model was trained on
    scores = run(tagger, data, calibration=True, errors=errors, **options)
    kept = run(tagger, data, min_confidence=min_confidence, **options) if min_confidence else None
    if as_json:
        typer.echo(
            json.dumps({**scores, "with_min_confidence": kept} if kept else scores, indent=2)
        )
        return
    source = data if data is not None else tagger.config.data
    typer.echo(f"{model} on {source or 'the bundled corpus'} ({split}, {scores['mode']} mode)\n")
    typer.echo(format_report(scores))
    typer.echo(
        f"\nconfidence of the predicted entities (temperature {tagger.temperature:.3g}"
        f"{'' if tagger.temperature != 1 else ', uncalibrated: see tagger calibrate'}):"
    )
    typer.echo(format_calibration(scores["calibration"]))
    if kept:
        change = ", ".join(
            f"{key} {100 * scores[key]:.2f} -> {100 * kept[key]:.2f}"
            for key in ("precision", "recall", "f1")
        )
        typer.echo(f"\nwith --min-confidence {min_confidence:g}: {change}")
    if errors:
        from tagger.analysis import format_errors

        typer.echo("\n" + format_errors(scores["errors"], top=top))


@app.command()
@user_errors
def predict(
    input: Annotated[
        str,
        typer.Argument(
            help="Text file to tag, or - for standard input. With --output-dir: a folder of "
            "text files, or with --split a dataset (hub id or CoNLL folder)."
        ),
    ],
    model: Annotated[Path, typer.Option("--model", "-m", help="Model folder.")] = Path(
        DEFAULT_MODEL_DIR
    ),
    fmt: Annotated[
        Format,
        typer.Option(
            "--format", "-f", help="conll: token and tag per line; jsonl: a record per line."
        ),
    ] = Format.jsonl,
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="Output file (default: standard output)."),
    ] = None,
    pretokenized: Annotated[
        bool, typer.Option(help="Input is one token per line, blank line between sentences.")
    ] = False,
    encoding: Annotated[str, typer.Option(help="Text encoding of the input.")] = "utf-8",
    device: DeviceOpt = None,
    html: Annotated[
        Path | None,
        typer.Option(
            help="Write a displaCy HTML page of the entities to this file instead of "
            "JSON lines or CoNLL (raw text only)."
        ),
    ] = None,
    output_dir: Annotated[
        Path | None,
        typer.Option(
            help="Bulk mode: write one shard per worker (JSON lines or Parquet) and a "
            "manifest.json here."
        ),
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(
            help="Bulk mode: workers (processes, Ray actors, local Spark threads), one shard "
            "each [default: 1; under torchrun: one per rank]."
        ),
    ] = None,
    shard: Annotated[
        int | None, typer.Option(help="Bulk mode: (re)run only this shard (0-based).")
    ] = None,
    split: Annotated[
        str | None,
        typer.Option(help="Bulk mode: tag the tokens of this split of the dataset INPUT."),
    ] = None,
    engine: Annotated[
        Engine,
        typer.Option(
            help="Bulk mode: tag in local processes, or on a Ray or Spark cluster (--workers "
            "actors or threads; the shards are written here)."
        ),
    ] = Engine.local,
    address: Annotated[
        str | None,
        typer.Option(
            help="Bulk mode: the cluster to join: a Ray address, or a Spark master URL "
            "[default: start a local one]."
        ),
    ] = None,
    shard_format: Annotated[
        ShardFormat,
        typer.Option(
            help="Bulk mode: write JSON-lines shards, or Parquet shards of the same records."
        ),
    ] = ShardFormat.jsonl,
    overwrite: Annotated[
        bool,
        typer.Option(
            help="Replace an existing --output or --html file, or another job's shards in "
            "--output-dir."
        ),
    ] = False,
    scores: Annotated[
        bool | None,
        typer.Option(
            "--scores/--no-scores",
            help="JSON lines: each entity's probability (score, 0-1) [default: on]; CoNLL: a "
            "third column, each token's probability of its tag [default: off].",
            show_default=False,
        ),
    ] = None,
    min_confidence: Annotated[
        float,
        typer.Option(
            help="Leave out entities the model gives a lower probability (0-1); their "
            "tokens are tagged O."
        ),
    ] = 0.0,
    precision: PrecisionOpt = Precision.auto,
    verbose: VerboseOpt = False,
) -> None:
    """Tag raw text (tokenized with spaCy) or pre-tokenized text, streaming."""
    from tagger.predict import check_confidence

    check_confidence(min_confidence, "--min-confidence")
    if output_dir is not None:
        if fmt is not Format.jsonl or pretokenized or output is not None or html is not None:
            raise TaggerError(
                "--output-dir writes JSON-lines shards: drop --format, --pretokenized, "
                "--output and --html"
            )
        if scores is False:
            raise TaggerError("--output-dir shards always carry scores: drop --no-scores")
        if verbose:
            raise TaggerError("--output-dir: each worker picks its own precision; drop --verbose")
        _bulk(
            input,
            output_dir,
            model,
            workers,
            shard,
            split,
            encoding,
            device,
            overwrite,
            min_confidence,
            engine.value,
            address,
            precision.value,
            shard_format.value,
        )
        return
    if workers is not None or shard is not None or split is not None:
        raise TaggerError("--workers, --shard and --split need --output-dir (bulk mode)")
    if shard_format is not ShardFormat.jsonl:
        raise TaggerError("--shard-format needs --output-dir (bulk mode)")
    if engine is not Engine.local or address is not None:
        raise TaggerError("--engine and --address need --output-dir (bulk mode)")

    if html is not None and (pretokenized or output is not None):
        raise TaggerError("--html writes the page itself: drop --pretokenized and --output")
    if html is not None and scores is not None:
        raise TaggerError("--html shows no scores: drop --scores/--no-scores")
    _tag_file(
        input,
        model,
        fmt.value,
        html or output,
        html is not None,
        pretokenized,
        encoding,
        device,
        overwrite,
        scores,
        min_confidence,
        precision,
        verbose,
    )


def _tag_file(
    source,
    model,
    fmt,
    target,
    html,
    pretokenized,
    encoding,
    device,
    overwrite,
    scores=None,
    min_confidence=0.0,
    precision=Precision.auto,
    verbose=False,
):
    """``predict`` of one file or stdin into ``target`` (stdout when None): JSON lines,
    CoNLL or (``html``) a displaCy page; ``scores`` None is the format's default, and
    entities below ``min_confidence`` are left out. The output is checked, and its
    temporary file made, before the model is loaded."""
    from tagger.io import CONFIG, EPOCHS, METRICS, VOCAB, WEIGHTS, AtomicWriter, check_output_file
    from tagger.predict import predict_lines, read_lines

    inputs = [] if source == "-" else [Path(source)]
    inputs += [model / name for name in (CONFIG, VOCAB, WEIGHTS, METRICS, EPOCHS)]
    check_output_file(target, inputs, "--html" if html else "--output", overwrite=overwrite)
    with AtomicWriter(target) as out:
        tagger = _load_tagger(model, device, precision, verbose)
        if html:
            from tagger.spacy_component import build_pipeline, render_html

            nlp = build_pipeline(tagger, min_confidence=min_confidence)
            docs = nlp.pipe(read_lines(source, encoding), batch_size=256)
            out.write(render_html(docs))
            return
        from tagger.runtime import limit_heap_growth

        limit_heap_growth()  # flat memory over inputs of any size
        lines = read_lines(source, encoding)
        for chunk in predict_lines(tagger, lines, fmt, pretokenized, scores, min_confidence):
            out.write(chunk)


def _load_tagger(model: Path, device: str | None, precision: Precision, verbose: bool):
    """``Tagger.load`` for ``predict`` and ``evaluate``; with ``verbose`` the precision it
    runs in, and why, on stderr."""
    from tagger.predict import Tagger

    tagger = Tagger.load(model, device=device or "auto", precision=precision.value)
    if verbose:
        _say(f"precision: {tagger.precision_note}")
    return tagger


@app.command("serve")
@user_errors
def serve_command(
    model: Annotated[
        Path,
        typer.Argument(help="Model folder (single or ensemble) or exported spaCy pipeline."),
    ] = Path(DEFAULT_MODEL_DIR),
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    workers: Annotated[
        int, typer.Option(help="Server processes, each with its own copy of the model.")
    ] = 1,
    device: DeviceOpt = None,
    threads: Annotated[
        int | None,
        typer.Option(
            help="Torch threads per worker [default: the cores shared by the workers, "
            "less one each for the event loop; at least 1]."
        ),
    ] = None,
    batch_wait_ms: Annotated[
        float,
        typer.Option(help="Milliseconds a request waits for others to share its model call."),
    ] = 5.0,
    max_batch_sentences: Annotated[
        int, typer.Option(help="Most texts or token lists in one model call.")
    ] = 64,
    batching: Annotated[
        bool, typer.Option(help="--no-batching: one model call per request (for comparison).")
    ] = True,
    max_body_bytes: Annotated[
        int, typer.Option(help="Larger request bodies are refused (413).")
    ] = 1_000_000,
    max_texts: Annotated[
        int, typer.Option(help="Most texts or token lists in one request (413 above).")
    ] = 1000,
    max_chars: Annotated[
        int, typer.Option(help="Most characters in one request's texts or tokens (413 above).")
    ] = 100_000,
    body_timeout: Annotated[
        float, typer.Option(help="Seconds a client may take to send its request body (408).")
    ] = 10.0,
    access_log: Annotated[bool, typer.Option(help="Log every request.")] = True,
    precision: PrecisionOpt = Precision.auto,
) -> None:
    """Serve a model over HTTP: POST /v1/entities, GET /v1/model, GET /health, and a page
    at / to try it in a browser. Needs the serve extra: pip install "tagger[serve]"."""
    from tagger.serve import Options
    from tagger.serve.server import serve

    options = Options(
        device=device or "auto",
        precision=precision.value,
        threads=threads,
        batching=batching,
        batch_wait_ms=batch_wait_ms,
        max_batch_sentences=max_batch_sentences,
        max_body_bytes=max_body_bytes,
        max_texts=max_texts,
        max_chars=max_chars,
        body_timeout=body_timeout,
    )
    serve(model, host, port, workers, options, access_log)


@app.command("export-spacy")
@user_errors
def export_spacy_command(
    model: Annotated[Path, typer.Argument(help="Model folder.")],
    output: Annotated[Path, typer.Argument(help="spaCy pipeline folder to write.")],
    lang: Annotated[
        str | None, typer.Option(help="spaCy language code (default: the model's own, e.g. en).")
    ] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing output folder.")] = False,
) -> None:
    """Write a spaCy pipeline (tokenizer, sentencizer, tagger_ner) that spacy.load reads."""
    from tagger.spacy_component import export_spacy

    path = export_spacy(model, output, lang=lang, overwrite=overwrite)
    typer.echo(f"wrote {path}; load it with spacy.load({str(path)!r})")


@app.command("summary")
@user_errors
def summary_command(model: Annotated[Path, typer.Argument(help="Model folder.")]) -> None:
    """Print the model's layers, output shapes and parameter counts (like Keras)."""
    from tagger.predict import Tagger
    from tagger.summary import summary

    tagger = Tagger.load(model, device="cpu")
    cfg = tagger.config
    typer.echo(
        f"{model}: {cfg.cell}, {cfg.decoder}, char {cfg.char_encoder}, scheme {cfg.scheme}, "
        f"{len(tagger.vocab.words):,} words, {len(tagger.vocab.labels)} labels"
    )
    typer.echo(summary(tagger.model))


@app.command("report")
@user_errors
def report_command(
    model: Annotated[Path, typer.Argument(help="Model folder.")],
    output: Annotated[
        Path, typer.Option("--output", "-o", help="HTML file to write (- for standard output).")
    ] = Path("report.html"),
    data: ModelDataOpt = None,
    split: Annotated[str, typer.Option(help="Split to report on.")] = "test",
    dev: DevOpt = None,
    test: TestOpt = None,
    map_labels: MapLabelsOpt = None,
    device: DeviceOpt = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing file.")] = False,
) -> None:
    """One self-contained HTML page to read in a browser: scores per type, the confusion
    heat map, the reliability diagram, the training curves and every error in context,
    filterable by kind and type."""
    from tagger.evaluation import evaluate as run
    from tagger.io import PLOT, check_output_file
    from tagger.predict import Tagger
    from tagger.report import write_report

    check_output_file(output, flag="--output", overwrite=overwrite)  # before any work
    tagger = Tagger.load(model, device=device or "auto")
    scores = run(
        tagger,
        data,
        split,
        calibration=True,
        errors=True,
        dev=dev,
        test=test,
        map_labels=map_labels,
    )
    plot = model / PLOT
    source = data if data is not None else tagger.config.data
    page = {
        "title": f"{model} on {source or 'the bundled corpus'} ({split})",
        "scores": scores,
        "analysis": scores["errors"],
        "calibration": {**scores["calibration"], "temperature": tagger.temperature},
        "training_png": plot.read_bytes() if plot.is_file() else None,
    }
    write_report(page, output, overwrite)
    if str(output) != "-":
        _say(f"wrote {output}")


@app.command("calibrate")
@user_errors
def calibrate_command(
    model: Annotated[Path, typer.Argument(help="Model folder (rewritten with the temperature).")],
    data: Annotated[
        str | None,
        typer.Option("--data", help="Data whose dev split to fit on. Default: the model's own."),
    ] = None,
    dev: DevOpt = None,
    test: TestOpt = None,
    device: DeviceOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Fit the temperature that calibrates the model's confidences on half its dev split,
    store it in the model folder, and show the reliability before and after on the other
    half and on test."""
    from tagger.calibration import calibrate
    from tagger.evaluation import format_calibration

    report = calibrate(model, data, device=device or "auto", dev=dev, test=test)
    if as_json:
        typer.echo(json.dumps(report, indent=2))
        return
    typer.echo(f"temperature {report['temperature']:.3f}, fitted on {report['fitted_on']}")
    for name, parts in report.items():
        if not isinstance(parts, dict):
            continue
        for when in ("before", "after"):
            typer.echo(f"\n{name}, {when}:")
            typer.echo(format_calibration(parts[when]))
    typer.echo(f"\nsaved to {model}/config.json (calibration_temperature)")


@app.command("data")
@user_errors
def data_report(
    source: Annotated[
        str | None,
        typer.Argument(
            help="Hub id, folder, or a CoNLL, span JSONL/JSON or .spacy file "
            "(default: bundled corpus)."
        ),
    ] = None,
    dev: DevOpt = None,
    test: TestOpt = None,
    revision: RevisionOpt = None,
    encoding: Annotated[str, typer.Option(help="Text encoding of the files.")] = "utf-8",
    tag_column: Annotated[int, typer.Option(help="Column holding the tag (-1 = last).")] = -1,
    data_format: DataFormatOpt = None,
    lang: Annotated[str, typer.Option(help="spaCy language that tokenizes span texts.")] = "en",
    misaligned: MisalignedOpt = None,
    map_labels: MapLabelsOpt = None,
    dev_fraction: Annotated[float, typer.Option(help=f"{HELP['dev_fraction']}.")] = 0.0,
    test_fraction: Annotated[float, typer.Option(help=f"{HELP['test_fraction']}.")] = 0.0,
    seed: Annotated[int, typer.Option(help="Seed of the dev/test fractions.")] = 13,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Check a corpus before training: sizes, mentions per type, scheme, labels, and what
    reading changed (label map, carved splits, misaligned spans)."""
    from tagger.data import read_source, report

    options = TrainConfig(
        tag_column=tag_column,
        encoding=encoding,
        lang=lang,
        data_format=_plain(data_format) or "auto",
        misaligned=_plain(misaligned) or "error",
        map_labels=map_labels,
        dev_fraction=dev_fraction,
        test_fraction=test_fraction,
        seed=seed,
        dev=None if dev is None else str(dev),
        test=None if test is None else str(test),
        revision=revision,
    ).validate("options")
    corpus = read_source(source, **options.source_options())
    rep = report(corpus)
    if as_json:
        typer.echo(json.dumps(rep, indent=2))
        return
    types = sorted({t for row in rep["splits"].values() for t in row["mentions"]})
    header = ["split", "sentences", "tokens", *types, "mentions", "scheme"]
    rows = [
        [
            split,
            f"{row['sentences']:,}",
            f"{row['tokens']:,}",
            *(f"{row['mentions'].get(t, 0):,}" for t in types),
            f"{row['total_mentions']:,}",
            row["scheme"],
        ]
        for split, row in rep["splits"].items()
    ]
    _echo_table(header, rows, left={0, len(header) - 1})
    typer.echo("")
    for split, row in rep["splits"].items():
        typer.echo(f"{split}: {row['source']}")
    labels = sorted({t for row in rep["splits"].values() for t in row["labels"]})
    typer.echo(f"scheme: {rep['scheme']} (normalised to IOB2 for training)")
    typer.echo(f"labels ({len(labels)}): {' '.join(labels)}")
    for note in rep["notes"]:
        typer.echo(note)


@app.command("convert")
@user_errors
def convert_command(
    source: Annotated[Path, typer.Argument(help="File to read: CoNLL, span JSONL/JSON or .spacy.")],
    output: Annotated[Path, typer.Argument(help="File to write.")],
    to: Annotated[
        ConvertTarget,
        typer.Option(
            help="conll (two columns, IOB2), jsonl (Prodigy-style "
            "text, tokens and spans) or spacy (DocBin)."
        ),
    ],
    data_format: DataFormatOpt = None,
    lang: Annotated[str, typer.Option(help="spaCy language that tokenizes span texts.")] = "en",
    misaligned: MisalignedOpt = None,
    tag_column: Annotated[int, typer.Option(help="Column holding the tag (-1 = last).")] = -1,
    encoding: Annotated[str, typer.Option(help="Text encoding of the input.")] = "utf-8",
    overwrite: Annotated[bool, typer.Option(help="Replace an existing output file.")] = False,
) -> None:
    """Convert annotations between CoNLL columns, span JSONL (doccano, Label Studio,
    Prodigy, tagger predict) and spaCy DocBin, losing nothing the target can hold."""
    from tagger.convert import convert

    TrainConfig(lang=lang, tag_column=tag_column, encoding=encoding).validate("options")
    notes: list[str] = []
    counts = convert(
        source,
        output,
        _plain(to),
        data_format=_plain(data_format) or "auto",
        lang=lang,
        misaligned=_plain(misaligned) or "error",
        tag_column=tag_column,
        encoding=encoding,
        overwrite=overwrite,
        notes=notes,
    )
    for note in notes:
        _say(note)
    _say(f"wrote {output}: " + ", ".join(f"{value:,} {key}" for key, value in counts.items()))


@app.command("init-config")
@user_errors
def init_config(
    path: Annotated[Path, typer.Argument(help="TOML file to write.")] = Path("tagger.toml"),
    force: Annotated[bool, typer.Option(help="Replace an existing file.")] = False,
) -> None:
    """Write a commented TOML file of every training option and its default."""
    from tagger.config import toml_template
    from tagger.io import check_output_file, write_atomic

    if path.is_dir():
        raise TaggerError(f"{path} is a folder; give the name of the TOML file to write")
    if path.exists() and not force:
        raise TaggerError(f"{path} already exists; pass --force to replace it")
    check_output_file(path, flag="PATH")
    write_atomic([toml_template()], path)
    typer.echo(f"wrote {path}; edit it, then run `tagger train --config {path}`")


@app.command()
@user_errors
def compare(
    models: Annotated[list[Path], typer.Argument(help="Model folders.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the rows as JSON.")] = False,
) -> None:
    """Compare trained models: settings, size, epochs, speed, dev and test F1 (per type)."""
    rows = [_model_row(path) for path in models]
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    types = sorted({t for row in rows for t in row["test_per_type"]})
    header = ["model", "cell", "decoder", "chars", "parameters", "epochs", "best", "s/epoch"]
    header += ["dev_f1", "test_f1", *types]
    table = [
        [
            row["model"],
            row["cell"],
            row["decoder"],
            row["char_encoder"],
            _fmt(row["parameters"], "{:,}"),
            str(row["epochs"]),
            _fmt(row["best_epoch"], "{}"),
            _fmt(row["seconds_per_epoch"], "{:.2f}"),
            _fmt(row["dev_f1"], "{:.2f}", 100),
            _fmt(row["test_f1"], "{:.2f}", 100),
            *(_fmt(row["test_per_type"].get(t), "{:.2f}", 100) for t in types),
        ]
        for row in rows
    ]
    _echo_table(header, table, left={0, 1, 2, 3})
    typer.echo("\nF1 in percent; the entity-type columns are test F1.")


@app.command()
@user_errors
def plot(
    model: Annotated[Path, typer.Argument(help="Model folder.")],
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="PNG file [default: MODEL/training.png]."),
    ] = None,
    overwrite: Annotated[
        bool, typer.Option(help="Replace an existing --output file (MODEL/training.png always).")
    ] = False,
) -> None:
    """Draw train loss and dev F1 per epoch, best epoch marked, as a PNG."""
    from tagger.io import CONFIG, METRICS, PLOT, check_output_file, read_metrics
    from tagger.plot import plot_training

    header, metrics = read_metrics(model)
    path = output or model / PLOT
    if str(path) == "-":
        raise TaggerError("tagger plot writes a PNG file: give --output a file name, not -")
    # the model's own training.png is tagger's to redraw; any other file only when asked
    check_output_file(path, [model / CONFIG, model / METRICS], overwrite=overwrite or not output)
    cfg = header["config"]
    title = f"{model.name}: {cfg.get('cell')}, {cfg.get('decoder')}"
    path = plot_training(metrics, path, title)
    typer.echo(f"wrote {path}")


def _model_row(path: Path) -> dict:
    """One model's settings and scores for ``compare``, from its JSON files only."""
    from statistics import median

    from tagger.io import read_metrics

    header, metrics = read_metrics(path)
    cfg, epochs = header["config"], metrics.get("epochs") or []
    if not epochs:  # an ensemble: all its members' epochs
        epochs = [e for member in metrics.get("members", []) for e in member.get("epochs", [])]
    test = metrics.get("test") or {}
    return {
        "model": str(path),
        "cell": cfg.get("cell"),
        "decoder": cfg.get("decoder"),
        "char_encoder": cfg.get("char_encoder"),
        "parameters": metrics.get("parameters"),
        "epochs": len(epochs),
        "best_epoch": metrics.get("best_epoch"),
        "seconds_per_epoch": median(e["seconds"] for e in epochs) if epochs else None,
        "dev_f1": metrics.get("dev_f1"),
        "test_f1": metrics.get("test_f1"),
        "test_per_type": {t: s["f1"] for t, s in test.get("per_type", {}).items()},
    }


def _fmt(value, spec: str, scale: int = 1) -> str:
    """``spec`` applied to ``value * scale``; ``-`` for a missing value."""
    return "-" if value is None else spec.format(value * scale)


def _echo_table(header: list[str], rows: list[list[str]], left: set[int]) -> None:
    """Plain aligned columns (parseable, no colours): ``left`` columns left-aligned."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for r in [header, *rows]:
        typer.echo(
            "  ".join(
                c.ljust(w) if i in left else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))
            )
        )


def _bulk(
    source,
    output_dir,
    model,
    workers,
    shard,
    split,
    encoding,
    device,
    overwrite,
    min_confidence=0.0,
    engine="local",
    address=None,
    precision="auto",
    shard_format="jsonl",
) -> None:
    """``predict --output-dir``: sharded bulk tagging (``tagger.bulk``)."""
    from tagger import bulk
    from tagger.distributed import current

    world = current()
    if world.distributed:  # under torchrun every rank tags its own shard
        if workers not in (None, world.size) or shard is not None:
            raise TaggerError("under torchrun the ranks are the workers: drop --workers/--shard")
        if engine != "local":
            raise TaggerError("under torchrun the ranks are the workers: drop --engine")
        workers, shard = world.size, world.rank
    job = bulk.Job(
        source=source,
        output_dir=str(output_dir),
        model=str(model),
        workers=1 if workers is None else workers,
        split=split,
        encoding=encoding,
        device=device or "auto",
        precision=precision,
        min_confidence=min_confidence,
        engine=engine,
        address=address,
        shard_format=shard_format,
    )
    manifest = bulk.run(job, None if shard is None else [shard], overwrite=overwrite)
    done = len(manifest["shards"])
    status = "complete" if manifest["complete"] else f"missing shards {manifest['missing']}"
    typer.echo(
        f"{output_dir}: {done}/{job.workers} shards, {manifest['records']:,} records ({status})",
        err=True,
    )


def _without_option(argv: list[str], name: str) -> list[str]:
    """``argv`` without ``name VALUE`` / ``name=VALUE`` and before the command name."""
    out, skip = [], False
    for arg in argv[argv.index("train") + 1 :] if "train" in argv else argv:
        if skip:
            skip = False
        elif arg == name:
            skip = True
        elif not arg.startswith(name + "="):
            out.append(arg)
    return out


def _plain(value):
    """Enum members and paths as the plain JSON values the config holds."""
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, Path):
        return str(value)
    return value


def main() -> None:
    """The ``tagger`` command. Errors outside a command (``tagger --help > /dev/full``,
    Ctrl-C while starting) are reported like those inside one."""
    guard = _StdoutGuard.install()
    try:
        app()
    except KeyboardInterrupt:
        _say("interrupted")
        sys.exit(130)
    except OSError as err:
        _say(f"error: {_os_error(err)}")
        sys.exit(1)
    finally:
        if guard is not None:
            guard.remove()
