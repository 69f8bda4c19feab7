"""Render a report in real headless Chromium: no console errors, every image loads, art shows as exact text.

Drives Chromium over the DevTools protocol on a pipe (--remote-debugging-pipe: NUL-separated
JSON on fds 3 and 4), so it needs no websocket package and no free port. Skips without
/usr/bin/chromium (Debian: apt-get install chromium). Takes a few seconds.
"""
from __future__ import annotations

import json
import os
import select
import shlex
import subprocess
import time
from pathlib import Path

import pytest
from run_fixture import CAT, EVIL_ART, FENCE_ART, make_run

from harness.report import write_report

CHROMIUM = Path("/usr/bin/chromium")
pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="needs headless Chromium at /usr/bin/chromium "
                                                               "(Debian: apt-get install chromium)")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-extensions", "--remote-debugging-pipe"]


class Browser:
    """A minimal DevTools-protocol client over Chromium's debugging pipe."""

    def __init__(self, profile: Path, timeout: float = 30.0):
        self.timeout = timeout
        to_chrome_r, self._to_chrome = os.pipe()
        self._from_chrome, from_chrome_w = os.pipe()
        # Chromium reads commands on fd 3 and writes replies on fd 4; bash does the fd plumbing.
        cmd = " ".join([shlex.quote(str(CHROMIUM)), *FLAGS, shlex.quote(f"--user-data-dir={profile}"), "about:blank",
                        f"3<&{to_chrome_r}", f"4>&{from_chrome_w}", f"{to_chrome_r}<&-", f"{from_chrome_w}>&-"])
        self.proc = subprocess.Popen(["bash", "-c", "exec " + cmd], pass_fds=(to_chrome_r, from_chrome_w),
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self._buf = b""
        self._id = 0
        self.events: list[dict] = []

    def _read_message(self, deadline: float) -> dict:
        while b"\0" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._from_chrome], [], [], left)[0]:
                raise TimeoutError("Chromium did not answer in time")
            chunk = os.read(self._from_chrome, 1 << 16)
            if not chunk:
                raise RuntimeError("Chromium closed the debugging pipe")
            self._buf += chunk
        raw, _, self._buf = self._buf.partition(b"\0")
        return json.loads(raw)

    def send(self, method: str, params: dict | None = None, session: str | None = None) -> dict:
        """Send a command and return its result, keeping the events that arrive meanwhile."""
        self._id += 1
        msg = {"id": self._id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self._to_chrome, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + self.timeout
        while True:
            reply = self._read_message(deadline)
            if reply.get("id") == self._id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_for(self, method: str) -> dict:
        """Wait until an event with this method arrives (or was already seen)."""
        deadline = time.monotonic() + self.timeout
        while True:
            for event in self.events:
                if event.get("method") == method:
                    return event
            self.events.append(self._read_message(deadline))

    def close(self) -> None:
        """Ask Chromium to quit, then make sure it did."""
        try:
            self.send("Browser.close")
        except (RuntimeError, TimeoutError, OSError):
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._to_chrome)
        os.close(self._from_chrome)


PAGE_STATE = """(() => ({
  images: Array.from(document.images).map(i => ({alt: i.alt, complete: i.complete, width: i.naturalWidth})),
  art: Array.from(document.querySelectorAll('pre.art')).map(p => p.textContent),
  scripts: document.scripts.length,
  bold: document.querySelectorAll('pre b, pre i').length,
  title: document.title,
}))()"""


def _errors(events: list[dict]) -> list[str]:
    out = []
    for e in events:
        method, p = e.get("method"), e.get("params", {})
        if method == "Runtime.exceptionThrown":
            out.append(json.dumps(p.get("exceptionDetails", {}))[:300])
        elif method == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert", "warning"):
            out.append(json.dumps(p.get("args", []))[:300])
        elif method == "Log.entryAdded" and p.get("entry", {}).get("level") in ("error", "warning"):
            out.append(p["entry"].get("text", "")[:300])
        elif method == "Page.javascriptDialogOpening":
            out.append(f"dialog opened: {p.get('message')}")
    return out


def test_report_renders_in_chromium(tmp_path: Path) -> None:
    run_dir = tmp_path / "runs" / "run-a"
    make_run(run_dir)
    index = write_report(run_dir)
    browser = Browser(tmp_path / "profile")
    try:
        target = browser.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = browser.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Log"):
            browser.send(f"{domain}.enable", session=session)
        browser.send("Page.navigate", {"url": index.resolve().as_uri()}, session=session)
        browser.wait_for("Page.loadEventFired")
        state = browser.send("Runtime.evaluate", {"expression": PAGE_STATE, "returnByValue": True},
                             session=session)["result"]["value"]
    finally:
        browser.close()
    assert _errors(browser.events) == []
    assert state["title"] == "asciitune run run-a"
    assert len(state["images"]) >= 4
    assert all(i["complete"] and i["width"] > 0 for i in state["images"]), state["images"]
    assert state["scripts"] == 0 and state["bold"] == 0  # the art's tags stayed text
    assert state["art"][0] == EVIL_ART  # leading newline, leading spaces, <script>, & and &amp; exactly
    assert state["art"][1] == CAT + "\n& <i>"  # its nearest training piece
    assert FENCE_ART in state["art"]
