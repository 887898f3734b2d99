"""The runner (python -m deepobs run): the original's semantics, result files its own analyzer reads."""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from deepobs.cli import main
from deepobs.results import float2str, setting_folder_name
from deepobs.runner import RunError, RunSettings, make_lr_schedule, run
from parity.fixtures import write_cifar10, write_mnist

HERE = Path(__file__).parent
ORIGINAL_CANDIDATES = [os.environ.get("DEEPOBS_ORIGINAL", ""), str(HERE.parent / ".original")]
ORIGINAL = next((path for path in ORIGINAL_CANDIDATES if path and os.path.exists(path)), None)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    write_cifar10(root)
    write_mnist(root)
    return root


def result_files(output_dir: Path) -> list[Path]:
    return sorted(output_dir.rglob("*.json"))


def run_original_analyzer(results_dir: Path) -> dict:
    completed = subprocess.run([sys.executable, str(HERE / "original_analyzer.py"), ORIGINAL, str(results_dir)],
                               capture_output=True, text=True, timeout=300, cwd=results_dir)
    assert completed.returncode == 0, completed.stderr[-3000:]
    return json.loads(completed.stdout.strip().splitlines()[-1])


# --- the original's naming and schedule, values from its own docstrings ------------------------------

def test_float2str_as_the_original():
    assert float2str(0.01) == "1.e-02"
    assert float2str(0.3) == "3.e-01"
    assert float2str(0.002) == "2.e-03"
    assert float2str(1.5e-4) == "1.5e-04"


def test_setting_folder_name_v11_layout():
    assert (setting_folder_name(100, 128, None, 0.01, None, None, {"momentum": 0.9, "nesterov": False})
            == "num_epochs__100__batch_size__128__momentum__9.e-01__nesterov__False__lr__1.e-02")
    assert (setting_folder_name(10, 64, 0.002, 0.3, [5, 8], [0.1, 0.01], {})
            == "num_epochs__10__batch_size__64__weight_decay__2.e-03__lr_schedule__0_3.e-01_5_3.e-02_8_3.e-03")


def test_lr_schedule_factors_multiply_the_base_rate():
    schedule = make_lr_schedule(0.3, [50, 100], [0.1, 0.01])
    assert schedule.keys() == {0, 50, 100}
    assert schedule[0] == 0.3 and schedule[50] == pytest.approx(0.03) and schedule[100] == pytest.approx(0.003)
    assert make_lr_schedule(0.3, None, None) == {0: 0.3}
    with pytest.raises(RunError, match="both"):
        make_lr_schedule(0.3, [5], None)
    with pytest.raises(RunError, match="same number"):
        make_lr_schedule(0.3, [5, 6], [0.1])


# --- flags ----------------------------------------------------------------------------------------------

def parse(argv: list[str]) -> RunSettings:
    from deepobs.run_cli import build_parser, settings_from_args

    optimizer = argv[argv.index("--optimizer") + 1]
    parser, specs = build_parser(optimizer)
    return settings_from_args(parser.parse_args(argv), specs)


def test_optimizer_keywords_become_typed_flags():
    settings = parse(["mnist_mlp", "--optimizer", "torch.optim.SGD", "--lr", "0.1", "--momentum", "0.9", "--nesterov"])
    assert settings.hyperparams["momentum"] == 0.9 and settings.hyperparams["nesterov"] is True
    assert settings.hyperparams["dampening"] == 0.0 and isinstance(settings.hyperparams["dampening"], float)
    assert parse(["mnist_mlp", "--optimizer", "torch.optim.SGD", "--lr", "0.1", "--no-nesterov"]
                 ).hyperparams["nesterov"] is False
    adam = parse(["mnist_mlp", "--optimizer", "deepobs.optim.TF1Adam", "--lr", "1e-3", "--betas", "0.8", "0.99"])
    assert adam.hyperparams == {"betas": [0.8, 0.99], "eps": 1e-8}


