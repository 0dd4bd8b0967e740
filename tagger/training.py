"""The training loop: data -> vocabulary -> model -> epochs with early stopping on dev F1."""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from tagger import schemes
from tagger.batching import Encoded, encode
from tagger.calibration import calibrates_on, calibration_report, format_summary
from tagger.checkpoint import META as CHECKPOINT_META
from tagger.checkpoint import (
    checkpoint_dir,
    load_checkpoint,
    save_checkpoint,
)
from tagger.config import TrainConfig
from tagger.continued import Continuation, Replay
from tagger.data import decoded_tags, load_data, tag_names
from tagger.distill import Teacher, distillation_split, read_unlabeled
from tagger.distributed import SINGLE, World, barrier, broadcast
from tagger.distributed import current as current_world
from tagger.distributed import start as start_distributed
from tagger.distributed import stop as stop_distributed
from tagger.embeddings import RULES, Vectors, find_vectors
from tagger.errors import TaggerError
from tagger.evaluation import format_report, score
from tagger.io import (
    ENSEMBLE_PLAN,
    PLOT,
    ModelFiles,
    OutputLock,
    check_replaceable,
    folder_kind,
    read_metrics,
    recover_dir,
    save_model,
    write_dir,
)
from tagger.model import Ensemble, SequenceTagger
from tagger.predict import Tagger
from tagger.runtime import resolve_device, seed_everything, set_threads, training_precision
from tagger.trainer import TEACHER_PART, Diverged, TrainingRun
from tagger.vocab import Vocab

if TYPE_CHECKING:
    from datasets import DatasetDict


def fingerprint(tokens: list[list[str]], tags: list[list[str]]) -> str:
    """sha256 of the training sentences and (IOB2) tags: which data a model saw."""
    digest = hashlib.sha256()
    for toks, tg in zip(tokens, tags):
        digest.update(("\t".join(toks) + "\n" + "\t".join(tg) + "\n\n").encode("utf-8"))
    return digest.hexdigest()


@dataclass
class Setup:
    """Everything a run needs before its first step: data, vocabulary, model."""

    config: TrainConfig
    data: DatasetDict
    vocab: Vocab
    encoded: dict[str, Encoded]
    gold: dict[str, list[list[str]]]  # IOB2 tags per split, what scores compare against
    model: SequenceTagger
    device: torch.device
    init_from: dict | None = None  # continued training: the model it started from
    replay: Replay | None = None  # continued training: old sentences mixed into each epoch
    distilled: dict | None = None  # distillation: the teacher and the unlabeled text


