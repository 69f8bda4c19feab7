"""Three kinds of ASCII art, rendered at test time from installed packages (no third-party art is stored here).

    from art_kinds import KINDS, write_folder
    pieces = KINDS["banners"]()            # normalized pieces, the same on every call
    source = write_folder(pieces, tmp_path / "banners")   # a folder of .txt files, as a user's data.source

- cats: catsart's cats, every distinct piece of `DataConfig()` (harness.data.distinct_pieces): varied drawings
  by many hands, few of them alike.
- banners: FIGlet banners (pyfiglet) of many words in each of a few fonts: a house style, where every banner
  of a font shares its letters' strokes with the others. Before groups were capped, this set chained into one
  group and the split held out all but one banner.
- formulas: 2-D formulas typeset in ASCII by sympy's pretty printer (integral signs, fraction bars, roots, sums,
  products, limits, matrices) from seeded random expressions: one typesetter's style over many subjects.

Each kind keeps pieces of printable ASCII, 3-12 lines and at most 80 characters wide, normalized as
harness.data reads them, and distinct.
"""
from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path

from harness.config import DataConfig
from harness.data import distinct_pieces, normalize

BANNER_FONTS = ("standard", "slant", "small", "big", "doom")
BANNER_WORDS = ("cat", "dog", "owl", "fox", "yak", "elk", "bee", "ant", "emu", "cow", "pig", "hen", "ram", "eel",
                "bat", "rat", "ape", "moon", "star", "sun", "rain", "snow", "wind", "tree", "leaf", "rock", "sand",
                "lake", "hill", "road", "ship", "bird", "fish", "frog", "wolf", "bear", "lion")
N_FORMULAS = 150


def _fits(text: str) -> bool:
    lines = text.split("\n")
    return (text.isascii() and all(c.isprintable() for c in text.replace("\n", "")) and 3 <= len(lines) <= 12
            and max(map(len, lines)) <= 80)


def cats() -> list[str]:
    """Every distinct catsart piece of the default data settings (215 with catsart 7.0)."""
    return [p.text for p in distinct_pieces(DataConfig())[0]]


def banners() -> list[str]:
    """Each word of BANNER_WORDS in each of BANNER_FONTS, capitalized (185 banners with pyfiglet 1.0)."""
    import pyfiglet

    out = []
    for font in BANNER_FONTS:
        figlet = pyfiglet.Figlet(font=font, width=200)
        for word in BANNER_WORDS:
            text = normalize(figlet.renderText(word.capitalize()))
            if _fits(text) and text not in out:
                out.append(text)
    return out


def _term(rng: random.Random, v, nested: bool = False):
    """A random one-variable expression: a power, a product, a sine or cosine, an exponential, or (at the top)
    a root, a quotient or a logarithm of a simpler one."""
    import sympy as sp

    a = rng.randint(1, 9)
    kind = rng.randrange(4 if nested else 7)
    if kind == 0:
        return v ** rng.randint(2, 5) + a
    if kind == 1:
        return a * v ** rng.randint(1, 3) - rng.randint(1, 9)
    if kind == 2:
        return sp.sin(a * v) if rng.random() < 0.5 else sp.cos(v + a)
    if kind == 3:
        return sp.exp(rng.choice([-1, 1, 2, 3]) * v)
    if kind == 4:
        return sp.sqrt(_term(rng, v, True))
    if kind == 5:
        return _term(rng, v, True) / _term(rng, v, True)
    return sp.log(_term(rng, v, True))


def _formula(rng: random.Random):
    """An unevaluated integral, sum, product, limit, derivative, matrix or sum of quotients."""
    import sympy as sp

    v = rng.choice(sp.symbols("x y z t"))
    n, k = sp.symbols("n k")
    kind = rng.randrange(8)
    if kind == 0:
        return sp.Integral(_term(rng, v), (v, rng.randint(0, 3), rng.choice([sp.oo, rng.randint(4, 9)])))
    if kind == 1:
        return sp.Integral(_term(rng, v), v)
    if kind == 2:
        body = _term(rng, n) if rng.random() < 0.7 else rng.randint(1, 9) / n ** rng.randint(2, 4)
        return sp.Sum(body, (n, rng.randint(0, 2), sp.oo))
    if kind == 3:
        return sp.Product(_term(rng, k), (k, 1, rng.randint(3, 20)))
    if kind == 4:
        return sp.Limit(_term(rng, v), v, rng.choice([0, sp.oo, rng.randint(1, 5)]))
    if kind == 5:
        cell = lambda i, j: rng.choice([rng.randint(-9, 9), v ** rng.randint(1, 3), rng.randint(1, 9) * v])  # noqa: E731
        return sp.Matrix(rng.choice([2, 3]), rng.choice([2, 3]), cell)
    if kind == 6:
        return sp.Derivative(_term(rng, v), v, rng.randint(1, 3))
    return _term(rng, v) / _term(rng, v) + _term(rng, v, True)


def formulas(n: int = N_FORMULAS, seed: int = 0) -> list[str]:
    """n distinct formulas typeset by sympy.pretty in ASCII, from expressions drawn with random.Random(seed)."""
    import sympy as sp

    rng, out, seen = random.Random(seed), [], set()
    while len(out) < n:
        text = normalize(sp.pretty(_formula(rng), use_unicode=False, wrap_line=False))
        if _fits(text) and text not in seen:
            seen.add(text)
            out.append(text)
    return out


KINDS: dict[str, Callable[[], list[str]]] = {"cats": cats, "banners": banners, "formulas": formulas}


def write_folder(pieces: list[str], folder: Path) -> Path:
    """Write one .txt file per piece (000.txt, 001.txt, ...) into folder, as a user's data.source; returns folder."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    width = max(3, len(str(len(pieces) - 1)))
    for i, text in enumerate(pieces):
        (folder / f"{i:0{width}d}.txt").write_text(text + "\n", encoding="utf-8")
    return folder
