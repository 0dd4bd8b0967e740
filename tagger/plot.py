"""Training curves: loss and dev F1 per epoch, the best epoch marked, as a PNG.

matplotlib is imported inside the functions (the CLI must start fast, and training
only warns when it is missing). The figure is drawn on a ``Figure`` with the Agg
canvas, never through pyplot, so no global backend or open-figure state is touched.
"""

from __future__ import annotations

import io
from pathlib import Path

from tagger.errors import TaggerError


def render_training(metrics: dict, title: str | None = None) -> bytes:
    """PNG bytes of ``metrics["epochs"]`` (what ``metrics.json`` holds)."""
    epochs = metrics.get("epochs") or []
    if not epochs and metrics.get("members"):
        raise TaggerError(
            "an ensemble has no training curve of its own; plot its members before "
            "combining, or read their epochs under `members` in metrics.json"
        )
    if not epochs:
        raise TaggerError("no epochs in the metrics: nothing to plot")
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise TaggerError("plotting needs matplotlib: pip install matplotlib") from None

    x = [e["epoch"] for e in epochs]
    fig = Figure(figsize=(7, 4), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    loss_ax = fig.add_subplot()
    f1_ax = loss_ax.twinx()
    lines = loss_ax.plot(x, [e["loss"] for e in epochs], "o-", color="tab:blue", label="train loss")
    lines += f1_ax.plot(
        x, [100 * e["dev_f1"] for e in epochs], "s-", color="tab:orange", label="dev F1"
    )
    best = metrics.get("best_epoch")
    if best:
        best_f1 = next(100 * e["dev_f1"] for e in epochs if e["epoch"] == best)
        label = f"best epoch {best} (dev F1 {best_f1:.2f})"
        lines.append(loss_ax.axvline(best, color="tab:green", linestyle="--", label=label))
    loss_ax.set_xlabel("epoch")
    loss_ax.set_ylabel("train loss (per sentence)", color="tab:blue")
    f1_ax.set_ylabel("dev F1 (%)", color="tab:orange")
    loss_ax.set_xticks(x if len(x) <= 20 else x[:: -(-len(x) // 20)])
    loss_ax.grid(alpha=0.3)
    fig.legend(lines, [line.get_label() for line in lines], loc="outside lower center", ncols=3)
    if title:
        loss_ax.set_title(title)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def plot_training(metrics: dict, path: str | Path, title: str | None = None) -> Path:
    """Write the training curves of ``metrics`` to the PNG file ``path`` (atomically:
    an old file is replaced only by a complete new one)."""
    from tagger.io import check_output_file, write_atomic

    path = Path(path)
    check_output_file(path)  # before drawing
    write_atomic([render_training(metrics, title)], path)
    return path
