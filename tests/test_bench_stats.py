"""The benchmarks' statistics and table (benchmarks/stats.py, benchmarks/table.py): no timing asserted."""
from __future__ import annotations

import json
import mmap

import numpy as np
import pytest

from benchmarks import table
from benchmarks.stats import (bootstrap_median, geometric_mean, interleaved_order, paired_ratios, plan,
                              settle, time_interleaved)


def test_rounds_alternate_the_order_so_no_variant_always_goes_first():
    assert interleaved_order(["port", "eager", "reference"], 3) == [
        ["port", "eager", "reference"], ["reference", "eager", "port"], ["port", "eager", "reference"]]


class DriftingMachine:
    """A clock and steps on a machine that slows down linearly with time: step `name` costs
    cost[name] * (1 + drift * now) seconds."""

    def __init__(self, cost: dict[str, float], drift: float):
        self.now, self.cost, self.drift, self.calls = 0.0, cost, drift, []

    def clock(self) -> float:
        return self.now

    def step(self, name: str):
        def run():
            self.calls.append(name)
            self.now += self.cost[name] * (1.0 + self.drift * self.now)
        return run


def test_interleaving_cancels_drift_that_sequential_timing_reports_as_a_speed_difference():
    cost = {"port": 1.0, "reference": 2.0}  # the port is exactly twice as fast
    machine = DriftingMachine(cost, drift=0.05)
    seconds = time_interleaved({name: machine.step(name) for name in cost}, rounds=10, iterations=3,
                               clock=machine.clock)
    assert machine.calls[:12] == ["port"] * 3 + ["reference"] * 6 + ["port"] * 3  # A B, B A
    assert all(len(values) == 10 for values in seconds.values())
    median, low, high = bootstrap_median(paired_ratios(seconds["port"], seconds["reference"]))
    assert low <= median <= high and median == pytest.approx(2.0, rel=0.05)
    # The same drift timed all-port-then-all-reference: the later reference looks slower than it is.
    sequential = DriftingMachine(cost, drift=0.05)
    port = time_interleaved({"port": sequential.step("port")}, 10, 3, clock=sequential.clock)["port"]
    reference = time_interleaved({"reference": sequential.step("reference")}, 10, 3, clock=sequential.clock)
    assert np.median(paired_ratios(port, reference["reference"])) > 2.5


def test_per_round_seconds_are_per_call():
    machine = DriftingMachine({"a": 0.5}, drift=0.0)
    assert time_interleaved({"a": machine.step("a")}, rounds=2, iterations=4, clock=machine.clock) == {"a": [0.5, 0.5]}
    assert len(machine.calls) == 8


class SpinningMachine(DriftingMachine):
    """A step right after another step's costs `penalty` more seconds (the other's threads still spin)."""

    def __init__(self, cost: dict[str, float], penalty: float):
        super().__init__(cost, drift=0.0)
        self.penalty = penalty

    def step(self, name: str):
        def run():
            if self.calls and self.calls[-1] != name:
                self.now += self.penalty
            self.calls.append(name)
            self.now += self.cost[name]
        return run


def test_a_lead_in_call_keeps_the_other_steps_spinning_threads_out_of_the_timed_calls():
    cost = {"port": 1.0, "reference": 1.0}
    for lead_in, iterations, expected_round_seconds in ((0, 1, 1.5), (0, 5, 1.1), (1, 1, 1.0)):
        machine = SpinningMachine(cost, penalty=0.5)
        seconds = time_interleaved({name: machine.step(name) for name in cost}, rounds=4, iterations=iterations,
                                   lead_in=lead_in, clock=machine.clock)
        # Alternating A B, B A: every round but the ones that follow the same step pays the penalty.
        assert max(max(values) for values in seconds.values()) == pytest.approx(expected_round_seconds)
    assert machine.calls[:4] == ["port", "port", "reference", "reference"]


def test_paired_ratio_is_the_speed_of_the_numerator():
    assert paired_ratios([1.0, 2.0], [2.0, 3.0]).tolist() == [2.0, 1.5]
    with pytest.raises(ValueError):
        paired_ratios([1.0], [1.0, 2.0])


