"""`--plot PATH`: a PNG of each provider's speed-up over the baseline, per shape.

One panel per (device, mode, dtype); bars per provider over the shapes, on a log
axis (the reference backend can be 100× slower than the fused ones), with the
baseline at 1.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: no display on CI or GPU machines
import matplotlib.pyplot as plt
from matplotlib import ticker


def plot(rows: list[dict], path: str | Path, title: str) -> None:
    """One panel per (device, mode, dtype): a bar per (shape, provider), the baseline a line."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        if r["speedup_vs_baseline"] is not None:
            groups.setdefault((r["device"], r["mode"], r["dtype"]), []).append(r)
    n = max(1, len(groups))
    fig, axes = plt.subplots(n, 1, figsize=(10, 3.2 * n), squeeze=False)
    for ax, ((device, mode, dtype), grp) in zip(axes[:, 0], sorted(groups.items()), strict=False):
        shapes = list(dict.fromkeys(r["shape"] for r in grp))
        provs = list(dict.fromkeys(r["provider"] for r in grp if r["provider"] != r["baseline"]))
        width = 0.8 / max(1, len(provs))
        values = [1.0]
        for i, p in enumerate(provs):
            xs, ys = [], []
            for j, s in enumerate(shapes):
                hit = [r for r in grp if r["provider"] == p and r["shape"] == s]
                if hit:
                    xs.append(j + (i - (len(provs) - 1) / 2) * width)
                    ys.append(hit[0]["speedup_vs_baseline"])
            bars = ax.bar(xs, ys, width=width, label=p)
            ax.bar_label(bars, labels=[f"{y:.3g}×" for y in ys], fontsize="x-small")
            values += ys
        ax.axhline(1.0, color="black", linewidth=0.8, label=f"{grp[0]['baseline']} (baseline)")
        ax.set_yscale("log")
        ax.set_ylim(min(values) / 2, max(values) * 2)
        ax.yaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}×"))
        ax.set_xticks(range(len(shapes)), shapes)
        ax.set_ylabel("speed-up over baseline")
        ax.set_title(f"{device} {mode} {dtype}")
        ax.legend(fontsize="small")
    if not groups:
        axes[0, 0].text(0.5, 0.5, "no rows with a speed-up", ha="center")
    fig.suptitle(title)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