def build(config: TrainConfig, say=lambda *_: None, world: World = SINGLE) -> Setup:
    """Load the data, build the vocabulary (train split only) and the model.

    With ``init_from`` the architecture, the vocabulary to grow and the weights come from
    that model (``tagger.continued``). In a distributed run rank 0 builds the vocabulary
    and sends it to the others, and every rank joins the process group on its own device."""
    continuation = None
    if config.init_from:  # first: loading a model draws random numbers
        continuation = Continuation(config)
        config = continuation.config
        say(continuation.describe())
    seed_everything(config.seed)
    device = resolve_device(config.device)
    if world.distributed:
        device = start_distributed(world, device)
    training_precision(device, config.precision)  # bf16 where it cannot run: say so first
    data = load_data(
        config.data,
        scheme=config.scheme,
        unseen_labels=config.unseen_labels,
        known_types=continuation.init.entity_types if continuation else (),
        **config.source_options(),
    )
    if "validation" not in data:
        raise TaggerError(
            "the data has no validation split, needed for early stopping: give --dev PATH "
            "(or a folder with dev.txt), or carve one out with --dev-fraction 0.1"
        )
    vectors = None
    if config.embeddings:
        vectors = _read_embeddings(config, data, say)
        if vectors.dim != config.word_dim:
            config = replace(config, word_dim=vectors.dim)
    vocab = None
    if world.main and continuation is not None:
        vocab = continuation.vocab(data["train"])
    elif world.main:
        vocab = Vocab.build(
            data["train"]["tokens"],
            tag_names(data["train"]),
            min_freq=config.min_freq,
            max_size=config.max_vocab,
            lowercase=config.lowercase,
            normalize_digits=config.normalize_digits,
            vector_forms=vectors.forms if vectors else None,
        )
    if world.distributed:
        vocab = Vocab.from_dict(broadcast(vocab.to_dict() if vocab else None, world))
    encoded = {split: encode(vocab, ds["tokens"], decoded_tags(ds)) for split, ds in data.items()}
    gold = {split: [schemes.to_iob2(t) for t in decoded_tags(ds)] for split, ds in data.items()}
    if continuation is not None:
        model = continuation.model(vocab)
        replay = continuation.replay(vocab, data["train"])
    else:
        model, replay = SequenceTagger(config.model, vocab), None
    if vectors is not None:
        model.embedder.load_pretrained(vocab, vectors.vectors, config.freeze_embeddings)
    if config.unk_replace:
        train_enc = encoded["train"]
        counts = np.bincount(train_enc.type_words[train_enc.type_ids], minlength=len(vocab.words))
        if vectors is not None:  # a word with a pretrained vector keeps it (word dropout only)
            counts[[w in vectors.vectors for w in vocab.words]] = 0
        model.embedder.set_word_counts(torch.from_numpy(counts), config.unk_replace)
    distilled = None
    if config.teacher:
        encoded["train"], distilled = _distillation(config, data, vocab, device, say)
    per_epoch = replay.new + replay.per_epoch if replay is not None else len(encoded["train"])
    config, schedule = config.scheduled(per_epoch)
    if schedule:
        say(schedule)
    say(
        f"data: {', '.join(f'{s} {len(ds):,} sentences' for s, ds in data.items())}; "
        f"vocab: {len(vocab.words):,} words, {len(vocab.chars):,} chars, "
        f"{len(vocab.labels)} labels; "
        f"model: {config.cell} x{config.num_layers}{' bi' if config.bidirectional else ''}, "
        f"{config.decoder}, {sum(p.numel() for p in model.parameters()):,} parameters on {device}"
        + (f", {world.size} processes" if world.distributed else "")
    )
    init_from = None
    if continuation is not None:
        say(continuation.grown(vocab, replay))
        init_from = continuation.record()
    return Setup(
        config, data, vocab, encoded, gold, model.to(device), device, init_from, replay, distilled
    )


def _distillation(config: TrainConfig, data, vocab: Vocab, device, say) -> tuple[Encoded, dict]:
    """The training split with the teacher's distributions (``tagger.distill``), and
    what the model folder records of the teacher."""
    teacher = Teacher(config.teacher, vocab.labels, device)
    unlabeled, left_out = [], 0
    if config.unlabeled:
        held_out = {
            tuple(tokens)
            for split in ("validation", "test")
            if split in data
            for tokens in data[split]["tokens"]
        }
        unlabeled, left_out = read_unlabeled(
            config.unlabeled, config.lang, config.encoding, held_out
        )
    train = data["train"]
    encoded = distillation_split(
        teacher,
        vocab,
        train["tokens"],
        decoded_tags(train),
        unlabeled,
        config.distill_temperature,
    )
    record = {
        "teacher": str(teacher.path),
        "teacher_weights_sha256": teacher.weights_sha256,
        "teacher_dev_f1": teacher.tagger.metrics.get("dev_f1"),
        "teacher_test_f1": teacher.tagger.metrics.get("test_f1"),
        "unlabeled": config.unlabeled,
        "unlabeled_sentences": len(unlabeled),
        "unlabeled_left_out": left_out,
    }
    say(
        f"distilling {teacher.path} (weight {config.distill_weight:g}, temperature "
        f"{config.distill_temperature:g}) on {len(train):,} training sentences"
        + (
            f" and {len(unlabeled):,} unlabeled ones ({left_out:,} also in dev/test left out)"
            if config.unlabeled
            else ""
        )
    )
    return encoded, record


def dry_run(config: TrainConfig, say=lambda *_: None) -> str:
    """Build the data, vocabulary and model a run would train, train nothing, and return
    the model summary (``tagger train --dry-run``): a cheap check of a config."""
    from tagger.summary import summary

    config = config.validate()
    set_threads(config.threads)
    setup = build(replace(config, ensemble=1), say=say)
    model = setup.model
    if config.ensemble > 1:
        model = Ensemble.of([model] * config.ensemble, setup.config.model, setup.vocab)
    return summary(model)


