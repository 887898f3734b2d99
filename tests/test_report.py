"""Report rendering (Markdown, HTML) from fabricated results: what a reader of a failing audit sees."""
from parity.audit import AuditRun
from parity.report import KNOWN_DEVIATIONS, to_json, to_markdown
from parity.report_html import to_html
from parity.results import CheckResult, Comparison


def _run(port: str = "deepobs") -> AuditRun:
    forward = CheckResult("cifar10_3c3d", "forward", "float64", [
        Comparison("conv2d", 1e-15, 1e-16, 1e-10, True),
        Comparison("max_pooling2d", 0.2, 0.3, 1e-10, False),
        Comparison("conv2d_1", 0.4, 0.5, 1e-10, False),
    ])
    loss = CheckResult("cifar10_3c3d", "loss", "float64", [
        Comparison("data_loss", 0.0, 0.0, 1e-10, True),
        Comparison("regularizer", 0.1, 0.02, 1e-10, False),
    ])
    run = AuditRun(port, ["float64"], ["cifar10_3c3d"], 0, [forward, loss])
    return run


def test_markdown_lists_every_failing_row_and_the_regularizer():
    markdown = to_markdown(_run(), {})
    failures = markdown.split("## Failures", 1)[1].split("##", 1)[0]
    assert "first divergence at `max_pooling2d`" in failures and "`conv2d_1`" in failures
    assert "regularizer" in failures


def test_sentences_about_this_port_only_when_it_is_audited():
    assert KNOWN_DEVIATIONS[0] in to_markdown(_run("deepobs"), {})
    foreign = _run("myport")
    assert KNOWN_DEVIATIONS[0] not in to_markdown(foreign, {}) and KNOWN_DEVIATIONS[0] not in to_json(foreign, {})
    assert KNOWN_DEVIATIONS[0] not in to_html(foreign, {}, [])


def test_html_report_is_one_offline_page_with_a_layer_chart():
    page = to_html(_run(), {"torch": "2.14.1"}, [])
    assert page.startswith("<!DOCTYPE html>") and page.count("<svg") == 1
    assert "src=" not in page and "<script" not in page  # nothing to fetch, nothing to run
    assert "max_pooling2d (float64 forward): rel 3.00e-01, tolerance 1.0e-10 FAIL" in page
    assert "float64 tolerance 1.0e-10" in page and "regularizer" in page


def test_failing_rows_grouped_not_judged_steps_and_the_isolated_section():
    from parity.report import summary
    from parity.results import Hint

    run = _run("myport")
    gradients = CheckResult("cifar10_3c3d", "gradients", "float64", [Comparison("dense/bias", 0.1, 0.2, 1e-10, False)])
    step = CheckResult("cifar10_3c3d", "step/sgd", "float64", [
        Comparison("step1 dense/bias (update)", 0.1, 0.2, 1e-10, True, "error within the propagated gradient difference"),
        Comparison("step2 dense/bias (update)", 0.1, 0.2, 1e-10, True, "error within the propagated gradient difference")],
        not_judged="gradients differ")
    isolated = CheckResult("cifar10_3c3d", "isolated/forward", "float64",
                           [Comparison("conv2d", 0.0, 0.0, 1e-10, True), Comparison("max_pooling2d", 0.2, 0.3, 1e-10, False)],
                           diagnostic=True, hints=[Hint("max_pooling2d", "asymmetric 'SAME' padding", "shift test")])
    run.results += [gradients, step, isolated]
    markdown = to_markdown(run, {})
    failures = markdown.split("## Failures", 1)[1].split("\n## ", 1)[0]
    assert "  - layers and outputs (2 failing):" in failures and "  - loss terms (1 failing):" in failures
    assert "`regularizer`" in failures.split("loss terms", 1)[1]
    table = markdown.split("## Checks", 1)[1]
    [step_row] = [line for line in table.splitlines() if "| step/sgd |" in line]
    assert "| not judged (gradients differ) |" in step_row and "0.0x" not in step_row and "pass" not in step_row
    assert "isolated/forward" not in table  # diagnostics explain; they are not checks
    isolated_section = markdown.split("## Every deviation", 1)[1].split("\n## ", 1)[0]
    assert "`max_pooling2d`" in isolated_section and "**hint** at `max_pooling2d`" in isolated_section
    assert run.passed is False and "HINT cifar10_3c3d float64 max_pooling2d" in "\n".join(summary(run))
    only_diagnostic = AuditRun("myport", ["float64"], ["cifar10_3c3d"], 0, [isolated])
    assert only_diagnostic.passed  # a diagnostic row never fails an audit
