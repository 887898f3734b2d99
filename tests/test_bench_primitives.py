"""benchmarks/primitives.py's reading of oneDNN's verbose log (lines as torch 2.14 and TF 2.21 write them)."""
from __future__ import annotations

import pytest

from benchmarks.primitives import MARK, STEP_PREFIX, Primitive, format_report, main, parse_verbose

CONV2 = "mb128_ic64oc96_ih14oh12kh3sh1dh0ph0_iw14ow12kw3sw1dw0pw0"
FORWARD = ("onednn_verbose,v1,primitive,exec,cpu,convolution,brg_conv_fwd:avx512_core,forward_training,"
           "src:f32::blocked:acdb::f0 wei:f32:a:blocked:Acdb48a::f0 bia:f32:a:blocked:a::f0 "
           "dst:f32::blocked:acdb::f0,attr-scratchpad:user,alg:convolution_direct," + CONV2 + ",{ms}")
BACKWARD_DATA = ("onednn_verbose,v1,primitive,exec,cpu,convolution,brg_conv_bwd:avx512_core+brg_conv_fwd:avx512_core,"
                 "backward_data,src:f32::blocked:acdb::f0 wei:f32:a:blocked:Bcda64b::f0 bia:undef::undef::: "
                 "dst:f32::blocked:acdb::f0,,alg:convolution_direct," + CONV2 + ",{ms}")
REORDER = ("onednn_verbose,v1,primitive,exec,cpu,reorder,jit:uni,undef,src:f32::blocked:cdba::f0 "
           "dst:f32::blocked:Acdb64a::f0,,,64x3x5x5,{ms}")
INFO = "onednn_verbose,v1,info,oneDNN v3.12.0 (commit 80afa71049cd69a3df32adcccb623b12cd7baa22)"


def log(step_ms: float, timed: list[str], warmup: list[str] = ()) -> list[str]:
    return [INFO, *warmup, MARK, *timed, f"{STEP_PREFIX}{step_ms}"]


def test_only_the_timed_steps_count_per_step_and_per_primitive():
    lines = log(40.0, warmup=[FORWARD.format(ms=99.0)],
                timed=[FORWARD.format(ms=14.0), BACKWARD_DATA.format(ms=18.0), REORDER.format(ms=0.5),
                       FORWARD.format(ms=16.0), BACKWARD_DATA.format(ms=20.0)])
    timings = parse_verbose(lines, steps=2)
    forward = timings[Primitive("convolution", "forward_training", CONV2)]
    assert (forward.implementation, forward.ms, forward.calls) == ("brg_conv_fwd:avx512_core", 15.0, 1)
    assert timings[Primitive("convolution", "backward_data", CONV2)].ms == 19.0
    assert timings[Primitive("reorder", "undef", "64x3x5x5")].ms == 0.25


def test_the_report_sets_each_primitive_beside_the_reference_and_says_what_is_outside():
    port = log(130.0, [FORWARD.format(ms=14.0), BACKWARD_DATA.format(ms=18.0)])
    reference = log(120.0, [FORWARD.format(ms=14.5), BACKWARD_DATA.format(ms=15.0)])
    report = format_report("cifar10_3c3d", "train", port, reference, steps=1, inter_op=1, top=10)
    assert (f"| convolution | backward_data | {CONV2} | brg_conv_bwd:avx512_core+brg_conv_fwd:avx512_core x1 | "
            f"18.00 | brg_conv_bwd:avx512_core+brg_conv_fwd:avx512_core x1 | 15.00 |") in report
    assert report.index("backward_data") < report.index("forward_training")  # the longest first
    assert "| oneDNN primitives | 32.0 ms | 29.5 ms |\n| - convolution | 32.0 ms | 29.5 ms |" in report
    assert "| outside oneDNN | 98.0 ms | 90.5 ms |" in report


def test_a_primitive_only_one_framework_runs_shows_a_dash_for_the_other():
    port = log(10.0, [REORDER.format(ms=1.0)])
    reference = log(10.0, [FORWARD.format(ms=3.0)])
    report = format_report("p", "eval", port, reference, steps=1, inter_op=1, top=10)
    assert "| reorder | undef | 64x3x5x5 | jit:uni x1 | 1.00 | - | - |" in report
    assert "| - convolution | 0.0 ms | 3.0 ms |\n| - reorder | 1.0 ms | 0.0 ms |" in report
    assert f"| convolution | forward_training | {CONV2} | - | - | brg_conv_fwd:avx512_core x1 | 3.00 |" in report


def test_bad_arguments_are_one_line_errors(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["cifar10_3c3d", "train", "--steps", "0"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].endswith("--steps and --reference-inter-op take >= 1, "
                                                                     "--warmup >= 0")


def test_both_children_run_and_report(capsys):
    """End to end on the smallest problem: each framework's child runs its step under ONEDNN_VERBOSE."""
    main(["mnist_logreg", "train", "--steps", "1", "--warmup", "1"])
    report = capsys.readouterr().out
    assert report.startswith("mnist_logreg train: oneDNN primitives per step (reference with 1 inter-op thread(s))")
    step = next(line for line in report.splitlines() if line.startswith("| step (wall) |"))
    port_ms, reference_ms = (float(cell.split()[0]) for cell in step.strip("|").split("|")[1:])
    assert port_ms > 0 and reference_ms > 0