class Interrupted(KeyboardInterrupt):
    """Ctrl-C in training; the message says what was saved and how to go on. A
    ``KeyboardInterrupt``, so notebooks stop as usual and the CLI exits 130."""


RESUMABLE = frozenset({"max_epochs", "patience", "device", "threads"})  # may change on resume


def train(
    config: TrainConfig | None = None,
    *,
    progress: bool = True,
    resume: str | Path | None = None,
    **overrides,
) -> Path:
    """Train a tagger and write its model folder; returns the folder's path.

    ``overrides`` replace fields of ``config`` (``train(max_epochs=5, cell="gru")``).
    A checkpoint is written after every epoch to ``<output>.checkpoint``; ``resume`` names
    the checkpoint of an interrupted run, which then continues with the checkpoint's config
    (only ``max_epochs``, ``patience``, ``device`` and ``threads`` may be overridden) and
    ends with the same weights as an uninterrupted run. Ctrl-C ends training early, keeps
    the best epoch so far, says how to resume and raises ``Interrupted``.
    """
    ckpt, work = None, None
    if resume is not None:
        resume = Path(resume).absolute()
        if (resume / ENSEMBLE_PLAN).is_file():
            work, saved = resume, _read_plan(resume)
        else:
            ckpt = load_checkpoint(resume)
            saved = ckpt.config
        if config is not None or set(overrides) - RESUMABLE:
            fixed = sorted(set(overrides) - RESUMABLE) or ["config"]
            raise TaggerError(
                f"a resumed run keeps the settings of its checkpoint; only "
                f"{', '.join(sorted(RESUMABLE))} may change, not {', '.join(fixed)}"
            )
        config = replace(saved, **overrides).validate()
    else:
        config = _absolute(replace(config or TrainConfig(), **overrides).validate())
    world = current_world()
    # One run owns an output and its checkpoint; an ensemble's members share the lock.
    lock = OutputLock(Path(config.output)) if world.main else contextlib.nullcontext()
    with lock:
        if config.ensemble > 1:
            return _train_ensemble(config, progress, work, overrides)
        return _train_one(config, ckpt, resume, progress)


def _absolute(config: TrainConfig) -> TrainConfig:
    """The config with its local paths made absolute, so that a checkpoint resumed from
    another working directory reads the same files and writes where the run would have."""
    paths = {"output": config.output}
    for key in ("data", "dev", "test", "embeddings", "init_from", "replay"):
        value = getattr(config, key)
        if value and Path(value).expanduser().exists():
            paths[key] = value
    return replace(config, **{k: str(Path(v).expanduser().absolute()) for k, v in paths.items()})


def _train_one(config: TrainConfig, ckpt, resume: Path | None, progress: bool) -> Path:
    """One model: check the output is free, then ``_run`` (the caller holds the lock)."""
    output = Path(config.output)
    saved_to = resume if resume is not None else checkpoint_dir(output)
    replace_old = _check_free(output, saved_to, config.overwrite, resuming=ckpt is not None)
    set_threads(config.threads)
    world = current_world()
    say = _printer(progress and world.main)
    try:
        setup = build(config, say, world)
        run = TrainingRun(setup, world)
        if ckpt is not None:
            if ckpt.fingerprint != run.fingerprint or ckpt.vocab != setup.vocab:
                what = f"the training data of {config.data or 'the bundled corpus'}"
                data_part = lambda f: f.split(TEACHER_PART)[0]  # noqa: E731
                if data_part(ckpt.fingerprint) == data_part(run.fingerprint):
                    what = f"the teacher {config.teacher} (or the unlabeled text)"
                raise TaggerError(
                    f"{what} changed since the checkpoint {saved_to} was written; "
                    "start a new run instead"
                )
            run.restore(ckpt)
            say(f"resuming from {saved_to} after epoch {ckpt.epoch}")
        return _run(run, ckpt.epoch if ckpt else 0, saved_to, output, say, progress, replace_old)
    finally:
        stop_distributed(world)


