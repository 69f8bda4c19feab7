"""harness.procs: the one child-with-log mechanism (variants, benchmark workers and arms, sweeps)."""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness import procs


def test_output_goes_to_the_log_and_line_by_line(tmp_path):
    lines = []
    code = procs.run_logged([sys.executable, "-c", "print('a'); print('b'); raise SystemExit(3)"],
                            tmp_path / "logs" / "x.log", lines.append)
    assert code == 3 and lines == ["a", "b"]
    assert (tmp_path / "logs" / "x.log").read_text() == "a\nb\n"


def test_timeout_stops_the_child_and_the_children_it_started(tmp_path):
    # A parent that starts a grandchild, both ignoring nothing: SIGINT to the process group must reach both.
    grandchild = tmp_path / "grandchild.pid"
    code = (f"import subprocess, sys, time; p = subprocess.Popen([sys.executable, '-c', 'import time; "
            f"time.sleep(60)']); open({str(grandchild)!r}, 'w').write(str(p.pid)); print('up', flush=True); "
            "time.sleep(60)")
    t0 = time.monotonic()
    with pytest.raises(subprocess.TimeoutExpired):
        procs.run_logged([sys.executable, "-c", code], tmp_path / "t.log", timeout=3, grace=2)
    assert time.monotonic() - t0 < 20
    assert "up" in (tmp_path / "t.log").read_text()
    status = Path(f"/proc/{grandchild.read_text()}/status")
    for _ in range(50):  # the grandchild is gone too (or a zombie waiting for init to reap it)
        if not status.is_file() or "State:\tZ" in status.read_text():
            break
        time.sleep(0.1)
    assert not status.is_file() or "State:\tZ" in status.read_text()


def test_last_error_prefers_the_one_sentence(tmp_path):
    log = tmp_path / "l.log"
    log.write_text("noise\nerror: Config key 'lora.r' cannot be 0: it must be >= 1.\nmore noise\n")
    assert procs.last_error(log) == "error: Config key 'lora.r' cannot be 0: it must be >= 1."
    log.write_text("\n".join(f"line {i}" for i in range(30)))
    assert procs.last_error(log, lines=2) == "line 28\nline 29"
