"""Run the ORIGINAL deepobs 1.1.2 analyzer on a results folder; print what it read as one JSON line.

    python tests/original_analyzer.py ORIGINAL RESULTS_DIR

ORIGINAL is the released wheel (`pip download deepobs==1.1.2 --no-deps`; a wheel is a zip Python
imports from) or a folder it was unpacked into. Run in its own process: the original's package is
also called `deepobs`. Its loading code (analyze_utils.Analyzer -> TestProblemAnalyzer ->
OptimizerAnalyzer -> SettingAnalyzer -> AggregateRun, and the v1.2 shared_utils in the same wheel)
runs unmodified. What is stubbed, because it plays no part in reading results: the package
`__init__`s (they import the TF1 test problems), `tensorflow` (its config module reads tf.float32),
and `pandas` / `matplotlib2tikz` when they are not installed (the table and TikZ export use them).
"""
import json
import os
import sys
import types
import warnings


def stub(name: str, **attributes) -> None:
    module = types.ModuleType(name)
    module.__dict__.update(attributes)
    sys.modules[name] = module


def package(name: str, path: str) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__path__ = [path]
    sys.modules[name] = module
    return module


def load_original(original: str):
    root = os.path.join(original, "deepobs")
    package("deepobs", root)
    package("deepobs.tensorflow", os.path.join(root, "tensorflow"))
    package("deepobs.analyzer", os.path.join(root, "analyzer"))
    stub("tensorflow", float32="float32")
    for optional in ("pandas", "matplotlib2tikz"):
        try:
            __import__(optional)
        except ImportError:
            stub(optional, save=None, get_tikz_code=None)
    import matplotlib
    matplotlib.use("Agg")
    import deepobs.tensorflow.config  # noqa: F401  (the analyzer reads its baseline dir)
    sys.modules["deepobs.tensorflow"].config = sys.modules["deepobs.tensorflow.config"]
    from deepobs.analyzer import analyze_utils, shared_utils
    return analyze_utils, shared_utils


def main(original: str, results_dir: str) -> dict:
    analyze_utils, shared_utils = load_original(original)
    import matplotlib.pyplot as plt

    read = {"settings": [], "v12": []}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # mean of the empty accuracy lists of loss-only problems
        analyzer = analyze_utils.Analyzer(results_dir)
        for problem_name, problem in analyzer.testproblems.items():
            for optimizer_name, optimizer in problem.optimizers.items():
                figure, axes = plt.subplots(1, 5)
                optimizer.plot_lr_sensitivity(axes[0], mode="final")
                optimizer.plot_performance(axes[1:], mode="most")
                table = optimizer.get_bm_table({"Performance": {}, "Speed": {}, "Tuneability": {}})
                plt.close(figure)
                best = optimizer.get_best_setting_final()
                for setting_name, setting in optimizer.settings.items():
                    output = setting.aggregate.output
                    read["settings"].append({
                        "testproblem": problem_name, "optimizer": optimizer_name, "setting": setting_name,
                        "num_runs": setting.aggregate.num_runs, "metric": setting.aggregate.metric,
                        "final_value": float(setting.aggregate.final_value),
                        "learning_rate": output["learning_rate"], "hyperparams": output["hyperparams"],
                        "points": {m: int(output[m]["mean"].size) for m in
                                   ("train_losses", "test_losses", "train_accuracies", "test_accuracies")},
                        "test_losses_mean": [float(v) for v in output["test_losses"]["mean"]],
                        "is_best_final": setting is best,
                        "table_performance": float(table["Performance"][optimizer_name]),
                    })
                # The v1.2 analyzer in the same wheel (shared_utils) on the same folder.
                optimizer_path = os.path.join(results_dir, problem_name, optimizer_name)
                ranking = shared_utils.create_setting_analyzer_ranking(optimizer_path, "final", "test_accuracies")
                for setting in ranking:
                    read["v12"].append({"path": setting.path, "n_runs": setting.n_runs,
                                        "final_test_accuracy": float(setting.get_final_value("test_accuracies")),
                                        "num_epochs": setting.aggregate["num_epochs"]})
    return read


if __name__ == "__main__":
    original_path, results_path = sys.argv[1:3]
    sys.path.insert(0, original_path)
    print(json.dumps(main(original_path, results_path)))
