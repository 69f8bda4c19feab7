"""Child processes with a log: every command's output kept whole in a file, each line also handed back live.

One mechanism for every child the harness starts (a variant's job, a benchmark worker or arm, a sweep):
`start` it, `pump` its output into its log until it ends, and `stop` children as Ctrl-C in a terminal
would (SIGINT, then a kill after a grace period). `run_logged` is the three in one call.
"""
from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path

STOP_GRACE_S = 30  # a child that ignores SIGINT this long is killed


def start(cmd: list[str], env: dict[str, str] | None = None, new_session: bool = False) -> subprocess.Popen:
    """Start cmd with stdout and stderr piped together, unbuffered; new_session puts it in its own process group."""
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace",
                            bufsize=1, start_new_session=new_session,
                            env=dict(os.environ, PYTHONUNBUFFERED="1", **(env or {})))


def pump(proc: subprocess.Popen, log_path: Path, on_line: Callable[[str], None] | None = None) -> int:
    """Copy the child's output into log_path (whole) and to on_line (line by line) until it ends; its exit code."""
    log_path = Path(log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    assert proc.stdout is not None
    with open(log_path, "w", encoding="utf-8") as log:
        for line in proc.stdout:
            log.write(line)
            log.flush()
            if on_line:
                on_line(line.rstrip("\n"))
    return proc.wait()


def stop(procs: Iterable[subprocess.Popen], grace: float | None = None) -> None:
    """SIGINT every child (its whole process group if it has its own), then kill those still running after grace."""
    grace = STOP_GRACE_S if grace is None else grace
    procs = [p for p in procs if p.poll() is None]

    def send(p: subprocess.Popen, sig: int) -> None:
        try:
            if os.getpgid(p.pid) == p.pid:  # started with new_session: stop the children it started too
                os.killpg(p.pid, sig)
            else:
                p.send_signal(sig)
        except ProcessLookupError:
            pass

    for p in procs:
        send(p, signal.SIGINT)
    deadline = time.monotonic() + grace
    for p in procs:
        try:
            p.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            send(p, signal.SIGKILL)
            p.wait()


def run_logged(cmd: list[str], log_path: Path, on_line: Callable[[str], None] | None = None,
               env: dict[str, str] | None = None, timeout: float | None = None, grace: float | None = None) -> int:
    """Run cmd to completion with its output in log_path and to on_line; returns the exit code.

    timeout: stop the child (and its process group) after this many seconds and raise
    subprocess.TimeoutExpired once it has ended. On KeyboardInterrupt the child is stopped too and the
    interrupt propagates, so a run stops cleanly and keeps what finished.
    """
    proc = start(cmd, env, new_session=timeout is not None)
    fired = threading.Event()

    def expire() -> None:
        fired.set()
        stop([proc], grace)

    timer = threading.Timer(timeout, expire) if timeout is not None else None
    if timer:
        timer.start()
    try:
        code = pump(proc, log_path, on_line)
    except KeyboardInterrupt:
        stop([proc], grace)
        raise
    finally:
        if timer:
            timer.cancel()
            timer.join()  # a stop in progress ends before the caller looks at the child's files
    if fired.is_set():
        raise subprocess.TimeoutExpired(cmd, timeout)
    return code


def last_error(log_path: Path, lines: int = 15) -> str:
    """The child's one-sentence error if it printed one, else the last lines of its log."""
    text = Path(log_path).read_text(encoding="utf-8", errors="replace").splitlines() if Path(log_path).is_file() else []
    errors = [ln for ln in text if ln.startswith("error: ")]
    return errors[-1] if errors else "\n".join(text[-lines:])
