"""One model's training run as an object: the model and its weight average, the optimizer
and learning-rate schedule, the random state, the early-stopping record and the best
epoch's weights, with small methods to restore it, move it one epoch on and snapshot it.

``tagger.training.train`` drives it (the epoch loop, Ctrl-C, saving); a new way to train
(continued training, distillation) is a different start or loss, not another loop.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch.optim.swa_utils import AveragedModel

from tagger.checkpoint import Checkpoint, capture, restore, tensors_under
from tagger.distill import Distilling
from tagger.distributed import SINGLE, World, gather, rank_batches
from tagger.errors import TaggerError
from tagger.evaluation import score
from tagger.predict import Tagger
from tagger.runtime import precision_autocast, training_precision

if TYPE_CHECKING:
    from tagger.batching import Encoded
    from tagger.config import TrainConfig
    from tagger.training import Setup


class Diverged(TaggerError):
    """The loss or the weights stopped being finite numbers."""


@dataclass
class EarlyStopping:
    """Dev F1 epoch by epoch: which epoch is best, and when to stop (after ``patience``
    epochs without a gain), as AllenNLP's ``MetricTracker`` does."""

    patience: int
    best_f1: float = -1.0
    best_epoch: int = 0
    stale: int = 0  # epochs since the last improvement

    def record(self, epoch: int, f1: float) -> bool:
        """Note an epoch's dev F1; True when it is the best so far."""
        if f1 > self.best_f1:
            self.best_f1, self.best_epoch, self.stale = f1, epoch, 0
            return True
        self.stale += 1
        return False

    @property
    def should_stop(self) -> bool:
        return self.stale >= self.patience


TEACHER_PART = " + teacher "  # in a distilling run's fingerprint, before the teacher's


