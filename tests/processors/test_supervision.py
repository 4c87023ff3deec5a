"""The supervisor's policy for the Faust worker: restart after the watchdog's exit, give up on any other."""

from __future__ import annotations

import ast
from pathlib import Path

from processors.supervision import EXIT_STALLED, Supervision, Verdict


def test_a_watchdog_exit_is_restarted_and_counted() -> None:
    supervision = Supervision()
    assert supervision.judge(None) is Verdict.RUNNING
    assert supervision.judge(EXIT_STALLED) is Verdict.RESTART
    assert supervision.judge(None) is Verdict.RUNNING
    assert supervision.judge(EXIT_STALLED) is Verdict.RESTART
    assert (supervision.restarts, supervision.exit_status, supervision.died) == (2, None, False)


def test_any_other_exit_ends_supervision_for_good() -> None:
    for status in (0, 1, -9, -15):
        supervision = Supervision()
        assert supervision.judge(EXIT_STALLED) is Verdict.RESTART
        assert supervision.judge(status) is Verdict.DIED
        assert supervision.judge(None) is Verdict.DIED  # a dead worker is not revived by a later poll
        assert (supervision.restarts, supervision.exit_status, supervision.died) == (1, status, True)


def test_the_status_is_the_one_the_worker_exits_with() -> None:
    # Read, not imported: importing processors.faust_app configures a Faust app in the test process.
    source = (Path(__file__).parents[2] / "processors" / "faust_app.py").read_text()
    values = [
        node.value.value
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Assign)
        and any(isinstance(t, ast.Name) and t.id == "EXIT_STALLED" for t in node.targets)
        and isinstance(node.value, ast.Constant)
    ]
    assert values == [EXIT_STALLED]
