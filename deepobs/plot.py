"""`python -m deepobs plot RESULTS --out DIR`: curves, learning-rate sensitivity and a performance table.

Writes per problem `PROBLEM_curves.{png,pdf}` (every evaluated metric against epochs, the picked
setting of each optimizer, mean and mean +- std over seeds) and `PROBLEM_lr_sensitivity.{png,pdf}`
(final metric against learning rate, log axis, the best setting per learning rate, std as error bars),
then `performance.md` and `performance.csv`. Needs matplotlib (`pip install -e '.[plot]'`).
"""
from __future__ import annotations

import csv
import io
from pathlib import Path

from deepobs.analysis import CURVES, Setting, by_problem, pick, table_rows

FORMATS = ("png", "pdf")


class PlotError(RuntimeError):
    pass


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise PlotError("plotting needs matplotlib: pip install -e '.[plot]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _save(figure, out_dir: Path, stem: str) -> list[Path]:
    from deepobs.files import atomic_output

    written = []
    for extension in FORMATS:
        with atomic_output(out_dir / f"{stem}.{extension}") as temporary:
            figure.savefig(temporary, format=extension, bbox_inches="tight")
        written.append(out_dir / f"{stem}.{extension}")
    return written


def plot_curves(plt, problem: str, optimizers: dict[str, list[Setting]], mode: str):
    shown = {name: pick(settings, mode) for name, settings in optimizers.items()}
    keys = [key for key in CURVES if any(setting.curves(key) is not None for setting in shown.values())]
    figure, axes = plt.subplots(1, len(keys), figsize=(4 * len(keys), 3.4), squeeze=False, layout="constrained")
    for axis, key in zip(axes[0], keys):
        for name, setting in shown.items():
            summary = setting.mean_std(key)
            if summary is None:
                continue
            mean, std = summary
            epochs = range(len(mean))
            line, = axis.plot(epochs, mean, label=f"{name} (lr {setting.learning_rate:.2g}, {len(setting.runs)} seeds)")
            axis.fill_between(epochs, mean - std, mean + std, color=line.get_color(), alpha=0.2)
        axis.set_title(key.replace("_", " "))
        axis.set_xlabel("epoch")
    axes[0][0].legend(fontsize="small")
    figure.suptitle(f"{problem} ({mode} setting per optimizer; mean and std over seeds)")
    return figure


def plot_lr_sensitivity(plt, problem: str, optimizers: dict[str, list[Setting]]):
    figure, axis = plt.subplots(figsize=(5, 3.5), layout="constrained")
    metric = "test_losses"
    for name, settings in optimizers.items():
        per_lr: dict[float, Setting] = {}
        for setting in settings:
            if setting.learning_rate not in per_lr or setting.score("final") > per_lr[setting.learning_rate].score("final"):
                per_lr[setting.learning_rate] = setting
        rates = sorted(per_lr)
        metric = per_lr[rates[0]].metric
        finals = [per_lr[rate].curves(metric)[:, -1] for rate in rates]
        axis.errorbar(rates, [f.mean() for f in finals], yerr=[f.std() for f in finals], marker="o", capsize=3,
                      label=name)
    axis.set_xscale("log")
    axis.set_xlabel("learning rate")
    axis.set_ylabel(f"final {metric.replace('_', ' ')}")
    axis.set_title(f"{problem}: learning-rate sensitivity")
    axis.legend(fontsize="small")
    return figure


def table_markdown(rows: list[dict], mode: str) -> str:
    lines = [f"# Performance ({mode} setting per optimizer; mean +- std over seeds)", "",
             "| problem | optimizer | metric | final | best (mean curve) | seeds | settings | lr | setting |",
             "|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        lines.append(f"| {row['problem']} | {row['optimizer']} | {row['metric']} | {row['final_mean']:.4g} +- "
                     f"{row['final_std']:.2g} | {row['best_mean']:.4g} | {row['seeds']} | {row['settings_tried']} | "
                     f"{row['learning_rate']:.3g} | `{row['setting']}` |")
    return "\n".join(lines) + "\n"


def table_csv(rows: list[dict]) -> str:
    stream = io.StringIO()
    writer = csv.DictWriter(stream, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    return stream.getvalue()


def plot_results(settings: list[Setting], out_dir: Path, mode: str = "final") -> list[Path]:
    from deepobs.files import atomic_write_text

    plt = _pyplot()
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for problem, optimizers in by_problem(settings).items():
        for stem, figure in ((f"{problem}_curves", plot_curves(plt, problem, optimizers, mode)),
                             (f"{problem}_lr_sensitivity", plot_lr_sensitivity(plt, problem, optimizers))):
            written += _save(figure, out_dir, stem)
            plt.close(figure)
    rows = table_rows(settings, mode)
    for name, text in (("performance.md", table_markdown(rows, mode)), ("performance.csv", table_csv(rows))):
        atomic_write_text(out_dir / name, text)
        written.append(out_dir / name)
    return written
