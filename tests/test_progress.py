"""recstack.progress: library code logs, the CLI renders; bars are time-based and become plain
lines off a terminal (issue 23)."""

from __future__ import annotations

import logging

import pytest

from recstack import progress

# every test starts as a library user does: no bars, no recstack handler
pytestmark = pytest.mark.usefixtures("library_logging")


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_plain_rendering_is_one_line_per_record_on_stderr_never_stdout(capsys):
    restore = progress.setup_logging(0, rich=False)
    try:
        assert progress.progress_mode() == "lines"  # no terminal: bars become lines
        log = logging.getLogger("recstack.somewhere")
        log.info("epoch %d done", 3)
        log.warning("[brackets] stay as written")
        log.debug("not shown at verbosity 0")
    finally:
        restore()
    out, err = capsys.readouterr()
    assert out == ""
    lines = err.splitlines()
    assert len(lines) == 2, err
    assert lines[0].endswith(" epoch 3 done") and lines[0][2] == ":"  # HH:MM:SS first
    assert lines[1].endswith(" warning: [brackets] stay as written")
    assert "\x1b" not in err  # no colour codes, no cursor movement
    # undone: no handler left behind, bars off again
    assert progress.progress_mode() == "off"
    assert not [h for h in logging.getLogger("recstack").handlers if isinstance(h, progress.PlainLogHandler)]


def test_quiet_keeps_warnings_only_and_turns_progress_off(capsys):
    restore = progress.setup_logging(-1, rich=False)
    try:
        assert progress.progress_mode() == "off"
        logging.getLogger("recstack.x").info("chatter")
        logging.getLogger("recstack.x").warning("kept")
    finally:
        restore()
    err = capsys.readouterr().err
    assert "chatter" not in err and "warning: kept" in err


def test_rich_rendering_prefixes_warnings_and_reads_no_markup():
    restore = progress.setup_logging(0, rich=True)
    try:
        assert progress.progress_mode() == "bar"
        with progress.console.capture() as cap:
            logging.getLogger("recstack.x").warning("[red]not markup[/red]")
            logging.getLogger("recstack.x").info("plain")
    finally:
        restore()
    text = cap.get()
    assert "warning: [red]not markup[/red]" in text and "plain" in text


def test_lines_mode_logs_a_bar_every_ten_seconds(monkeypatch, caplog, capsys):
    clock = FakeClock()
    monkeypatch.setattr(progress, "_clock", clock)
    progress.set_progress("lines")
    caplog.set_level(logging.INFO, logger="recstack")
    with progress.bar("scoring", 100) as p:
        for _ in range(100):
            clock.t += 0.5  # 50 s in all
            p.advance(0)
    lines = [r.getMessage() for r in caplog.records if r.name == "recstack.progress"]
    assert len(lines) == 5, lines  # at 10, 20, 30, 40, 50 s
    assert lines[0] == "scoring: 20/100 (20%) after 10 s"
    assert capsys.readouterr() == ("", "")  # records only: rendering is the application's


def test_due_moves_a_bar_at_least_once_a_second(monkeypatch):
    clock = FakeClock()
    monkeypatch.setattr(progress, "_clock", clock)
    assert not progress.ProgressBar("x", 10, mode="off").due()  # nothing shown: never worth a sync
    p = progress.ProgressBar("x", 10, mode="lines")
    with p:
        clock.t += 0.4
        assert not p.due()
        clock.t += 0.7
        assert p.due()
        p.update(0, completed=3)
        assert not p.due()


def test_bar_mode_is_a_rich_bar_redrawn_by_time():
    progress.set_progress("bar")
    with progress.console.capture(), progress.bar("epoch 1/1", 4) as p:
        assert p._rich is not None and p._rich.live.auto_refresh  # redrawn by time, not by updates
        assert p._rich.live.refresh_per_second >= 1 and p._rich.live.is_started
        p.advance(0, 4)
    assert not p._rich.live.is_started


def test_step_logs_its_duration_and_never_prints(caplog, capsys):
    caplog.set_level(logging.INFO, logger="recstack")
    with progress.step("loading") as s:
        s["done"] = "loaded 3 rows"
    assert [r.getMessage().split(" (")[0] for r in caplog.records] == ["loaded 3 rows"]
    assert capsys.readouterr() == ("", "")


def test_unknown_mode_is_refused():
    with pytest.raises(ValueError, match="progress mode"):
        progress.set_progress("fancy")
