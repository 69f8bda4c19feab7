"""Child processes with a log: every command's output kept whole in a file, each line also handed back live."""
from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path


def run_logged(cmd: list[str], log_path: Path, on_line: Callable[[str], None] | None = None,
               env: dict[str, str] | None = None) -> int:
    """Run cmd to completion; stdout and stderr go to log_path and, line by line, to on_line. Returns the exit code.

    On KeyboardInterrupt the child gets SIGINT too (and is killed if it has not stopped within 30 s),
    then the interrupt propagates, so a run stops cleanly and keeps what finished.
    """
    log_path = Path(log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    full_env = dict(os.environ, PYTHONUNBUFFERED="1", **(env or {}))
    with open(log_path, "w", encoding="utf-8") as log:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=full_env, text=True,
                                errors="replace", bufsize=1)
        assert proc.stdout is not None
        try:
            for line in proc.stdout:
                log.write(line)
                log.flush()
                if on_line:
                    on_line(line.rstrip("\n"))
            return proc.wait()
        except KeyboardInterrupt:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
            raise


def last_error(log_path: Path, lines: int = 15) -> str:
    """The child's one-sentence error if it printed one, else the last lines of its log."""
    text = Path(log_path).read_text(encoding="utf-8", errors="replace").splitlines() if Path(log_path).is_file() else []
    errors = [ln for ln in text if ln.startswith("error: ")]
    return errors[-1] if errors else "\n".join(text[-lines:])
