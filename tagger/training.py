"""The training loop: data -> vocabulary -> model -> epochs with early stopping on dev F1."""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import math
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch.optim.swa_utils import AveragedModel

from tagger import schemes
from tagger.batching import Encoded, encode
from tagger.checkpoint import META as CHECKPOINT_META
from tagger.checkpoint import (
    capture,
    checkpoint_dir,
    load_checkpoint,
    restore,
    save_checkpoint,
    tensors_under,
)
from tagger.config import TrainConfig
from tagger.data import decoded_tags, load_data, tag_names
from tagger.distributed import SINGLE, World, barrier, broadcast, gather, rank_batches
from tagger.distributed import current as current_world
from tagger.distributed import start as start_distributed
from tagger.distributed import stop as stop_distributed
from tagger.embeddings import Vectors, read_vectors
from tagger.errors import TaggerError
from tagger.evaluation import format_report, score
from tagger.io import (
    ENSEMBLE_PLAN,
    PLOT,
    OutputLock,
    check_replaceable,
    folder_kind,
    read_metrics,
    recover_dir,
    write_dir,
)
from tagger.model import Ensemble, SequenceTagger
from tagger.predict import Tagger
from tagger.runtime import autocast, resolve_device, seed_everything, set_threads
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


def build(config: TrainConfig, say=lambda *_: None, world: World = SINGLE) -> Setup:
    """Load the data, build the vocabulary (train split only) and the model.

    In a distributed run rank 0 builds the vocabulary and sends it to the others, and
    every rank joins the process group on its own device."""
    seed_everything(config.seed)
    device = resolve_device(config.device)
    if world.distributed:
        device = start_distributed(world, device)
    data = load_data(
        config.data,
        dev=config.dev,
        test=config.test,
        revision=config.revision,
        tag_column=config.tag_column,
        encoding=config.encoding,
        scheme=config.scheme,
        unseen_labels=config.unseen_labels,
    )
    if "validation" not in data:
        raise TaggerError(
            "the data has no validation split, needed for early stopping: give --dev PATH "
            "(or a folder with dev.txt)"
        )
    vectors = None
    if config.embeddings:
        vectors = _read_embeddings(config, data, say)
        if vectors.dim != config.word_dim:
            config = replace(config, word_dim=vectors.dim)
    vocab = None
    if world.main:
        vocab = Vocab.build(
            data["train"]["tokens"],
            tag_names(data["train"]),
            min_freq=config.min_freq,
            max_size=config.max_vocab,
            lowercase=config.lowercase,
            normalize_digits=config.normalize_digits,
            extra_words=vectors.vectors if vectors else (),
        )
    if world.distributed:
        vocab = Vocab.from_dict(broadcast(vocab.to_dict() if vocab else None, world))
    encoded = {split: encode(vocab, ds["tokens"], decoded_tags(ds)) for split, ds in data.items()}
    gold = {split: [schemes.to_iob2(t) for t in decoded_tags(ds)] for split, ds in data.items()}
    model = SequenceTagger(config, vocab)
    if vectors is not None:
        model.embedder.load_pretrained(vocab, vectors.vectors, config.freeze_embeddings)
    if config.unk_replace:
        train_enc = encoded["train"]
        counts = np.bincount(train_enc.type_words[train_enc.type_ids], minlength=len(vocab.words))
        model.embedder.set_word_counts(torch.from_numpy(counts), config.unk_replace)
    say(
        f"data: {', '.join(f'{s} {len(ds):,} sentences' for s, ds in data.items())}; "
        f"vocab: {len(vocab.words):,} words, {len(vocab.chars):,} chars, "
        f"{len(vocab.labels)} labels; "
        f"model: {config.cell} x{config.num_layers}{' bi' if config.bidirectional else ''}, "
        f"{config.decoder}, {sum(p.numel() for p in model.parameters()):,} parameters on {device}"
        + (f", {world.size} processes" if world.distributed else "")
    )
    return Setup(config, data, vocab, encoded, gold, model.to(device), device)


class Interrupted(KeyboardInterrupt):
    """Ctrl-C in training; the message says what was saved and how to go on. A
    ``KeyboardInterrupt``, so notebooks stop as usual and the CLI exits 130."""


class Diverged(TaggerError):
    """The loss or the weights stopped being finite numbers."""


RESUMABLE = frozenset({"max_epochs", "patience", "device", "threads"})  # may change on resume


