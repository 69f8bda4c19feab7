"""Degenerate repetition: lines written again right after themselves, and lines that are one short unit over and over.

    from harness.judge import repetition
    repetition.repeated_line_share(" _/|\\n(   )\\n(   )\\n(   )")    # 2 of 3 line pairs repeat: 0.667
    repetition.repeated_unit_share("_/\\\\_/\\\\_/\\\\_/\\\\_/\\\\_/\\\\")    # one unit, 6 times: 1.0

The best-known failure of sampled text is the loop: a small model at a low temperature writes one line, or one
block of lines, again and again, or one short unit across a line until it runs out of tokens. Human ASCII art rarely
does the first: of catsart's 215 distinct pieces 5.6% repeat any line right after itself, at most a quarter of their
lines (a fence, a pair of legs); FIGlet banners and sympy's typeset formulas never do (tests/art_kinds.py,
2026-12-07). The default run's `learn` samples of judge version 2 did in 14 of 16. Humans do fill lines with units
(borders, fences): a cat's line may hold one unit 50 times; so both measures are judged against the human reference
of the same kind (the limits in harness.judge.typicality.reference), never against a fixed bound.

Why the character model cannot see loops (harness.judge.typicality): it predicts each character from the three
before it and the three above it, fitted on art without loops, so a repeated line is not *more* predictable to it.
Measured on loops made from held-out pieces (a line stuttered, a head that ends in a loop, a fragment looped): their
cross-entropy is higher than the human pieces', not lower (a sample below a human piece in 0-44% of pairs on cats,
banners and formulas), so a lower band on typicality would never fire. Repetition is therefore measured directly.

Pure Python, no torch; texts are normalized (harness.data.normalize) by the caller.
"""
from __future__ import annotations

import re

# A unit of 1-4 characters standing at least this many times in a row fills a line ("_/\_/\_/\_/", "o  o  o  o").
# Four: three "/\_/\" ears side by side are art; catsart's median piece holds a run of 4, its 99th percentile 33.
MIN_UNIT_REPEATS = 4
_UNIT_RUN = re.compile(rf"(.{{1,4}}?)\1{{{MIN_UNIT_REPEATS - 1},}}")


def _keys(text: str) -> list[str]:
    """The non-blank lines without their whitespace: equal for lines equal but for spacing (a drifting loop)."""
    return ["".join(line.split()) for line in text.split("\n") if line.strip()]


def repeated_line_share(text: str) -> float:
    """Share of a normalized text's non-blank lines after the first that repeat the block right above them.

    A line counts when it belongs to the second copy of a block of lines (any length) that stands twice in a row,
    lines compared without their whitespace: "A A A" counts 2 of 2, "A B A B" 2 of 3. 0.0 below two lines.
    """
    keys = _keys(text)
    n = len(keys)
    if n < 2:
        return 0.0
    where: dict[str, list[int]] = {}
    for i, key in enumerate(keys):
        where.setdefault(key, []).append(i)
    # Only the distances at which some line meets itself again can be a block's length: few in art, where most
    # lines differ, so scoring stays fast.
    periods = sorted({j - i for at in where.values() if len(at) > 1 for i in at for j in at if 0 < j - i <= n // 2})
    repeated = [False] * n
    for k in periods:
        run = 0  # lines i-run+1 .. i each equal the line k below them
        for i in range(n - k + 1):
            if i < n - k and keys[i] == keys[i + k]:
                run += 1
                continue
            if run >= k:  # the block starting at i-run holds twice in a row, and each shift of it up to i-1
                repeated[i - run + k:i + k] = [True] * run
            run = 0
    return sum(repeated) / (n - 1)


def repeated_unit_share(text: str) -> float:
    """Share of a normalized text's visible characters (lines stripped) inside a run of one unit of 1-4 characters,
    not all spaces, standing MIN_UNIT_REPEATS or more times in a row. 0.0 for a text of spaces only."""
    covered = total = 0
    for line in text.split("\n"):
        line = line.strip()
        total += len(line)
        covered += sum(m.end() - m.start() for m in _UNIT_RUN.finditer(line) if m.group(1).strip())
    return covered / total if total else 0.0