class TrainingRun:
    """The state of one model's training, created fresh from a ``Setup`` or restored
    from a checkpoint. What is scored and saved is ``final_model``: the exponential
    moving average of the weights (it smooths Adam's step-to-step noise, so dev F1 is
    steadier and higher), or the model itself with ``ema_decay`` 0."""

    def __init__(self, setup: Setup, world: World = SINGLE) -> None:
        from tagger.training import fingerprint

        config, model = setup.config, setup.model
        self.setup, self.config, self.world = setup, config, world
        self.model = model
        self.ema = None
        if config.ema_decay:
            self.ema = AveragedModel(model, multi_avg_fn=_ema_with_warmup(config.ema_decay))
        self.final_model = self.ema.module if self.ema is not None else model
        # fp32 or bf16: what the forward pass of a step, and dev scoring, run in
        self.precision = training_precision(setup.device, config.precision)
        # shares the module: scores exactly what predict() will give
        self.scorer = Tagger(self.final_model, config, setup.vocab)  # in self.precision
        self.optimizer = optimizer_for(config, model)
        self.net = model  # what computes the loss; DDP syncs the gradients of its module
        if setup.distilled is not None:
            self.net = Distilling(model, config.distill_weight, config.distill_temperature)
        if world.distributed:
            from torch.nn.parallel import DistributedDataParallel

            self.net = DistributedDataParallel(self.net)
        self.schedule = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda epoch: 1.0 / (1.0 + config.lr_decay * epoch)
        )
        self.rng = np.random.default_rng(config.seed)
        self.stopping = EarlyStopping(config.patience)
        self.epochs: list[dict] = []  # one log entry per epoch
        self.seconds_before = 0.0  # wall time spent in earlier processes (resumed runs)
        self.best_state: dict[str, torch.Tensor] | None = None
        # of the data the run trains on: a resumed run must see the same
        self.fingerprint = fingerprint(setup.data["train"]["tokens"], setup.gold["train"])
        if setup.replay is not None:
            self.fingerprint += f" + replay {setup.replay.fingerprint}"
        if setup.distilled is not None:
            sha, unlabeled = (
                setup.distilled[k] for k in ("teacher_weights_sha256", "unlabeled_sentences")
            )
            self.fingerprint += f"{TEACHER_PART}{sha} + {unlabeled} unlabeled"

    def restore(self, ckpt: Checkpoint) -> None:
        """Continue from a checkpoint of the same config and data."""
        restore(
            ckpt, {"model": self.model, "ema": self.ema}, self.optimizer, self.schedule, self.rng
        )
        p = ckpt.progress
        self.stopping = EarlyStopping(
            self.config.patience, p["best_f1"], p["best_epoch"], p["stale"]
        )
        self.epochs, self.seconds_before = list(p["epochs"]), p["seconds"]
        self.best_state = tensors_under(ckpt, "best")

    def snapshot(self, epoch: int, seconds: float) -> Checkpoint:
        """The run after ``epoch``, ``seconds`` of wall time in all, as a checkpoint."""
        s = self.stopping
        progress = {
            "best_f1": s.best_f1,
            "best_epoch": s.best_epoch,
            "stale": s.stale,
            "epochs": self.epochs,
            "seconds": seconds,
        }
        modules = {"model": self.model, "ema": self.ema, "best": self.best_state}
        return capture(
            self.config,
            self.setup.vocab,
            self.fingerprint,
            epoch,
            progress,
            modules,
            self.optimizer,
            self.schedule,
            self.rng,
        )

    def epoch(self, epoch: int, progress: bool) -> tuple[dict, bool]:
        """Train one epoch, step the schedule, score dev and record it. Returns the
        epoch's log entry and whether it is the best so far; raises ``Diverged`` before
        anything non-finite can reach a checkpoint."""
        t0 = time.perf_counter()
        sentences = self.epoch_sentences()
        loss = self.train_epoch(epoch, progress, sentences)
        self._check_finite(loss, epoch)
        seconds = time.perf_counter() - t0
        self.schedule.step()
        dev = self.score("validation")
        improved = self.stopping.record(epoch, dev["f1"])
        if improved:
            self.best_state = copy.deepcopy(self.final_model.state_dict())
        entry = {
            "epoch": epoch,
            "loss": round(loss, 6),
            "dev_f1": dev["f1"],
            "dev_precision": dev["precision"],
            "dev_recall": dev["recall"],
            "lr": self.optimizer.param_groups[0]["lr"],
            "seconds": round(seconds, 3),
            "tokens_per_s": round(int(sentences.lengths.sum()) / seconds, 1),
        }
        self.epochs.append(entry)
        return entry, improved

    def epoch_sentences(self) -> Encoded:
        """What the next epoch trains on: the train split, and in a continued run with
        replay the old sentences drawn for it (from the run's random state)."""
        if self.setup.replay is None:
            return self.setup.encoded["train"]
        return self.setup.replay.draw(self.rng)

    def score(self, split: str) -> dict:
        """seqeval scores of ``final_model`` on a split (gathered across ranks)."""
        tags = self.scorer.predict_encoded(self.setup.encoded[split], world=self.world)[0]
        return score(self.setup.gold[split], tags)

    def use_best(self) -> None:
        """Put the best epoch's weights into ``final_model``."""
        self.final_model.load_state_dict(self.best_state)

    def train_epoch(self, epoch: int, progress: bool, enc: Encoded) -> float:
        """One pass over ``enc`` (``epoch_sentences``) in shuffled length buckets; returns
        the mean loss per sentence.

        In a distributed run each rank trains on its slice of every global batch,
        weighted so the synced gradient is the global batch's mean, as in one process."""
        from rich.progress import Progress

        config, world, model = self.config, self.world, self.model
        model.train()
        if world.distributed:  # dropout masks differ between ranks, reproducibly
            torch.manual_seed(config.seed + 7919 * epoch + world.rank)
        total, sentences, tokens, t0 = 0.0, 0, 0, time.perf_counter()
        last_dev = self.epochs[-1]["dev_f1"] if self.epochs else None
        show = progress and world.main
        with Progress(*_columns(epoch, last_dev), transient=True, disable=not show) as bar:
            task = bar.add_task(
                "train", total=-(-len(enc) // config.batch_size), loss=0.0, speed=0.0
            )
            batches = rank_batches(enc, config.batch_size, world, shuffle=True, rng=self.rng)
            for batch, global_size in batches:
                batch = batch.to(self.setup.device)
                n = len(batch.index)
                value = self._step(batch, n, global_size)
                if not math.isfinite(value):
                    raise Diverged(f"training diverged in epoch {epoch}: the loss became {value}")
                total += value * n
                sentences += n
                tokens += int(batch.lengths.sum())
                speed = tokens / (time.perf_counter() - t0)
                bar.update(task, advance=1, loss=total / sentences, speed=speed)
        if world.distributed:
            parts = gather((total, sentences), world)
            total, sentences = sum(p[0] for p in parts), sum(p[1] for p in parts)
        return total / max(sentences, 1)

    def _step(self, batch, n: int, global_size: int) -> float:
        """One optimizer step on a batch of ``n`` sentences; returns its mean loss."""
        world = self.world
        self.optimizer.zero_grad(set_to_none=True)
        with precision_autocast(self.precision, self.setup.device):
            loss = self.net(batch)  # mean over this rank's sentences
        # DDP averages over ranks; weighting by n * ranks / global size makes that the
        # mean over the global batch even when the slices differ in size.
        (loss * (n * world.size / global_size) if world.distributed else loss).backward()
        if self.config.clip:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.clip)
        self.optimizer.step()
        if self.ema is not None:
            self.ema.update_parameters(self.model)
        return loss.item()

    def _check_finite(self, loss: float, epoch: int) -> None:
        modules = [self.model] + ([self.ema.module] if self.ema is not None else [])
        finite = all(p.isfinite().all() for m in modules for p in m.parameters())
        if not math.isfinite(loss) or not finite:
            raise Diverged(f"training diverged in epoch {epoch}: the weights are no longer finite")


def _columns(epoch: int, last_dev: float | None) -> tuple:
    """The progress bar of an epoch: batches, loss, speed, last dev F1, time left."""
    from rich.progress import BarColumn, TextColumn, TimeRemainingColumn

    return (
        TextColumn(f"epoch {epoch}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TextColumn("loss {task.fields[loss]:.3f}"),
        TextColumn("{task.fields[speed]:,.0f} tok/s"),
        TextColumn(f"dev F1 {100 * last_dev:.2f}" if last_dev is not None else "dev F1 -"),
        TimeRemainingColumn(),
    )


def _ema_with_warmup(decay: float):
    """EMA update whose decay grows as min(decay, (1 + n) / (10 + n)) with the step n,
    so a short run (a small corpus) is not averaged with its random initialisation."""

    def update(averaged: list[torch.Tensor], current: list[torch.Tensor], steps: torch.Tensor):
        n = float(steps)
        weight = 1.0 - min(decay, (1.0 + n) / (10.0 + n))
        for avg, cur in zip(averaged, current):
            avg.lerp_(cur, weight)  # in place: no copy of the embedding table per step

    return update


def optimizer_for(config: TrainConfig, model: torch.nn.Module) -> torch.optim.Optimizer:
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