@dataclass
class RunState:
    """The counters of a run, saved in its checkpoint."""

    best_f1: float = -1.0
    best_epoch: int = 0
    stale: int = 0  # epochs since the last dev improvement
    epochs: list[dict] = field(default_factory=list)  # one log entry per epoch
    seconds: float = 0.0  # wall time spent before this process (a resumed run)


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
    the best epoch so far and says how to resume.
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
    for key in ("data", "dev", "test", "embeddings"):
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
        return _run(config, ckpt, saved_to, output, world, say, progress, replace_old)
    finally:
        stop_distributed(world)


def _run(
    config, ckpt, saved_to: Path, output: Path, world: World, say, progress: bool, replace_old
) -> Path:
    """The body of ``train``: build, epochs, final scores, save (rank 0 writes).

    ``replace_old``: the output folder may be replaced (asked for, or an interrupted
    run's model that this resumed run continues); decided before the run starts."""
    setup = build(config, say, world)
    config, data, vocab, encoded, gold, model, device = (
        setup.config,
        setup.data,
        setup.vocab,
        setup.encoded,
        setup.gold,
        setup.model,
        setup.device,
    )
    data_print = fingerprint(data["train"]["tokens"], gold["train"])  # IOB2: any scheme
    if ckpt is not None and (ckpt.fingerprint != data_print or ckpt.vocab != vocab):
        raise TaggerError(
            f"the training data of {config.data or 'the bundled corpus'} changed since the "
            f"checkpoint {saved_to} was written; start a new run instead"
        )
    n_params = sum(p.numel() for p in model.parameters())
    # An exponential moving average of the weights is what gets scored and saved: it
    # smooths the step-to-step noise of Adam, so dev F1 is steadier and higher.
    ema = None
    if config.ema_decay:
        ema = AveragedModel(model, multi_avg_fn=_ema_with_warmup(config.ema_decay))
    final_model = ema.module if ema is not None else model
    scorer = Tagger(final_model, config, vocab)  # shares the module: scores what predict() gives
    optimizer = _optimizer(config, model)
    net = model  # what computes the loss; DDP syncs the gradients of its module
    if world.distributed:
        from torch.nn.parallel import DistributedDataParallel

        net = DistributedDataParallel(model)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda epoch: 1.0 / (1.0 + config.lr_decay * epoch)
    )
    rng = np.random.default_rng(config.seed)
    run = RunState()
    best_state = None
    if ckpt is not None:
        restore(ckpt, {"model": model, "ema": ema}, optimizer, schedule, rng)
        run = RunState(**ckpt.progress)
        best_state = tensors_under(ckpt, "best")
        say(f"resuming from {saved_to} after epoch {ckpt.epoch}")

    interrupted = False
    checkpointed = ckpt.epoch if ckpt is not None else 0  # last epoch in the checkpoint
    started = time.perf_counter()
    n_tokens = int(encoded["train"].lengths.sum())
    first = len(run.epochs) + 1
    try:
        for epoch in range(first, config.max_epochs + 1):
            if run.stale >= config.patience:
                break  # a resumed run that had already stopped early
            t0 = time.perf_counter()
            loss = _train_epoch(
                net,
                ema,
                encoded["train"],
                config,
                optimizer,
                rng,
                device,
                epoch,
                progress,
                last_dev=run.epochs[-1]["dev_f1"] if run.epochs else None,
                world=world,
            )
            _check_finite(loss, model, ema, epoch)
            seconds = time.perf_counter() - t0
            schedule.step()
            dev_tags = scorer.predict_encoded(encoded["validation"], world=world)[0]
            dev = score(gold["validation"], dev_tags)
            improved = dev["f1"] > run.best_f1
            if improved:
                run.best_f1, run.best_epoch, run.stale = dev["f1"], epoch, 0
                best_state = copy.deepcopy(final_model.state_dict())
            else:
                run.stale += 1
            run.epochs.append(
                {
                    "epoch": epoch,
                    "loss": round(loss, 6),
                    "dev_f1": dev["f1"],
                    "dev_precision": dev["precision"],
                    "dev_recall": dev["recall"],
                    "lr": optimizer.param_groups[0]["lr"],
                    "seconds": round(seconds, 3),
                    "tokens_per_s": round(n_tokens / seconds, 1),
                }
            )
            elapsed = run.seconds + time.perf_counter() - started
            if world.main:
                save_checkpoint(
                    saved_to,
                    capture(
                        config,
                        vocab,
                        data_print,
                        epoch,
                        {**asdict(run), "seconds": elapsed},
                        {"model": model, "ema": ema, "best": best_state},
                        optimizer,
                        schedule,
                        rng,
                    ),
                )
            checkpointed = epoch
            say(
                f"epoch {epoch:3d}/{config.max_epochs}  loss {loss:8.4f}"
                f"  dev F1 {100 * dev['f1']:6.2f}"
                f"  {seconds:6.1f} s  {n_tokens / seconds:9,.0f} tok/s{'  *' if improved else ''}"
            )
            if run.stale >= config.patience:
                say(f"no dev improvement for {config.patience} epochs: stopping")
                break
    except Diverged as err:
        kept = f"; the checkpoint after epoch {checkpointed} is kept in {saved_to}"
        raise Diverged(
            f"{err}: no model was saved{kept if checkpointed else ''}; "
            f"try a lower learning rate (--lr, now {config.lr:g})"
        ) from None
    except KeyboardInterrupt:
        interrupted = True
        if best_state is None:
            raise Interrupted(
                "interrupted before the first epoch ended; nothing was saved"
            ) from None
        resume_hint = (
            f"the checkpoint after epoch {checkpointed} is in {saved_to}\n"
            f"continue with: tagger train --resume {saved_to}"
            if checkpointed
            else "no checkpoint was written yet"
        )

    final_model.load_state_dict(best_state)
    final = {
        split: score(gold[split], scorer.predict_encoded(encoded[split], world=world)[0])
        for split in ("validation", "test")
        if split in encoded
    }
    metrics = {
        "best_epoch": run.best_epoch,
        "dev_f1": final["validation"]["f1"],
        "test_f1": final["test"]["f1"] if "test" in final else None,
        "dev": final["validation"],
        "test": final.get("test"),
        "parameters": n_params,
        "seconds": round(run.seconds + time.perf_counter() - started, 1),
        "interrupted": interrupted,
        "epochs": run.epochs,
    }
    data_info = {
        "fingerprint": data_print,
        "source": config.data or "bundled",
        "sentences": {split: len(ds) for split, ds in data.items()},
    }
    scorer.metrics, scorer.data = metrics, data_info
    if world.main:
        plot = _training_plot(metrics, f"{output.name}: {config.cell}, {config.decoder}")
        scorer.save(output, overwrite=replace_old, extras=plot)
        if not interrupted:
            shutil.rmtree(saved_to, ignore_errors=True)  # the model is complete: no resume
    if interrupted:
        raise Interrupted(
            f"interrupted in epoch {checkpointed + 1}: {resume_hint}\n"
            f"the best epoch so far ({run.best_epoch}) is saved to {output}"
            if world.main
            else ""
        )
    barrier(world)  # the other ranks return once the model is on disk
    for split, scores in final.items():
        say(f"\n{split} (best epoch {run.best_epoch}):\n{format_report(scores)}")
    say(f"\nmodel saved to {output}")
    return output


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
    """Combine the trained members, score the ensemble on dev and test, save it."""
    started = time.perf_counter()
    setup = build(replace(config, ensemble=1))
    members = [Tagger.load(folder, config.device) for folder in folders]
    if any(m.vocab != setup.vocab for m in members):
        raise TaggerError(f"the members in {work} were trained on other data; start over")
    ensemble = Ensemble.of([m.model for m in members], config, setup.vocab).to(setup.device)
    scorer = Tagger(ensemble, config, setup.vocab)
    final = {
        split: score(setup.gold[split], scorer.predict_encoded(setup.encoded[split])[0])
        for split in ("validation", "test")
        if split in setup.encoded
    }
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
    scorer.metrics = {
        "best_epoch": None,
        "dev_f1": final["validation"]["f1"],
        "test_f1": final["test"]["f1"] if "test" in final else None,
        "dev": final["validation"],
        "test": final.get("test"),
        "parameters": sum(p.numel() for p in ensemble.parameters()),
        # training time of every member (also across resumes) plus combining and scoring
        "seconds": round(sum(r["seconds"] for r in runs) + time.perf_counter() - started, 1),
        "interrupted": False,
        "epochs": [],
        "members": runs,
    }
    scorer.data = members[0].data
    scorer.save(output, overwrite=config.overwrite)
    shutil.rmtree(work, ignore_errors=True)
    for split, scores in final.items():
        say(f"\n{split} (ensemble of {len(members)}):\n{format_report(scores)}")
    say(f"\nmodel saved to {output}")
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