def _run(
    run: TrainingRun,
    checkpointed: int,
    saved_to: Path,
    output: Path,
    say,
    progress: bool,
    replace_old: bool,
) -> Path:
    """The epoch loop with early stopping, checkpoints and Ctrl-C, then the model folder
    (rank 0 writes). ``checkpointed``: the last epoch in the checkpoint; ``replace_old``:
    the output may be replaced (asked for, or an interrupted run's model that this
    resumed run continues), decided before the run started."""
    config, world = run.config, run.world
    started = time.perf_counter()
    interrupted = False
    try:
        for epoch in range(len(run.epochs) + 1, config.max_epochs + 1):
            if run.stopping.should_stop:
                break  # a resumed run that had already stopped early
            entry, improved = run.epoch(epoch, progress)
            if world.main:
                elapsed = run.seconds_before + time.perf_counter() - started
                save_checkpoint(saved_to, run.snapshot(epoch, elapsed))
            checkpointed = epoch
            say(
                f"epoch {epoch:3d}/{config.max_epochs}  loss {entry['loss']:8.4f}"
                f"  dev F1 {100 * entry['dev_f1']:6.2f}  {entry['seconds']:6.1f} s"
                f"  {entry['tokens_per_s']:9,.0f} tok/s{'  *' if improved else ''}"
            )
            if run.stopping.should_stop:
                say(f"no dev improvement for {config.patience} epochs: stopping")
                break
    except Diverged as err:
        kept = f"; the checkpoint after epoch {checkpointed} is kept in {saved_to}"
        raise Diverged(
            f"{err}: no model was saved{kept if checkpointed else ''}; "
            f"try a lower learning rate (--lr, now {config.lr:g})"
        ) from None
    except KeyboardInterrupt:
        if run.best_state is None:
            raise Interrupted(
                "interrupted before the first epoch ended; nothing was saved"
            ) from None
        interrupted = True
    run.use_best()
    seconds = run.seconds_before + time.perf_counter() - started
    best = run.stopping.best_epoch
    history = {
        "best_epoch": best,
        "seconds": round(seconds, 1),
        "interrupted": interrupted,
        "epochs": run.epochs,
    }
    save_final(
        run.final_model,
        config,
        run.setup,
        output,
        history,
        replace_old,
        say,
        f"best epoch {best}",
        world,
    )
    if world.main and not interrupted:
        shutil.rmtree(saved_to, ignore_errors=True)  # the model is complete: no resume
    if interrupted:
        hint = (
            f"the checkpoint after epoch {checkpointed} is in {saved_to}\n"
            f"continue with: tagger train --resume {saved_to}"
            if checkpointed
            else "no checkpoint was written yet"
        )
        raise Interrupted(
            f"interrupted in epoch {checkpointed + 1}: {hint}\n"
            f"the best epoch so far ({run.stopping.best_epoch}) is saved to {output}"
            if world.main
            else ""
        )
    return output


def save_final(
    model: torch.nn.Module,
    config: TrainConfig,
    setup: Setup,
    output: Path,
    history: dict,
    replace_old: bool,
    say,
    heading: str,
    world: World = SINGLE,
) -> None:
    """Score the final model (one tagger or an ensemble) on dev and test, write its
    model folder (rank 0) and print the reports: the one place a run's result is saved.
    ``history``: ``best_epoch``, ``seconds``, ``interrupted``, ``epochs`` (and an
    ensemble's ``members``). A continued run also records the model it started from
    (``init_from``) and its ``replay``."""
    scorer = Tagger(model, config, setup.vocab)
    final = {
        split: score(
            setup.gold[split], scorer.predict_encoded(setup.encoded[split], world=world)[0]
        )
        for split in ("validation", "test")
        if split in setup.encoded
    }
    metrics = {
        "best_epoch": history["best_epoch"],  # first in metrics.json
        "dev_f1": final["validation"]["f1"],
        "test_f1": final["test"]["f1"] if "test" in final else None,
        "dev": final["validation"],
        "test": final.get("test"),
        "parameters": sum(p.numel() for p in model.parameters()),
        **{k: v for k, v in history.items() if k != "best_epoch"},
    }
    temperature = 1.0
    calibrating = config.calibrate and calibrates_on(setup.data["validation"]["tokens"])
    if calibrating:
        temperature, metrics["calibration"] = calibration_report(
            scorer,
            {
                split: (list(setup.data[split]["tokens"]), setup.gold[split])
                for split in ("validation", "test")
                if split in setup.data
            },
        )
    if setup.init_from is not None:
        metrics["init_from"] = setup.init_from
    if setup.replay is not None:
        metrics["replay"] = setup.replay.record()
    if setup.distilled is not None:
        metrics["distilled"] = setup.distilled
    data_info = {
        "fingerprint": fingerprint(setup.data["train"]["tokens"], setup.gold["train"]),
        "source": config.data or "bundled",
        "sentences": {split: len(ds) for split, ds in setup.data.items()},
    }
    if world.main:
        plot = {}
        if metrics["epochs"]:
            plot = _training_plot(metrics, f"{output.name}: {config.cell}, {config.decoder}")
        files = ModelFiles(config, setup.vocab, model.state_dict(), metrics, data_info, temperature)
        save_model(output, files, overwrite=replace_old, extras=plot)
    barrier(world)  # the other ranks go on once the model is on disk
    for split, scores in final.items():
        say(f"\n{split} ({heading}):\n{format_report(scores)}")
    if calibrating:
        say(f"\n{format_summary(metrics['calibration'])}")
    elif config.calibrate:
        say("\nnot calibrated: the validation split has fewer than 2 non-empty sentences")
    say(f"\nmodel saved to {output}")


