"""Copy a finished run into reports/examples/ without third-party art, re-render its report, screenshot it.

    .venv/bin/python scripts/make_example.py reports/runs/<run-id> [reports/examples/default-cpu]
    .venv/bin/python scripts/make_example.py --exports reports/runs/<run-id> learn reports/examples/export-quality

The catsart pieces are not ours to commit: every nearest-training-piece text is replaced by a note, and so is
any sample that is a copy of one (exact, near, or at least as similar as the copy threshold). Adapters,
checkpoints, job files (they hold the dataset), logs and tracking files stay behind. The screenshot is the
report's first screen at 1280x800 in headless Chromium (Debian's package), as tests/test_report_browser.py
renders it.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from harness.report.run import write_report
from harness.results import load, write_jsonl

NOT_STORED = "(not stored in this repository: catsart's art)"
KEEP = ("results.json",)


def sanitize(row: dict) -> dict:
    """A sample row without catsart art: the nearest piece always, the sample itself when it copies one."""
    row = {**row, "nearest_train_text": NOT_STORED}
    if row.get("exact_copy") or row.get("near_copy") or (row.get("similarity") or 0) >= 0.85:
        row["text"] = "(a copy of a training piece: " + NOT_STORED.strip("()") + ")"
    return row


def main(src: str, dest: str = "reports/examples/default-cpu") -> int:
    """Build the example folder from a run folder."""
    src_dir, out = Path(src), Path(dest)
    run = load(src_dir)
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    for name in KEEP:
        shutil.copy2(src_dir / name, out / name)
    for v in run.variants.values():
        if v.samples_file and (src_dir / v.samples_file).is_file():
            rows = [json.loads(line) for line in (src_dir / v.samples_file).read_text().splitlines() if line.strip()]
            write_jsonl(out / v.samples_file, [sanitize(r) for r in rows])
    page = write_report(out)
    chromium = shutil.which("chromium")
    if chromium:
        with tempfile.TemporaryDirectory() as profile:
            subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                            "--disable-background-networking", "--disable-component-update", "--disable-sync",
                            f"--user-data-dir={profile}", "--hide-scrollbars", "--window-size=1280,800",
                            f"--screenshot={(out / 'report-screenshot.png').resolve()}", page.resolve().as_uri()],
                           check=True, capture_output=True, timeout=120)
    print(f"example written to {out} ({page.name}{', report-screenshot.png' if chromium else ''})")
    return 0


def exports(src: str, variant: str, dest: str) -> int:
    """A run's results (with a variant's scored exports) and each format's samples, without catsart art."""
    src_dir, out = Path(src), Path(dest)
    run = load(src_dir)
    out.mkdir(parents=True, exist_ok=True)
    shutil.copy2(src_dir / "results.json", out / "results.json")
    for fmt, record in run.variants[variant].exports.items():
        path = src_dir / record.samples_file  # recorded relative to the run folder
        if path.is_file():
            rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
            write_jsonl(out / f"samples-{fmt.replace(':', '-')}.jsonl", [sanitize(r) for r in rows])
    print(f"export example written to {out}")
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["--exports"]:
        sys.exit(exports(*sys.argv[2:]))
    sys.exit(main(*sys.argv[1:]))