def _check_finite(loss: float, model: torch.nn.Module, ema, epoch: int) -> None:
    """Stop before a diverged epoch reaches a checkpoint or a model folder."""
    modules = [model] + ([ema.module] if ema is not None else [])
    if not math.isfinite(loss) or not all(
        p.isfinite().all() for m in modules for p in m.parameters()
    ):
        raise Diverged(f"training diverged in epoch {epoch}: the weights are no longer finite")


def _read_embeddings(config: TrainConfig, data, say) -> Vectors:
    """Vectors for the words of every split (no labels used), with a coverage line."""
    probe = Vocab([], [], [], config.lowercase, config.normalize_digits)
    running = {
        split: [probe.normalize(t) for toks in ds["tokens"] for t in toks]
        for split, ds in data.items()
    }
    keep = {w for words in running.values() for w in words}
    vectors = read_vectors(config.embeddings, keep, probe.normalize)
    cover = ", ".join(
        f"{split} coverage {100 * vectors.coverage(words):.1f}%" for split, words in running.items()
    )
    say(
        f"embeddings: {len(vectors.vectors):,} / {vectors.total:,} vectors used "
        f"(dim {vectors.dim}), {cover}"
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


def _ema_with_warmup(decay: float):
    """EMA update whose decay grows as min(decay, (1 + n) / (10 + n)) with the step n,
    so a short run (a small corpus) is not averaged with its random initialisation."""

    def update(averaged: list[torch.Tensor], current: list[torch.Tensor], steps: torch.Tensor):
        n = float(steps)
        weight = 1.0 - min(decay, (1.0 + n) / (10.0 + n))
        for avg, cur in zip(averaged, current):
            avg.lerp_(cur, weight)  # in place: no copy of the embedding table per step

    return update


def _optimizer(config: TrainConfig, model: torch.nn.Module) -> torch.optim.Optimizer:
    """Adam or SGD; the fused kernels (one pass over all parameters) where torch has them,
    which matters here because the dense word-embedding update dominates a step."""
    params = [p for p in model.parameters() if p.requires_grad]
    if config.optimizer == "sgd":
        return torch.optim.SGD(
            params,
            lr=config.lr,
            momentum=config.momentum,
            weight_decay=config.weight_decay,
            fused=True,
        )
    return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay, fused=True)


