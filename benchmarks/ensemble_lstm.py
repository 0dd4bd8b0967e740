"""Why an ensemble's members run one after another: their BiLSTMs as separate oneDNN
calls against one grouped computation (all members' input projections in one product,
then one batched matmul per time step for every member and direction).

    python benchmarks/ensemble_lstm.py                  # 4 members, batch 256, 20 steps

Prints milliseconds per batch (best of 5, the three ways taking turns) for each thread
count and precision (bf16 where this CPU runs it): one model (two directions), the
members in turn, and the grouped form; and checks that the grouped form computes the
same hidden states. Run it alone.

It also prints the arithmetic that bounds any batching of the members: one model's
LSTM GFLOP/s against a large matrix product's (what the CPU can do at best in that
precision), and from it the most an ensemble's words/s can be against one model's if
the members ran at that ceiling (the rest of the model not counted).
"""

from __future__ import annotations

import argparse

import torch

from tagger.runtime import cpu_bf16_speedup

try:
    from score_cost import best_seconds
except ImportError:  # run as a module
    from benchmarks.score_cost import best_seconds


def grouped_lstm(x: torch.Tensor, lstms: list[torch.nn.LSTM]) -> torch.Tensor:
    """(B, T, I) through G one-layer LSTMs at once -> (G, B, T, H): one product for
    every input projection, then per step one ``baddbmm`` over the G recurrent weights."""
    w_ih = torch.stack([m.weight_ih_l0 for m in lstms])  # (G, 4H, I)
    w_hh = torch.stack([m.weight_hh_l0 for m in lstms]).transpose(1, 2)  # (G, H, 4H)
    bias = torch.stack([m.bias_ih_l0 + m.bias_hh_l0 for m in lstms])  # (G, 4H)
    pre = torch.einsum("bti,ghi->gtbh", x, w_ih) + bias[:, None, None, :]  # (G, T, B, 4H)
    groups, steps, batch, hidden = len(lstms), x.size(1), x.size(0), w_hh.size(1)
    h = x.new_zeros(groups, batch, hidden)
    c = x.new_zeros(groups, batch, hidden)
    out = []
    for t in range(steps):
        i, f, g, o = torch.baddbmm(pre[:, t], h, w_hh).chunk(4, 2)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        out.append(h)
    return torch.stack(out, 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=4)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--input", type=int, default=160, help="the default model's")
    parser.add_argument("--hidden", type=int, default=200, help="units per direction")
    args = parser.parse_args()
    torch.manual_seed(0)
    lstms = [
        torch.nn.LSTM(args.input, args.hidden, batch_first=True) for _ in range(2 * args.members)
    ]
    x = torch.randn(args.batch, args.steps, args.input)
    with torch.inference_mode():
        ref = torch.stack([m(x)[0] for m in lstms])
        gap = (grouped_lstm(x, lstms) - ref).abs().max()
        print(f"grouped vs oneDNN, largest difference: {gap:.1e}")
    modes = ["fp32", *(["bf16"] if cpu_bf16_speedup() is not None else [])]
    # FLOPs of one model: 2 directions x 2 per multiply-add, input and recurrent
    # products of the 4 gates at every step.
    flops = 2 * 2 * args.batch * args.steps * 4 * args.hidden * (args.input + args.hidden)
    big = torch.randn(2048, 2048)
    print(
        "| threads | precision | one model ms | members in turn ms | grouped ms "
        "| one model GFLOP/s | matmul GFLOP/s | ensemble bound |"
    )
    print("| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for threads in (1, 2):
        torch.set_num_threads(threads)
        for mode in modes:
            bf16 = mode == "bf16"
            with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                ways = {
                    "one": lambda: [m(x) for m in lstms[:2]],
                    "turn": lambda: [m(x) for m in lstms],
                    "grouped": lambda: grouped_lstm(x, lstms),
                    "matmul": lambda: big @ big,
                }
                one, turn, grouped, matmul = best_seconds(ways, repeats=5).values()
            rate, peak = flops / one / 1e9, 2 * 2048**3 / matmul / 1e9
            # members x the work at the ceiling: the ensemble's time against one model's
            bound = one / (args.members * flops / (peak * 1e9))
            print(
                f"| {threads} | {mode} | {1e3 * one:.1f} | {1e3 * turn:.1f} | {1e3 * grouped:.1f} "
                f"| {rate:.0f} | {peak:.0f} | {bound:.2f}x |"
            )


if __name__ == "__main__":
    main()
