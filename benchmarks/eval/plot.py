"""Accuracy against forwards per answer token, one panel per model, one colour per task.

Lines join the steps sweep of the default algorithm and schedule (reference mode, Hoshikage);
other configurations are single markers (x: llama-diffusion-cli, o: corrected mode,
^: the other schedule, s: ENTROPY corrected).
"""
from __future__ import annotations

from pathlib import Path


def plot(results: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = results["models"]
    fig, axes = plt.subplots(1, len(models), figsize=(6.5 * len(models), 4.8), squeeze=False)
    for ax, (name, m) in zip(axes[0], models.items()):
        rows = m["rows"]
        tasks = list(rows[0]["tasks"]) if rows else []
        colours = {t: f"C{i}" for i, t in enumerate(tasks)}
        sweep = [r for r in rows if r["tool"] == "hoshikage" and r["algorithm"] == "CONFIDENCE"
                 and not r["corrected"] and r["schedule"] == rows[0]["schedule"]]
        for t in tasks:
            pts = sorted((r["tasks"][t]["forwards_per_answer_token"], r["tasks"][t]["accuracy"]) for r in sweep)
            ax.plot([p[0] for p in pts], [100 * p[1] for p in pts], "-", color=colours[t], label=t, marker=".")
            for r in rows:
                if r in sweep:
                    continue
                mk = ("x" if r["tool"] != "hoshikage" else "s" if r["algorithm"] == "ENTROPY"
                      else "o" if r["corrected"] else "^" if r["schedule"] != rows[0]["schedule"] else "d")
                f = r["tasks"][t]
                ax.plot(f["forwards_per_answer_token"], 100 * f["accuracy"], mk, color=colours[t],
                        mfc="none" if mk in "os^d" else None, alpha=0.8)
        ax.set_xscale("log")
        ax.set_xlabel("forwards (model calls) per answer token")
        ax.set_ylabel("accuracy (%)")
        ax.set_ylim(-3, 103)
        ax.set_title(f"{name}: {rows[0]['schedule'] if rows else ''} schedule")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
    fig.suptitle("Trained diffusion models: accuracy vs forwards "
                 "(line: steps sweep; x: llama-diffusion-cli; o: corrected; ^: other schedule; s: ENTROPY)",
                 fontsize=9)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