def _train_epoch(
    net,
    ema,
    enc: Encoded,
    config,
    optimizer,
    rng,
    device,
    epoch,
    progress,
    last_dev=None,
    world: World = SINGLE,
) -> float:
    """One pass over shuffled length buckets; returns the mean loss per sentence.

    ``net`` is the model, or its DistributedDataParallel wrapper: each rank then trains on
    its slice of every global batch, weighted so the synced gradient is the global
    batch's mean, as in one process."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    model = net.module if world.distributed else net
    model.train()
    if world.distributed:  # dropout masks differ between ranks, reproducibly
        torch.manual_seed(config.seed + 7919 * epoch + world.rank)
    total, sentences = 0.0, 0
    n_batches = -(-len(enc) // config.batch_size)
    columns = (
        TextColumn(f"epoch {epoch}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TextColumn("loss {task.fields[loss]:.3f}"),
        TextColumn("{task.fields[speed]:,.0f} tok/s"),
        TextColumn(f"dev F1 {100 * last_dev:.2f}" if last_dev is not None else "dev F1 -"),
        TimeRemainingColumn(),
    )
    tokens, t0 = 0, time.perf_counter()
    show = progress and world.main
    with Progress(*columns, transient=True, disable=not show) as bar:
        task = bar.add_task("train", total=n_batches, loss=0.0, speed=0.0)
        for batch, global_size in rank_batches(
            enc, config.batch_size, world, shuffle=True, rng=rng
        ):
            batch = batch.to(device)
            n = len(batch.index)
            optimizer.zero_grad(set_to_none=True)
            with autocast(device):
                loss = net(batch)  # mean over this rank's sentences
            # DDP averages over ranks; weighting by n * ranks / global size makes that
            # the mean over the global batch even when the slices differ in size.
            (loss * (n * world.size / global_size) if world.distributed else loss).backward()
            if config.clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), config.clip)
            optimizer.step()
            if ema is not None:
                ema.update_parameters(model)
            value = loss.item()
            if not math.isfinite(value):
                raise Diverged(f"training diverged in epoch {epoch}: the loss became {value}")
            total += value * n
            sentences += n
            tokens += int(batch.lengths.sum())
            bar.update(
                task, advance=1, loss=total / sentences, speed=tokens / (time.perf_counter() - t0)
            )
    if world.distributed:
        parts = gather((total, sentences), world)
        total, sentences = sum(p[0] for p in parts), sum(p[1] for p in parts)
    return total / max(sentences, 1)


def _printer(enabled: bool):
    if not enabled:
        return lambda *_: None
    from rich.console import Console

    console = Console(highlight=False, soft_wrap=True)  # long log lines stay whole
    return console.print
