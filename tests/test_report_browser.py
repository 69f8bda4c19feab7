"""Render a report in real headless Chromium: no console errors, every image loads, art shows as exact text,
and a 1280x800 screen shows the verdicts and the loss curves first, with no table wider than the page.

Drives Chromium over the DevTools protocol on a pipe (--remote-debugging-pipe: NUL-separated
JSON on fds 3 and 4), so it needs no websocket package and no free port. Skips without
/usr/bin/chromium (Debian: apt-get install chromium). Takes a few seconds.
"""
from __future__ import annotations

import base64
import fcntl
import json
import os
import select
import shlex
import subprocess
import time
from pathlib import Path

import pytest
from run_fixture import CAT, EVIL_ART, FENCE_ART, make_run
from sweep_fixture import make_sweep_run

from harness.report.run import write_report

CHROMIUM = Path("/usr/bin/chromium")
pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="needs headless Chromium at /usr/bin/chromium "
                                                               "(Debian: apt-get install chromium)")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-extensions", "--remote-debugging-pipe"]


def _above_4(fd: int) -> int:
    high = fcntl.fcntl(fd, fcntl.F_DUPFD, 10)
    os.close(fd)
    return high


class Browser:
    """A minimal DevTools-protocol client over Chromium's debugging pipe."""

    def __init__(self, profile: Path, timeout: float = 30.0):
        self.timeout = timeout
        to_chrome_r, self._to_chrome = os.pipe()
        self._from_chrome, from_chrome_w = os.pipe()
        # Chromium's ends move above 4: a pipe that got fd 3 or 4 (stdin closed, few fds open) would be
        # closed by the redirections below right after being duplicated onto itself.
        to_chrome_r, from_chrome_w = (_above_4(fd) for fd in (to_chrome_r, from_chrome_w))
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


WIDTHS = """(() => ({
  pageWidth: document.scrollingElement.scrollWidth,
  wideTables: Array.from(document.querySelectorAll('.scroll')).filter(d => d.scrollWidth > d.clientWidth + 1)
    .map(d => d.querySelector('th') ? d.querySelector('th').textContent : '?'),
  tables: document.querySelectorAll('table').length,
}))()"""
# Measured in the same page load as the screenshot: where the first screen ends, what it holds, what overflows.
FIRST_SCREEN = """(() => {
  const story = document.getElementById('story');
  const box = el => el.getBoundingClientRect();
  return {
    bottom: box(story).bottom,
    sentences: Array.from(story.querySelectorAll('ul.sentences li')).map(li => li.textContent),
    images: Array.from(story.querySelectorAll('img')).map(i => ({bottom: box(i).bottom, width: i.naturalWidth})),
    cards: Array.from(story.querySelectorAll('.card'))
      .map(c => ({bottom: box(c).bottom, art: c.querySelectorAll('pre').length})),
    pageWidth: document.scrollingElement.scrollWidth,
    wideTables: Array.from(document.querySelectorAll('.scroll')).filter(d => d.scrollWidth > d.clientWidth + 1)
      .map(d => d.querySelector('th') ? d.querySelector('th').textContent : '?'),
    wideArt: Array.from(story.querySelectorAll('.card')).filter(c => c.scrollWidth > c.clientWidth + 1).length,
  };
})()"""
WIDTH, HEIGHT = 1280, 800


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


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def render(index: Path, profile: Path, screenshot: Path, *expressions: str) -> tuple[list, list[dict]]:
    """Load a page at 1280x800 and evaluate expressions in that one load: (their values, browser events).

    Saves a screenshot of the viewport: what a reader sees before scrolling.
    """
    browser = Browser(profile)
    try:
        target = browser.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = browser.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Log"):
            browser.send(f"{domain}.enable", session=session)
        browser.send("Emulation.setDeviceMetricsOverride", {"width": WIDTH, "height": HEIGHT, "deviceScaleFactor": 1,
                                                            "mobile": False}, session=session)
        browser.send("Page.navigate", {"url": index.resolve().as_uri()}, session=session)
        browser.wait_for("Page.loadEventFired")
        values = [browser.send("Runtime.evaluate", {"expression": e, "returnByValue": True},
                               session=session)["result"]["value"] for e in expressions]
        shot = browser.send("Page.captureScreenshot", {"format": "png"}, session=session)
        screenshot.write_bytes(base64.b64decode(shot["data"]))
    finally:
        browser.close()
    return values, browser.events