def test_bootstrap_interval_brackets_the_median_and_narrows_with_rounds():
    assert bootstrap_median([1.3] * 7) == (1.3, 1.3, 1.3)
    rng = np.random.default_rng(1)
    few, many = (bootstrap_median(1.2 + 0.1 * rng.standard_normal(n)) for n in (7, 200))
    for median, low, high in (few, many):
        assert low <= median <= high
    assert many[2] - many[1] < few[2] - few[1] and many[1] < 1.2 < many[2]
    with pytest.raises(ValueError):
        bootstrap_median([])


def test_geometric_mean():
    assert geometric_mean([0.5, 2.0, 1.0]) == pytest.approx(1.0)


def row(problem: str, phase: str, port_ratio: float, eager_ratio: float) -> dict:
    return {"problem": problem, "phase": phase, "batch_size": 128, "port_compiled": phase == "eval",
            "examples_per_second": {"port": 2000.0, "eager": 1500.0, "reference": 1000.0},
            "port_ratio": [port_ratio, port_ratio - 0.1, port_ratio + 0.1],
            "eager_ratio": [eager_ratio, eager_ratio - 0.1, eager_ratio + 0.1],
            "compile_seconds": 12.0, "break_even_steps": 24.0 if phase == "eval" else None,
            "rounds": 5, "iterations": 1, "load_before": 0.1, "load_after": 0.2, "foreign_cores": 0.3}