def _train_ensemble(
    config: TrainConfig, progress: bool, resume: Path | None, overrides: dict
) -> Path:
    """Train ``config.ensemble`` members one after another (seeds ``seed``, ``seed + 1``,
    ...), each an ordinary run into ``<output>.checkpoint/member-K``, then save them
    as one model folder and remove the members.

    Resuming (``resume`` is that folder) keeps the finished members, continues an
    interrupted one from its own checkpoint and trains the rest. The caller holds the
    output's lock, which covers the members too."""
    if current_world().distributed:
        raise TaggerError(
            "an ensemble trains its members one after another in one process: "
            "leave out --nproc / torchrun (or train members separately)"
        )
    output = Path(config.output)
    work = checkpoint_dir(output)
    say = _printer(progress)
    if resume is None:
        if (work / ENSEMBLE_PLAN).is_file() and not config.overwrite:
            raise TaggerError(
                f"{work} holds an interrupted ensemble run: continue it with "
                f"`tagger train --resume {work}`, or pass --overwrite to start over"
            )
        _check_free(output, work, config.overwrite, resuming=False)
        shutil.rmtree(work, ignore_errors=True)  # a checkpoint of ours: checked above
        write_dir(
            work,
            {ENSEMBLE_PLAN: (json.dumps({"config": config.to_dict()}, indent=2) + "\n").encode()},
            f"the ensemble checkpoint to {work}",
        )
    else:
        check_replaceable(output, ("model",), config.overwrite, "--output")
    folders = []
    for k in range(config.ensemble):
        folder = work / f"member-{k}"
        folders.append(folder)
        # overwrite: a member folder left without its checkpoint is ours to retrain
        member = replace(
            config, ensemble=1, seed=config.seed + k, output=str(folder), overwrite=True
        )
        say(f"\nensemble member {k + 1}/{config.ensemble} (seed {member.seed})")
        ckpt = checkpoint_dir(folder)
        hint = f"continue the ensemble with `tagger train --resume {work}`"
        try:
            if (ckpt / CHECKPOINT_META).is_file():
                state = load_checkpoint(ckpt)
                resumed = replace(state.config, **overrides).validate()
                _train_one(resumed, state, ckpt, progress)
            elif _finished(folder):
                say(f"already trained: {folder}")
                continue
            else:
                _train_one(member, None, None, progress)
        except KeyboardInterrupt:
            raise Interrupted(f"ensemble interrupted in member {k + 1}; {hint}") from None
    return _save_ensemble(config, folders, output, work, say)


def _read_plan(work: Path) -> TrainConfig:
    try:
        plan = json.loads((work / ENSEMBLE_PLAN).read_text(encoding="utf-8"))
        return TrainConfig.from_dict(plan["config"], where=str(work / ENSEMBLE_PLAN))
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as err:
        raise TaggerError(f"{work / ENSEMBLE_PLAN}: not an ensemble plan ({err})") from None