def test_report_renders_in_chromium(tmp_path: Path) -> None:
    run_dir = tmp_path / "runs" / "run-a"
    make_run(run_dir)
    index = write_report(run_dir)
    (state,), events = render(index, tmp_path / "profile", tmp_path / "first-screen.png", PAGE_STATE)
    assert _errors(events) == []
    assert state["title"] == "asciitune run run-a"
    assert len(state["images"]) >= 4
    assert all(i["complete"] and i["width"] > 0 for i in state["images"]), state["images"]
    assert state["scripts"] == 0 and state["bold"] == 0  # the art's tags stayed text
    # Leading newline, leading spaces, <script>, & and &amp; exactly, each beside its nearest training piece.
    at = state["art"].index(EVIL_ART)
    assert state["art"][at + 1] == CAT + "\n& <i>"
    assert FENCE_ART in state["art"]


def test_first_screen_tells_the_story(tmp_path: Path) -> None:
    run_dir = tmp_path / "runs" / "run-a"
    make_run(run_dir)
    shot = tmp_path / "first-screen.png"
    (first,), events = render(write_report(run_dir), tmp_path / "profile", shot, FIRST_SCREEN)
    assert _errors(events) == []
    assert _png_size(shot.read_bytes()) == (WIDTH, HEIGHT)
    # The screenshot is the viewport: what lies above HEIGHT is what a reader sees before scrolling.
    assert first["bottom"] <= HEIGHT, first
    assert [s.split(" ")[0] for s in first["sentences"]] == ["r8", "r32", "r64"]
    r8, r32, r64 = first["sentences"]
    assert r8.startswith("r8 is learning") and "minimum 1.5 at step 40 of 50" in r8 and "train loss fell 52%" in r8
    assert "88% are valid art" in r8 and "against 0.6 for unseen human pieces" in r8
    assert r32.startswith("r32 is memorizing") and "ended at 2.5 (+47%)" in r32
    assert r64.startswith("r64 failed: CUDA out of memory <at> step 3 & more")
    assert first["images"] and all(i["width"] > 0 and i["bottom"] <= HEIGHT for i in first["images"]), first
    assert [c["art"] for c in first["cards"]] == [4, 4, 0]  # best and worst sample, each with its nearest piece
    assert first["pageWidth"] <= WIDTH and first["wideTables"] == [] and first["wideArt"] == 0, first


# A sweep's page: the answer where the story starts, the map and the outcome plots loaded, nothing wider than the page.
SWEEP_PAGE = """(() => {
  const answer = document.querySelector('#story .answer p');
  const sweep = Array.from(document.images).filter(i => /memorization map|outcomes against/.test(i.alt));
  return {
    answer: answer ? answer.textContent : null,
    answerBottom: answer ? answer.getBoundingClientRect().bottom : null,
    sweepImages: sweep.map(i => ({alt: i.alt, complete: i.complete, width: i.naturalWidth})),
    pageWidth: document.scrollingElement.scrollWidth,
    wideTables: Array.from(document.querySelectorAll('.scroll')).filter(d => d.scrollWidth > d.clientWidth + 1)
      .map(d => d.querySelector('th') ? d.querySelector('th').textContent : '?'),
    scripts: document.scripts.length,
  };
})()"""


def test_sweep_page_answers_on_the_first_screen(tmp_path: Path) -> None:
    run_dir = tmp_path / "runs" / "sweep-a"
    make_sweep_run(run_dir)
    (page,), events = render(write_report(run_dir), tmp_path / "profile", tmp_path / "sweep.png", SWEEP_PAGE)
    assert _errors(events) == []
    assert page["answer"].startswith("Best by the ranking rule: lr 0.001, r 4 (learning, quality 0.446); not "
                                     "distinguishable from lr 0.001, r 8"), page
    assert page["answerBottom"] <= HEIGHT, page
    assert [i["alt"] for i in page["sweepImages"]] == [
        "memorization map: verdict tier, onset step and quality per configuration", "outcomes against lr",
        "outcomes against r"]
    assert all(i["complete"] and i["width"] > 0 for i in page["sweepImages"]), page
    assert page["pageWidth"] <= WIDTH and page["wideTables"] == [] and page["scripts"] == 0, page


def test_cross_run_leaderboard_fits_the_page(tmp_path: Path) -> None:
    from harness.report.runs import scan, write_leaderboard

    for name, shift in (("run-a", 0.0), ("run-b", 0.1)):
        make_run(tmp_path / "reports" / "runs" / name, run_id=name, novelty_shift=shift)
    index = write_leaderboard(scan(tmp_path / "reports"), tmp_path / "board")
    (widths,), events = render(index, tmp_path / "profile", tmp_path / "leaderboard.png", WIDTHS)
    assert _errors(events) == []
    assert widths["tables"] == 2 and widths["pageWidth"] <= WIDTH and widths["wideTables"] == [], widths
