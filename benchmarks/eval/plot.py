"""Accuracy against forwards per answer token, one panel per model, one colour per task.

Lines join the steps sweep of the default algorithm and schedule (reference mode, Hoshikage);
other configurations are single markers (x: llama-diffusion-cli, o: corrected mode,
^: the other schedule, s: ENTROPY corrected). Rows with a threshold or early stop are left
out: ``plot_pareto`` draws them.
"""
from __future__ import annotations

from pathlib import Path


def is_fixed_step(row: dict) -> bool:
    """A row that decodes a fixed number of steps: no threshold, no early stop."""
    return not row.get("threshold") and not row.get("early_stop")


def fixed_step_rows(rows: list[dict]) -> list[dict]:
    return [r for r in rows if is_fixed_step(r)]


def plot(results: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = results["models"]
    fig, axes = plt.subplots(1, len(models), figsize=(6.5 * len(models), 4.8), squeeze=False)
    for ax, (name, m) in zip(axes[0], models.items()):
        rows = fixed_step_rows(m["rows"])
        tasks = list(rows[0]["tasks"]) if rows else []
        colours = {t: f"C{i}" for i, t in enumerate(tasks)}
        sweep = [r for r in rows if r["tool"] == "hoshikage" and r["algorithm"] == rows[0]["algorithm"]
                 and not r["corrected"] and r["schedule"] == rows[0]["schedule"]]
        for t in tasks:
            pts = sorted((r["tasks"][t]["forwards_per_answer_token"], r["tasks"][t]["accuracy"]) for r in sweep)
            ax.plot([p[0] for p in pts], [100 * p[1] for p in pts], "-", color=colours[t], label=t, marker=".")
            for r in rows:
                if r in sweep:
                    continue
                mk = ("x" if r["tool"] != "hoshikage" else "s" if r["algorithm"] != rows[0]["algorithm"]
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


def plot_pareto(results: dict, out: Path) -> bool:
    """Accuracy against forwards per prompt, one panel per model (row) and task (column): the
    fixed-steps sweep and the thresholds at the default steps, each without and with early stop;
    x: llama-diffusion-cli at the default steps. False when the run has no fewer-forwards rows."""
    models = {n: m["rows"] for n, m in results["models"].items()}
    if all(is_fixed_step(r) for rows in models.values() for r in rows):
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    tasks = list(next(iter(models.values()))[0]["tasks"])
    fig, axes = plt.subplots(len(models), len(tasks), figsize=(3.3 * len(tasks), 3.0 * len(models)), squeeze=False)
    series = (("fixed steps", False, False, "C0", "-"), ("fixed steps + early stop", False, True, "C1", "-"),
              ("threshold 0.5-0.99", True, False, "C2", "--"), ("threshold + early stop", True, True, "C3", "--"))
    for axrow, (name, rows) in zip(axes, models.items()):
        base = [r for r in rows if r["tool"] == "hoshikage" and r["algorithm"] == rows[0]["algorithm"]
                and not r["corrected"] and r["schedule"] == rows[0]["schedule"]]
        for ax, task in zip(axrow, tasks):
            def point(r):
                f = r["tasks"][task]
                return f.get("forwards", 0) / max(f["n"], 1), 100 * f["accuracy"], r
            for label, thr, es, colour, style in series:
                pts = sorted((point(r) for r in base if bool(r.get("threshold")) == thr
                              and bool(r.get("early_stop")) == es and (not thr or r["frac"] == 1.0)),
                             key=lambda p: p[:2])
                ax.plot([p[0] for p in pts], [p[1] for p in pts], style, color=colour, marker=".", label=label)
                if thr and es:
                    for x, y, r in pts:
                        ax.annotate(f"{r['threshold']:g}", (x, y), fontsize=6, color=colour)
            for r in rows:
                if r["tool"] != "hoshikage" and r["frac"] == 1.0:
                    x, y, _ = point(r)
                    ax.plot(x, y, "kx", label="llama-diffusion-cli")
            ax.set_xscale("log")
            ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
            ax.set_ylim(-3, 103)
            ax.grid(alpha=0.3)
            ax.set_title(f"{name}: {task}", fontsize=8)
            ax.tick_params(labelsize=7)
        axrow[0].set_ylabel("accuracy (%)", fontsize=8)
    for ax in axes[-1]:
        ax.set_xlabel("forwards per prompt", fontsize=8)
    axes[0][0].legend(fontsize=6, loc="lower right")
    fig.suptitle("Fewer forwards on the trained models: accuracy vs forwards (reference mode; labels: threshold)",
                 fontsize=9)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return True