def _finished(folder: Path) -> bool:
    """A member's model folder exists and its run was not interrupted."""
    try:
        return read_metrics(folder)[1].get("interrupted") is False
    except TaggerError:
        return False


def _save_ensemble(config: TrainConfig, folders: list[Path], output: Path, work: Path, say) -> Path:
    """Combine the trained members into one model folder, then remove the work folder."""
    started = time.perf_counter()
    setup = build(replace(config, ensemble=1))
    config = replace(setup.config, ensemble=config.ensemble)  # word_dim follows the vectors
    members = [Tagger.load(folder, config.device) for folder in folders]
    if any(m.vocab != setup.vocab for m in members):
        raise TaggerError(f"the members in {work} were trained on other data; start over")
    ensemble = Ensemble.of([m.model for m in members], config.model, setup.vocab)
    ensemble = ensemble.to(setup.device)
    runs = [
        {
            "seed": m.config.seed,
            "best_epoch": m.metrics["best_epoch"],
            "dev_f1": m.metrics["dev_f1"],
            "test_f1": m.metrics["test_f1"],
            "seconds": m.metrics["seconds"],
            "epochs": m.metrics["epochs"],
        }
        for m in members
    ]
    # training time of every member (also across resumes) plus combining them
    seconds = sum(r["seconds"] for r in runs) + time.perf_counter() - started
    history = {
        "best_epoch": None,
        "seconds": round(seconds, 1),
        "interrupted": False,
        "epochs": [],
        "members": runs,
    }
    save_final(
        ensemble,
        config,
        setup,
        output,
        history,
        config.overwrite,
        say,
        f"ensemble of {len(members)}",
    )
    shutil.rmtree(work, ignore_errors=True)
    return output


def _check_free(output: Path, saved_to: Path, overwrite: bool, resuming: bool) -> bool:
    """Refuse to replace a trained model, or to start over an interrupted run's checkpoint,
    unless asked; refuse anything at those paths that tagger did not write, even when
    asked. Returns whether the run may replace ``output`` when it saves: asked to, or the
    model an interrupted run left behind, which the resumed run continues."""
    recover_dir(output)
    recover_dir(saved_to)
    left_by_interrupt = False
    if resuming and folder_kind(output) == "model":
        with contextlib.suppress(TaggerError):
            left_by_interrupt = read_metrics(output)[1].get("interrupted") is True
    check_replaceable(output, ("model",), overwrite or left_by_interrupt, "--output")
    if not resuming:
        check_replaceable(saved_to, ("checkpoint",), True, "--output")
        if saved_to.exists() and not overwrite:
            raise TaggerError(
                f"{saved_to} holds the checkpoint of an interrupted run: continue it with "
                f"`tagger train --resume {saved_to}`, or pass --overwrite to start over"
            )
    return overwrite or left_by_interrupt


def _read_embeddings(config: TrainConfig, data, say) -> Vectors:
    """Vectors for the words of every split (no labels used), with a coverage line that
    says how many distinct words each lookup rule found."""
    running = {split: [t for toks in ds["tokens"] for t in toks] for split, ds in data.items()}
    vectors = find_vectors(config.embeddings, (t for words in running.values() for t in words))
    cover = ", ".join(
        f"{split} {100 * vectors.coverage(words):.1f}%" for split, words in running.items()
    )
    found = ", ".join(f"{vectors.rules[rule]:,} {rule}" for rule in RULES)
    say(
        f"embeddings: {len(vectors.vectors):,} / {vectors.total:,} vectors used "
        f"(dim {vectors.dim}); words found: {found}; running words covered: {cover}"
    )
    return vectors


def _training_plot(metrics: dict, title: str) -> dict[str, bytes]:
    """``{"training.png": ...}``, or nothing with a warning: a missing matplotlib or a
    failed plot must never cost the trained model."""
    from tagger.plot import render_training

    try:
        return {PLOT: render_training(metrics, title)}
    except Exception as err:  # whatever went wrong with the plot, keep the model
        print(f"warning: {PLOT} not written: {err}", file=sys.stderr)
        return {}


def _printer(enabled: bool):
    if not enabled:
        return lambda *_: None
    from rich.console import Console

    console = Console(highlight=False, soft_wrap=True)  # long log lines stay whole
    return console.print
