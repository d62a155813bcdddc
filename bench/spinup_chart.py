"""The spin-up benchmark's timeline chart: one row per variant, one bar per phase (simulated minutes)."""

from __future__ import annotations

from pathlib import Path

from bench.spinup_measure import Variant

COLORS = {"cluster": "#8da0cb", "gpu-node-pool": "#fc8d62", "kuberay-operator": "#66c2a5",
          "ray-service": "#a6d854", "model-load": "#e78ac3", "validation": "#ffd92f"}


def draw_timeline(variants: list[Variant], path: Path) -> Path:
    """Draw the phases of every variant as horizontal bars (overlapping phases stack within a row)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(11, 1.2 + 0.9 * len(variants)))
    for row, v in enumerate(reversed(variants)):
        lanes = max(1, len(v.phases))
        for lane, (name, start, end) in enumerate(v.phases):
            height = 0.8 / lanes
            ax.barh(row - 0.4 + lane * height + height / 2, (end - start) / 60, left=start / 60, height=height,
                    color=COLORS.get(name, "#b3b3b3"), edgecolor="black", linewidth=0.3,
                    label=name if row == len(variants) - 1 or name not in ax.get_legend_handles_labels()[1] else None)
        ax.text(v.seconds / 60 + 0.3, row, f"{v.seconds / 60:.0f} min", va="center", fontsize=8)
    ax.set_yticks(range(len(variants)), [v.name for v in reversed(variants)])
    ax.set_xlabel("simulated minutes from start (realistic profile)")
    ax.set_title("Time to a validated endpoint, by phase")
    handles, labels = ax.get_legend_handles_labels()
    unique = dict(zip(labels, handles, strict=False))
    ax.legend(unique.values(), unique.keys(), loc="lower right", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
