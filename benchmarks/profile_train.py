"""Where a training step spends its time, per epoch: forward, backward, clipping, the
optimizer step and the EMA update, then torch.profiler's top operators for some steps
of the first and the last epoch.

    python benchmarks/profile_train.py --data ../shared/data/conll2003 --epochs 3
    python benchmarks/profile_train.py --data ../shared/data/conll2003 --precision bf16

Same step as ``tagger.trainer.TrainingRun`` (same model, optimizer, batches); no checkpoints, no
dev evaluation, so the numbers are the training step alone.
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict

import torch
from torch.profiler import ProfilerActivity, profile

from tagger.batching import bucket_batches
from tagger.config import TrainConfig
from tagger.runtime import precision_autocast, set_threads
from tagger.trainer import TrainingRun
from tagger.training import build


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--profile-steps", type=int, default=100)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--batch-size", type=int, help="[default: train's, by corpus size]")
    parser.add_argument("--precision", default="auto", help="auto, fp32 or bf16 (train's)")
    args = parser.parse_args()
    config = TrainConfig(
        data=args.data,
        threads=args.threads,
        precision=args.precision,
        batch_size=args.batch_size,
    )
    set_threads(config.threads)
    setup = build(config, print)
    config = setup.config  # with the unset batch size and schedule filled in
    run = TrainingRun(setup)  # the model, EMA, optimizer and random state a run uses
    model, ema, optimizer, rng = run.model, run.ema, run.optimizer, run.rng
    enc = setup.encoded["train"]
    print(f"threads {torch.get_num_threads()}, batch {config.batch_size}, {run.precision}")

    def step(batch, clock):
        t = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        with precision_autocast(run.precision, setup.device):
            loss = model.loss(batch)
        clock["forward"] += (t1 := time.perf_counter()) - t
        loss.backward()
        clock["backward"] += (t2 := time.perf_counter()) - t1
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.clip)
        clock["clip"] += (t3 := time.perf_counter()) - t2
        optimizer.step()
        clock["optimizer"] += (t4 := time.perf_counter()) - t3
        ema.update_parameters(model)
        clock["ema"] += time.perf_counter() - t4

    for epoch in range(1, args.epochs + 1):
        model.train()
        clock: dict[str, float] = defaultdict(float)
        batches = list(bucket_batches(enc, config.batch_size, shuffle=True, rng=rng))
        t0 = time.perf_counter()
        profiled = epoch in (1, args.epochs)
        for i, batch in enumerate(batches):
            if profiled and i == 50:  # after warm-up
                with profile(activities=[ProfilerActivity.CPU]) as prof:
                    for b in batches[i : i + args.profile_steps]:
                        step(b, clock)
            elif not profiled or not 50 <= i < 50 + args.profile_steps:
                step(batch, clock)
        total = time.perf_counter() - t0
        parts = "  ".join(f"{k} {v:5.2f}" for k, v in clock.items())
        print(f"\nepoch {epoch}: {total:5.2f} s   {parts}")
        if profiled:
            print(f"top operators over {args.profile_steps} steps of epoch {epoch}:")
            print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=18))


if __name__ == "__main__":
    main()