def test_table_names_the_machine_and_every_row_below_one(tmp_path, capsys):
    run = {"datetime": "2026-11-30T00:00:00Z", "machine_kind": "Some CPU, avx512f, 2 cores",
           "cpu": {"flags": ["avx2", "avx512f"]}, "threads": {"torch": {"intra": 2, "inter": 2}},
           "libraries": {"torch": "2", "torch_build": ["oneDNN v3"], "mkldnn_enabled": True, "tensorflow": "2",
                         "tf_onednn": "default", "tf_onednn_build": "oneDNN v3.7.3, threadpool runtime"},
           "results": [row("cifar10_3c3d", "eval", 2.0, 1.5), row("cifar10_3c3d", "train", 0.5, 0.5)]}
    path = tmp_path / "run.json"
    path.write_text(json.dumps(run))
    assert table.main([str(path)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("### Some CPU, avx512f, 2 cores")
    assert "tensorflow 2 (oneDNN v3.7.3, threadpool runtime; oneDNN opts: default)" in out
    assert "| cifar10_3c3d | eval | 128 | 2,000 | 1,500 | 1,000 | 2.00 [1.90, 2.10] | 1.50 [1.40, 1.60] | 12 | 24 |" in out
    assert "| - | - | 5x1 | 0.1-0.2 | 0.30 (contended) |" in out  # train: eager, no compile
    assert "geometric mean 1.00 (eager 0.87); min 0.50; below 1.0: cifar10_3c3d train 0.50" in out
    assert "where port and eager run the same step, their ratios differ by 0% (median), at most 0%" in out


def test_the_noise_floor_is_the_spread_of_identical_columns():
    rows = [row("a", "train", 1.10, 1.00), row("b", "train", 0.90, 1.00), row("c", "train", 1.00, 1.00),
            row("d", "eval", 2.00, 1.00)]  # d: compiled, its columns differ by design
    assert table.noise_floor(rows) == ["noise floor: on the 3 rows where port and eager run the same step, "
                                       "their ratios differ by 10% (median), at most 10% (a train)"]
    assert table.noise_floor([row("d", "eval", 2.00, 1.00)]) == []


def test_table_of_a_missing_file_is_one_line(tmp_path, capsys):
    assert table.main([str(tmp_path / "none.json")]) == 1
    assert capsys.readouterr().err.count("\n") == 1


@pytest.mark.parametrize("seconds_per_call", [80e-6, 0.004, 0.028, 0.19, 0.5])
def test_the_plan_times_the_target_when_the_round_cap_binds(seconds_per_call):
    rounds, calls = plan(seconds_per_call, target_seconds=4.0, min_rounds=5, max_rounds=21)
    assert 5 <= rounds <= 21
    assert 4.0 <= rounds * calls * seconds_per_call < 4.0 + 2 * calls * seconds_per_call + 0.02
    assert calls * seconds_per_call >= 0.02  # no round shorter than min_round_seconds


def test_the_plan_keeps_the_fewest_rounds_for_slow_steps():
    assert plan(2.0, target_seconds=4.0, min_rounds=5, max_rounds=21) == (5, 1)  # 10 s: the interval needs 5
    assert plan(0.001, target_seconds=4.0, min_rounds=5, max_rounds=21) == (21, 191)


def test_the_epoch_benchmark_runs_both_problems_by_default_and_refuses_others():
    from benchmarks import epoch
    assert epoch.parse_arguments([]).problems == ["cifar10_3c3d", "svhn_wrn164"]
    assert epoch.parse_arguments(["svhn_wrn164"]).problems == ["svhn_wrn164"]
    with pytest.raises(SystemExit):
        epoch.parse_arguments(["mnist_mlp"])


CPUINFO = """processor\t: 0
vendor_id\t: AuthenticAMD
cpu family\t: {family}
model\t\t: {model}
model name\t: AMD EPYC
flags\t\t: fpu sse2 avx avx2 fma avx512f avx512_bf16 avx512_vnni
processor\t: 1
"""


def test_two_generations_under_one_model_name_get_two_tables(tmp_path):
    kinds = []
    for family, model in ((25, 17), (26, 2)):
        path = tmp_path / f"cpuinfo{family}"
        path.write_text(CPUINFO.format(family=family, model=model))
        cpu = table.cpu_description(path)
        assert cpu["flags"] == ["avx", "avx2", "avx512_bf16", "avx512_vnni", "avx512f", "fma"]
        kinds.append(table.machine_kind(cpu))
    assert kinds[0].startswith("AMD EPYC (family 25 model 17), avx512_bf16/avx512_vnni, ")
    assert kinds[0] != kinds[1] and "family 26 model 2" in kinds[1]


class FaultingSteps:
    """Steps that fault in pages until each has been called `calls_to_settle` times, counted by a fake counter."""

    def __init__(self, calls_to_settle: dict[str, int], pages: int = 100_000):
        self.count, self.calls, self.calls_to_settle, self.pages = 0, {}, calls_to_settle, pages

    def step(self, name):
        def call():
            self.calls[name] = self.calls.get(name, 0) + 1
            if self.calls[name] <= self.calls_to_settle[name]:
                self.count += self.pages
        return call


def test_settle_runs_rounds_until_no_call_faults_and_reports_each_round():
    steps = FaultingSteps({"port": 1, "reference": 3})
    history = settle({name: steps.step(name) for name in ("port", "reference")}, faults=lambda: steps.count)
    assert history == [{"port": 100_000, "reference": 100_000}, {"port": 0, "reference": 100_000},
                       {"port": 0, "reference": 100_000}, {"port": 0, "reference": 0}]


def test_settle_stops_at_its_round_cap_and_counts_small_faults_as_settled():
    steps = FaultingSteps({"port": 100}, pages=10)
    assert len(settle({"port": steps.step("port")}, faults=lambda: steps.count)) == 1  # 10 pages: settled
    steps = FaultingSteps({"port": 100})
    assert len(settle({"port": steps.step("port")}, max_rounds=4, faults=lambda: steps.count)) == 4


def touch_fresh_pages(size: int = 8 << 20) -> None:
    np.frombuffer(mmap.mmap(-1, size), dtype=np.uint8)[:] = 1  # an anonymous mapping: every page faults in


def test_settle_counts_this_process_faults_by_default():
    faulted = settle({"touch": touch_fresh_pages}, max_rounds=1)[0]["touch"]
    assert faulted > 0  # 2,048 pages of 4 KiB; as few as 4 where transparent huge pages back the mapping