def test_boolean_flag_takes_no_value(capsys):
    """The original's type=bool made `--nesterov False` true; here it is a usage error."""
    with pytest.raises(SystemExit) as exit_info:
        parse(["mnist_mlp", "--optimizer", "torch.optim.SGD", "--lr", "0.1", "--nesterov", "False"])
    assert exit_info.value.code == 2


def test_runner_weight_decay_and_optimizer_weight_decay_are_distinct():
    settings = parse(["mnist_mlp", "--optimizer", "torch.optim.SGD", "--lr", "0.1", "--wd", "0.01",
                      "--opt-weight-decay", "0.5"])
    assert settings.weight_decay == 0.01 and settings.hyperparams["weight_decay"] == 0.5


@pytest.mark.parametrize("optimizer, message", [
    ("torch.optim.Nope", "cannot import optimizer"),
    ("runner_optimizers.NotAnOptimizer", "not a torch.optim.Optimizer subclass"),
    ("SGD", "import path"),
])
def test_bad_optimizer_is_one_line(capsys, optimizer, message):
    assert main(["run", "mnist_mlp", "--optimizer", optimizer, "--lr", "0.1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and message in err


def test_problem_without_default_batch_size_says_which_flag(capsys, tmp_path):
    assert main(["run", "cifar100_3c3d", "--optimizer", "torch.optim.SGD", "--lr", "0.1", "--output-dir",
                 str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "no default batch size for cifar100_3c3d" in err and "--bs" in err


def test_unknown_problem_and_missing_data_are_one_line(capsys, tmp_path):
    assert main(["run", "mnist_resnet", "--optimizer", "torch.optim.SGD", "--lr", "0.1"]) == 1
    assert "valid names: mnist_logreg" in capsys.readouterr().err
    assert main(["run", "mnist_logreg", "--optimizer", "torch.optim.SGD", "--lr", "0.1", "--data-dir",
                 str(tmp_path / "empty"), "--output-dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "python -m deepobs data prepare mnist" in err
    assert not result_files(tmp_path)


# --- training runs on small files in the real format ---------------------------------------------------

CIFAR_RUN = ["run", "cifar10_3c3d", "--optimizer", "torch.optim.SGD", "--lr", "0.01", "--momentum", "0.9",
             "--bs", "32", "-N", "2", "--train-log-interval", "2"]


@pytest.fixture(scope="module")
def cifar_results(data_dir, tmp_path_factory) -> Path:
    """The issue's acceptance run: 2 epochs of cifar10_3c3d, SGD with momentum, two seeds."""
    output_dir = tmp_path_factory.mktemp("results")
    for seed in ("1", "2"):
        assert main([*CIFAR_RUN, "-r", seed, "--data-dir", str(data_dir), "--output-dir", str(output_dir)]) == 0
    return output_dir


def test_result_file_layout_and_keys(cifar_results):
    files = result_files(cifar_results)
    assert len(files) == 2
    setting = files[0].parent
    assert setting.relative_to(cifar_results).parts[:2] == ("cifar10_3c3d", "SGD")
    assert setting.name == ("num_epochs__2__batch_size__32__dampening__0.e+00__maximize__False__momentum__9.e-01"
                            "__nesterov__False__weight_decay__0.e+00__lr__1.e-02")
    assert [f.name.split("__")[1] for f in files] == ["1", "2"]
    output = json.loads(files[0].read_text())
    for key in ("train_losses", "test_losses", "train_accuracies", "test_accuracies"):
        assert len(output[key]) == 3, key  # before training and after each of the 2 epochs
    # cifar10 fixture: 301 train records -> 9 batches of 32 per epoch, logged at steps 0, 2, 4, 6, 8
    assert len(output["minibatch_train_losses"]) == 2 * 5
    v11 = {"optimizer": "SGD", "learning_rate": 0.01, "lr_sched_epochs": None, "train_log_interval": 2,
           "weight_decay": None, "batch_size": 32, "num_epochs": 2, "testproblem": "cifar10_3c3d"}
    assert {key: output[key] for key in v11} == v11
    assert output["hyperparams"]["momentum"] == 0.9 and "lr" not in output["hyperparams"]
    assert output["optimizer_name"] == "SGD" and output["optimizer_hyperparams"]["lr"] == 0.01
    assert output["training_params"] == {"lr_sched_epochs": None, "lr_sched_factors": None}
    assert not [p for p in setting.iterdir() if not p.name.endswith(".json")]  # no temporary left
    from deepobs.files import _umask
    assert files[0].stat().st_mode & 0o777 == 0o666 & ~_umask()  # as open(path, "w") would make it


@pytest.mark.skipif(ORIGINAL is None, reason="the original deepobs 1.1.2 wheel is absent "
                                             "(pip download deepobs==1.1.2 --no-deps; set DEEPOBS_ORIGINAL)")
def test_original_analyzer_reads_our_results(cifar_results):
    read = run_original_analyzer(cifar_results)
    [setting] = read["settings"]
    assert setting["num_runs"] == 2 and setting["metric"] == "test_accuracies"
    assert setting["points"] == {"train_losses": 3, "test_losses": 3, "train_accuracies": 3, "test_accuracies": 3}
    assert setting["learning_rate"] == 0.01 and setting["hyperparams"]["momentum"] == 0.9
    ours = [json.loads(f.read_text()) for f in result_files(cifar_results)]
    assert setting["test_losses_mean"] == pytest.approx([(a + b) / 2 for a, b in zip(*(o["test_losses"] for o in ours))])
    assert setting["final_value"] == pytest.approx(sum(o["test_accuracies"][-1] for o in ours) / 2)
    [v12] = read["v12"]
    assert v12["n_runs"] == 2 and v12["num_epochs"] == 2


def test_repeated_run_never_overwrites_silently(cifar_results, data_dir, capsys):
    before = {p: p.read_bytes() for p in result_files(cifar_results)}
    argv = [*CIFAR_RUN, "-r", "1", "--data-dir", str(data_dir), "--output-dir", str(cifar_results)]
    assert main(argv) == 1
    assert "a result for this setting and seed exists" in capsys.readouterr().err
    assert main([*argv, "--skip-existing"]) == 0
    assert {p: p.read_bytes() for p in result_files(cifar_results)} == before


def test_overwrite_replaces_the_result_of_that_seed(tmp_path, data_dir):
    argv = ["run", "mnist_logreg", "--optimizer", "torch.optim.SGD", "--lr", "0.1", "--bs", "64", "-N", "1",
            "--data-dir", str(data_dir), "--output-dir", str(tmp_path)]
    assert main(argv) == 0
    [first] = result_files(tmp_path)
    assert main([*argv, "--overwrite"]) == 0
    [second] = result_files(tmp_path)
    assert second.parent == first.parent and json.loads(second.read_text())["num_epochs"] == 1


def test_seed_makes_a_run_reproducible(data_dir):
    settings = RunSettings("mnist_mlp", "torch.optim.SGD", 0.1, batch_size=64, num_epochs=1, random_seed=3,
                           data_dir=data_dir, no_logs=True, train_log_interval=1)
    first, second = run(settings, log=lambda _: None).output, run(settings, log=lambda _: None).output
    other = run(RunSettings(**{**settings.__dict__, "random_seed": 4}), log=lambda _: None).output
    assert first["minibatch_train_losses"] == second["minibatch_train_losses"]
    assert first["test_losses"] == second["test_losses"]
    assert first["minibatch_train_losses"] != other["minibatch_train_losses"]


def test_lr_schedule_reaches_the_optimizer_per_epoch(data_dir):
    from runner_optimizers import RecordingSGD

    RecordingSGD.learning_rates.clear()
    settings = RunSettings("mnist_logreg", "runner_optimizers.RecordingSGD", 0.5, batch_size=64, num_epochs=3,
                           lr_sched_epochs=(1, 2), lr_sched_factors=(0.1, 0.01), data_dir=data_dir, no_logs=True)
    output = run(settings, log=lambda _: None).output
    steps = 310 // 64  # fixture: 310 train records
    assert RecordingSGD.learning_rates == [0.5] * steps + [0.05] * steps + [0.005] * steps
    assert output["lr_sched_factors"] == [0.1, 0.01]


def test_non_finite_loss_fills_with_epoch_zero_values(data_dir):
    settings = RunSettings("mnist_logreg", "torch.optim.SGD", float("inf"), batch_size=64, num_epochs=3,
                           data_dir=data_dir, no_logs=True)
    with pytest.warns(RuntimeWarning, match="Loss is NaN or Inf"):
        output = run(settings, log=lambda _: None).output
    for key in ("train_losses", "test_losses", "train_accuracies", "test_accuracies"):
        assert len(output[key]) == 4 and output[key][1:] == [output[key][0]] * 3
    assert output["deepobs_torch"]["aborted_after_epoch"] == 0


def test_valid_split_adds_valid_metrics(data_dir, monkeypatch):
    from deepobs.datasets.mnist import MNIST

    monkeypatch.setattr(MNIST, "valid_size", 128)  # the fixture holds 310 train records, not 60000
    output = run(RunSettings("mnist_logreg", "torch.optim.SGD", 0.1, batch_size=64, num_epochs=1, data_dir=data_dir,
                             no_logs=True, valid_split=True), log=lambda _: None).output
    assert len(output["valid_losses"]) == len(output["valid_accuracies"]) == 2
    assert output["deepobs_torch"]["valid_split"] is True


def test_valid_split_where_the_data_set_has_none_is_one_line(data_dir, capsys, tmp_path):
    assert main(["run", "cifar10_3c3d", "--optimizer", "torch.optim.SGD", "--lr", "0.1", "--valid-split",
                 "--data-dir", str(data_dir), "--output-dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "no valid split" in err


def test_progress_bar_is_quiet_when_not_a_terminal(data_dir, capsys):
    run(RunSettings("mnist_logreg", "torch.optim.SGD", 0.1, batch_size=64, num_epochs=1, data_dir=data_dir,
                    no_logs=True), log=lambda _: None)
    assert "epoch 1/1" not in capsys.readouterr().err


# --- python -m deepobs plot --------------------------------------------------------------------------------

def test_plot_renders_our_results(cifar_results, tmp_path, capsys):
    assert main(["plot", str(cifar_results), "--out", str(tmp_path)]) == 0
    for stem in ("cifar10_3c3d_curves", "cifar10_3c3d_lr_sensitivity"):
        assert (tmp_path / f"{stem}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert (tmp_path / f"{stem}.pdf").read_bytes()[:5] == b"%PDF-"
    table = (tmp_path / "performance.md").read_text()
    assert "| cifar10_3c3d | SGD | test_accuracies |" in table and "| 2 | 1 |" in table  # 2 seeds, 1 setting


def write_run(root: Path, optimizer: str, lr: float, seed: int, test_accuracies: list[float]) -> None:
    setting = root / "mnist_mlp" / optimizer / f"num_epochs__2__batch_size__128__lr__{float2str(lr)}"
    setting.mkdir(parents=True, exist_ok=True)
    n = len(test_accuracies)
    (setting / f"random_seed__{seed}__2020-01-01-00-00-00.json").write_text(json.dumps({
        "testproblem": "mnist_mlp", "num_epochs": n - 1, "batch_size": 128, "learning_rate": lr, "hyperparams": {},
        "train_losses": [1.0] * n, "test_losses": [1.0] * n, "train_accuracies": [0.5] * n,
        "test_accuracies": test_accuracies, "minibatch_train_losses": [1.0]}))


def test_plot_table_aggregates_seeds_and_picks_by_mode(tmp_path):
    from deepobs.analysis import read_results, table_rows

    write_run(tmp_path, "SGD", 0.1, 1, [0.1, 0.9, 0.5])
    write_run(tmp_path, "SGD", 0.1, 2, [0.1, 0.7, 0.7])  # lr 0.1: mean [0.1, 0.8, 0.6]
    write_run(tmp_path, "SGD", 0.01, 1, [0.1, 0.5, 0.65])  # lr 0.01: final 0.65, best 0.65
    settings = read_results(tmp_path)
    [final] = table_rows(settings, "final")
    assert final["learning_rate"] == 0.01 and final["final_mean"] == pytest.approx(0.65)
    [best] = table_rows(settings, "best")
    assert best["learning_rate"] == 0.1 and best["best_mean"] == pytest.approx(0.8)
    assert best["final_mean"] == pytest.approx(0.6) and best["final_std"] == pytest.approx(0.1)
    [most] = table_rows(settings, "most")
    assert most["seeds"] == 2


def test_plot_of_an_empty_folder_is_one_line(tmp_path, capsys):
    assert main(["plot", str(tmp_path), "--out", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "no result files" in err


def test_write_result_is_exclusive_with_and_without_hard_links(tmp_path, monkeypatch):
    from deepobs.results import ResultExistsError, load_result, write_result

    first = write_result(tmp_path, 3, {"run": 1})
    with pytest.raises(ResultExistsError):
        write_result(tmp_path, 3, {"run": 2})
    monkeypatch.setattr(os, "link", lambda *args: (_ for _ in ()).throw(PermissionError("no hard links here")))
    second = write_result(tmp_path, 4, {"run": 3})
    assert load_result(first) == {"run": 1} and load_result(second) == {"run": 3}
    assert sorted(p.name.split("__")[1] for p in tmp_path.iterdir()) == ["3", "4"]  # no temporaries left


@pytest.mark.parametrize("problem, batch_size", [("quadratic_deep", 128), ("two_d_rosenbrock", 128),
                                                 ("mnist_vae", 64), ("tolstoi_char_rnn", 8)])
def test_every_family_trains_through_the_runner(problem, batch_size, data_dir, tmp_path):
    # The runner consumes the problem's family contract: no accuracy where the original has none,
    # the character LSTM's state reset at every split.
    from parity.fixtures import write_tolstoi

    write_tolstoi(data_dir)
    settings = RunSettings(problem, "torch.optim.SGD", 1e-4, batch_size=batch_size, num_epochs=1, random_seed=1,
                           data_dir=data_dir, no_logs=True)
    output = run(settings, log=lambda _: None).output
    assert len(output["test_losses"]) == 2 and all(map(lambda v: v == v, output["test_losses"]))
    assert bool(output.get("test_accuracies")) == (problem == "tolstoi_char_rnn")


def test_char_rnn_evaluation_does_not_depend_on_the_split_before_it(data_dir):
    from deepobs.datasets import get_dataset
    from deepobs.problems import PROBLEMS
    from deepobs.runner import evaluate
    from parity.fixtures import write_tolstoi

    write_tolstoi(data_dir)
    problem = PROBLEMS["tolstoi_char_rnn"]
    dataset = get_dataset("tolstoi", data_dir, 8, seed=1)
    model = problem.model()
    alone = evaluate(problem, model, dataset, "test", None, torch.device("cpu"))
    evaluate(problem, model, dataset, "train_eval", None, torch.device("cpu"))
    after_train_eval = evaluate(problem, model, dataset, "test", None, torch.device("cpu"))
    assert alone == after_train_eval


# --- compiled evaluation (--compile, the default) --------------------------------------------------------

def test_compile_switch_defaults_on_and_turns_off():
    flags = ["cifar10_3c3d", "--optimizer", "torch.optim.SGD", "--lr", "0.1"]
    assert parse(flags).compile is True and RunSettings.compile is True
    assert parse([*flags, "--no-compile"]).compile is False and parse([*flags, "--compile"]).compile is True


def test_compile_wraps_only_the_measured_phases_of_conv_models():
    from deepobs.problems import PROBLEMS
    from deepobs import native
    from deepobs.runner import COMPILED_PHASES, build_model

    conv = build_model(PROBLEMS["cifar10_3c3d"], torch.device("cpu"), compile=True)
    assert conv.eval is not conv.model and conv.eval._orig_mod is conv.model  # a wrapper: same parameters
    assert (conv.train is conv.model) == ("train" not in COMPILED_PHASES)
    dense = build_model(PROBLEMS["mnist_mlp"], torch.device("cpu"), compile=True)
    eager = build_model(PROBLEMS["cifar10_3c3d"], torch.device("cpu"), compile=False)
    blocked = build_model(PROBLEMS["mnist_2c2d"], torch.device("cpu"), compile=True)  # its eager evaluation wins
    assert all(module is models.model for models in (dense, eager, blocked) for module in (models.train, models.eval))
    with native.enabled(False):
        compiled = build_model(PROBLEMS["mnist_2c2d"], torch.device("cpu"), compile=True)
        assert compiled.eval is not compiled.model and compiled.eval._orig_mod is compiled.model


def test_compiled_evaluation_reports_what_eager_evaluation_does(cifar_results, data_dir, tmp_path):
    """Training is eager in both runs, so the weights agree bit for bit; the compiled evaluation's metrics
    may differ from eager's only by float32 reordering."""
    assert main([*CIFAR_RUN, "-r", "1", "--data-dir", str(data_dir), "--output-dir", str(tmp_path),
                 "--no-compile"]) == 0
    compiled, eager = (json.loads(next(root.rglob("*random_seed__1*.json")).read_text())
                       for root in (cifar_results, tmp_path))
    assert compiled["deepobs_torch"]["compiled"] and not eager["deepobs_torch"]["compiled"]
    assert compiled["minibatch_train_losses"] == eager["minibatch_train_losses"]
    for key in ("train_losses", "test_losses", "train_accuracies", "test_accuracies"):
        assert compiled[key] == pytest.approx(eager[key], rel=1e-5, abs=1e-6), key


# --- the allocator setting (--keep-freed-memory, the default) ---------------------------------------

def probe_lines(source: str, mode: str, timeout: int) -> list[list[str]]:
    """The words of the last two lines a probe prints, run in a fresh interpreter (allocator settings are
    process-wide)."""
    completed = subprocess.run([sys.executable, "-c", source, mode], capture_output=True, text=True,
                               timeout=timeout, check=True)
    return [line.split() for line in completed.stdout.splitlines()[-2:]]


KEPT_MEMORY_PROBE = """
import os, resource, sys, torch
os.environ["DEEPOBS_NATIVE"] = "0"  # aten's pools: int64 indices and zero-filled gradients, the blocks measured below
from deepobs import runner
from deepobs.problems import PROBLEMS
applied = runner.keep_freed_memory() if sys.argv[1] == "keep" else None
torch.manual_seed(0)
problem = PROBLEMS["cifar10_3c3d"]
model = problem.model()
optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
batch = (torch.rand(128, 3, 32, 32), torch.randint(0, 10, (128,)))
faults, losses = [], []
for _ in range(12):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    loss = runner.train_step(problem, model, optimizer, batch, None, needs_closure=False)
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    losses.append(float(loss.detach()).hex())
print(applied, *faults)
print(*losses)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc")
def test_keep_freed_memory_reuses_the_steps_activations_instead_of_faulting_them_in_again():
    def faults(mode):
        (applied, *counts), losses = probe_lines(KEPT_MEMORY_PROBE, mode, timeout=300)
        return applied, [int(count) for count in counts], losses

    (applied, kept, kept_losses), (_, default, default_losses) = faults("keep"), faults("default")
    assert applied == "True"
    assert kept_losses == default_losses  # where the memory comes from changes no value, bit for bit
    # glibc's default hands the step's freed activations (up to 25 MB each) back and faults them in again, as
    # often as its dynamic mmap threshold lets it: over 4 runs of 12 steps here, steps 1-11 faulted 43,000-215,000
    # pages in all, a re-faulted step 15,000-24,000, with runs of 0-1,056 wherever the threshold had just risen
    # (CI once saw [29707, 20531, 22099, 14513, 16, 22065, 576, 0, ...]). Kept, after the first step's
    # allocations (4 runs), each step faulted 0-1,568 pages and steps 1-11 at most 4,708 in all. With
    # deepobs.native's pools (no index or zero-filled buffers) the default re-faulted less: 19,428 pages in
    # steps 1-11 once, so the probe runs torch's own pools.
    after_first_default, after_first_kept = sum(default[1:]), sum(kept[1:])
    assert after_first_default > 30_000, default  # the probe sees the re-faulting it is here to rule out
    assert max(kept[2:]) < 5_000, kept  # no warm step faults a third of one step's activations in again
    assert after_first_kept < 0.25 * after_first_default, (kept, default)


LARGE_BLOCK_PROBE = """
import resource, sys, torch
from deepobs import runner
applied = runner.keep_freed_memory() if sys.argv[1] == "keep" else None
def resident_pages():
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1])
faults, released = [], []
for _ in range(40):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    block = torch.ones(25_000_000)  # 100 MB, above the largest mmap threshold glibc accepts (32 MiB)
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    held = resident_pages()
    del block
    released.append(held - resident_pages())
print(applied, *faults)
print(*released)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc")
def test_keep_freed_memory_keeps_blocks_above_the_largest_mmap_threshold():
    def probe(mode):
        (applied, *faults), released = probe_lines(LARGE_BLOCK_PROBE, mode, timeout=120)
        return applied, [int(count) for count in faults], [int(count) for count in released]

    (applied, kept_faults, kept_released), (_, default_faults, default_released) = probe("keep"), probe("default")
    assert applied == "True"
    # 100 MB is 24,415 pages of 4 KiB. By default each block is mapped on its own: freeing it hands every
    # page back, and the next one faults them all in again.
    assert all(pages > 20_000 for pages in default_released), default_released
    assert all(count > 20_000 for count in default_faults), default_faults
    # Kept, no page of a freed block goes back to the OS, whatever the heap's layout.
    assert all(pages == 0 for pages in kept_released), kept_released
    # Reuse without a fault starts once a freed hole fits the request between the interpreter's small blocks:
    # after 2 to 7 calls here (over 40 hash seeds), later in CI's environment once, so only its start is asserted.
    assert kept_faults[0] > 20_000 and min(kept_faults[1:]) < 100, kept_faults


def test_keep_freed_memory_switch_defaults_on_and_is_recorded(cifar_results):
    flags = ["cifar10_3c3d", "--optimizer", "torch.optim.SGD", "--lr", "0.1"]
    assert parse(flags).keep_freed_memory is True
    assert parse([*flags, "--no-keep-freed-memory"]).keep_freed_memory is False
    record = json.loads(next(cifar_results.rglob("*random_seed__1*.json")).read_text())
    assert record["deepobs_torch"]["keep_freed_memory"] is True


def test_native_kernels_switch_defaults_on_and_is_recorded(cifar_results, data_dir, tmp_path):
    flags = ["cifar10_3c3d", "--optimizer", "torch.optim.SGD", "--lr", "0.1"]
    assert parse(flags).native_kernels is True
    assert parse([*flags, "--no-native-kernels"]).native_kernels is False
    record = json.loads(next(cifar_results.rglob("*random_seed__1*.json")).read_text())
    assert record["deepobs_torch"]["native_kernels"] == "built"
    # Switched off, the same seed evaluates the initial model to the same losses up to float32 round-off: the
    # max pool kernel is aten's, bit for bit (tests/test_native.py), the dense layers' oneDNN products round
    # apart from MKL's; 3c3d has no dropout, so no mask changes. Training amplifies that round-off (2e-5
    # relative after one epoch, 4e-4 after two here), so the trained values are compared to 1e-2.
    assert main([*CIFAR_RUN, "-r", "1", "--data-dir", str(data_dir), "--output-dir", str(tmp_path),
                 "--no-native-kernels"]) == 0
    without = json.loads(next(tmp_path.rglob("*random_seed__1*.json")).read_text())
    assert without["deepobs_torch"]["native_kernels"] == "off"
    for key in ("train_losses", "test_losses"):
        assert without[key][0] == pytest.approx(record[key][0], rel=1e-5)
        assert without[key] == pytest.approx(record[key], rel=1e-2)
    assert without["test_accuracies"] == pytest.approx(record["test_accuracies"], abs=0.1)  # a flipped prediction
