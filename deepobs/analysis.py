"""Read a results folder (OUTPUT_DIR/PROBLEM/OPTIMIZER/SETTING/random_seed__*.json) and aggregate over seeds.

As the original's analyzer: a setting's curves are the mean and standard deviation over its seeds;
its metric is test accuracy, or test loss where the problem has no accuracy; the best setting of an
optimizer is chosen by the final value (`final`), the best value over epochs (`best`), or the
number of seeds (`most`).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

CURVES = ("train_losses", "valid_losses", "test_losses", "train_accuracies", "valid_accuracies", "test_accuracies")
MODES = ("final", "best", "most")


class AnalysisError(ValueError):
    """A results folder that cannot be read; the message is one line for the user."""


@dataclass
class Setting:
    problem: str
    optimizer: str
    name: str  # the setting folder
    learning_rate: float
    hyperparams: dict
    runs: list[dict] = field(default_factory=list)

    @property
    def metric(self) -> str:
        return "test_accuracies" if all("test_accuracies" in run for run in self.runs) else "test_losses"

    def curves(self, key: str) -> np.ndarray | None:
        """(seeds, epochs + 1), or None where a run lacks the curve."""
        if not all(key in run for run in self.runs):
            return None
        lengths = {len(run[key]) for run in self.runs}
        if len(lengths) != 1:
            raise AnalysisError(f"{self.problem}/{self.optimizer}/{self.name}: runs of different lengths in {key}")
        return np.array([run[key] for run in self.runs], dtype=float)

    def mean_std(self, key: str) -> tuple[np.ndarray, np.ndarray] | None:
        values = self.curves(key)
        return None if values is None else (values.mean(axis=0), values.std(axis=0))

    def final(self) -> float:
        return float(self.mean_std(self.metric)[0][-1])

    def best(self) -> float:
        mean = self.mean_std(self.metric)[0]
        return float(mean.max() if "acc" in self.metric else mean.min())

    def score(self, mode: str) -> float:
        """Higher is better."""
        value = self.final() if mode in ("final", "most") else self.best()
        return value if "acc" in self.metric else -value


def read_results(results_dir: Path) -> list[Setting]:
    results_dir = Path(results_dir)
    if not results_dir.is_dir():
        raise AnalysisError(f"no results folder {results_dir}")
    settings = []
    for setting_dir in sorted(path for path in results_dir.glob("*/*/*") if path.is_dir()):
        files = sorted(setting_dir.glob("*.json"))
        if not files:
            continue
        runs = []
        for path in files:
            try:
                runs.append(json.loads(path.read_text()))
            except (OSError, json.JSONDecodeError) as error:
                raise AnalysisError(f"unreadable result file {path}: {error}") from None
        first = runs[0]
        learning_rate = first.get("learning_rate", first.get("optimizer_hyperparams", {}).get("lr"))
        hyperparams = first.get("hyperparams", {k: v for k, v in first.get("optimizer_hyperparams", {}).items()
                                                if k != "lr"})
        problem, optimizer = setting_dir.parent.parent.name, setting_dir.parent.name
        settings.append(Setting(problem, optimizer, setting_dir.name, learning_rate, hyperparams, runs))
    if not settings:
        raise AnalysisError(f"no result files under {results_dir} (expected PROBLEM/OPTIMIZER/SETTING/*.json)")
    return settings


def by_problem(settings: list[Setting]) -> dict[str, dict[str, list[Setting]]]:
    grouped: dict[str, dict[str, list[Setting]]] = {}
    for setting in settings:
        grouped.setdefault(setting.problem, {}).setdefault(setting.optimizer, []).append(setting)
    return grouped


def pick(settings: list[Setting], mode: str) -> Setting:
    """The optimizer's setting to show: best final value, best value over epochs, or most seeds."""
    if mode == "most":
        return max(settings, key=lambda s: (len(s.runs), np.nan_to_num(s.score("final"), nan=-np.inf)))
    return max(settings, key=lambda s: np.nan_to_num(s.score(mode), nan=-np.inf))


def table_rows(settings: list[Setting], mode: str) -> list[dict]:
    """One row per problem and optimizer: its picked setting's final and best performance over seeds."""
    rows = []
    for problem, optimizers in by_problem(settings).items():
        for optimizer, candidates in optimizers.items():
            chosen = pick(candidates, mode)
            final = chosen.curves(chosen.metric)[:, -1]
            rows.append({"problem": problem, "optimizer": optimizer, "metric": chosen.metric,
                         "final_mean": float(final.mean()), "final_std": float(final.std()), "best_mean": chosen.best(),
                         "seeds": len(chosen.runs), "settings_tried": len(candidates),
                         "learning_rate": chosen.learning_rate, "setting": chosen.name})
    return rows
