"""Datasets of ASCII art: load, normalize, de-duplicate, group close variants, split.

    asciitune data                      # the built-in cats (from the installed catsart package)
    asciitune data data.source=my_art/  # a folder of .txt files, one piece each

Sources: "cats" (catsart's JSON files, read at run time; no art is stored in this repo),
a folder of .txt files (nested folders allowed), a .jsonl/.csv/.parquet file with a text
column, or a folder written by `datasets.Dataset.save_to_disk`.

Similarity is rapidfuzz's normalized Levenshtein similarity on whitespace-collapsed text.
On catsart's 215 distinct pieces the nearest-neighbour similarities have an empty band
between 0.80 and 0.85: above it pieces are small edits of one drawing (near duplicates: the
same cat with another face), while 0.6-0.8 holds redrawings of the same subject. Both thresholds
are config keys.

Grouping (`group_pieces`: the split keeps groups together; external scoring's human reference leaves out each
piece's drawing, harness.judge.reference):
a drawing is a connected component of the near-duplicate graph, and never straddles the split.
Groups of close variants are connected components of the >= 0.6 graph while a component holds at
most a tenth of the pieces; a larger one is a style shared across subjects, which chains, and is
re-grouped by complete linkage, so that every two drawings of a group are close variants, and cut
further where a group would pass the cap. Measured on the kinds of tests/art_kinds.py
(tests/test_data_split.py): FIGlet banners of many words in a few fonts chain into one component
of all 185 (as the old groups, the split had no training piece), sympy's typeset formulas 29 of 150
into one; catsart's largest component holds 6 of 215, so its groups are the components they were.

Split (`_held_out_groups`): training keeps about 1 - data.heldout_fraction of the distinct pieces
and the held-out set about the fraction of the drawings. A group is held out when its level, from
the smallest content hash of its drawings, lies below the fraction, so a group's side depends on
its own pieces and stays put as others are added; where that misses the fraction by more than
SPLIT_TOLERANCE the boundary moves along the levels until the split is as near as the groups
allow. A split that still misses is uneven: `asciitune data` says so and `asciitune run` stops
unless data.allow_uneven_split. A frozen manifest (`data/splits/cats.json`) wins for its pieces,
at the fraction it was frozen at.

Exact duplicates are dropped; near duplicates stay in training (they are training data the
original workflow used) unless `data.drop_near_duplicates`, and a held-out piece keeps no near
duplicate beside it (the human reference holds distinct drawings). Near duplicates of training
pieces that a run leaves out (dropped, or outside data.max_train_pieces) ride along in
`Dataset.dropped`: a sample that copies one of them is still a copy.

data.max_train_pieces=N trains on N training pieces chosen by a salted hash of their content
(`subset_rank`), not on the first N in source order: catsart's first files hold short cats (of the
cats of at most 600 characters, the first 48 have a median of 82, the held-out set 176; the hashed
48, 173.5), so a prefix made a training set unlike the held-out cats the judge compares samples
with. The hashed subset is spread over the source and stays put as pieces are added.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import textwrap
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

from harness import pieces as piece_files  # `pieces` names lists of Piece here
from harness.config import DataConfig
from harness.errors import UserError
from harness.fsutil import sha256_json


@dataclass(frozen=True)
class Piece:
    """One normalized piece of art and where it came from."""

    text: str
    origin: str  # file path or row id, for messages

    @property
    def key(self) -> str:
        """Content hash: the identity used by split manifests."""
        return hashlib.sha256(self.text.encode("utf-8")).hexdigest()[:16]


@dataclass
class Dataset:
    """Train and held-out pieces plus what was dropped on the way."""

    name: str
    train: list[Piece]
    heldout: list[Piece]
    n_raw: int
    n_exact_duplicates: int
    n_near_duplicates: int
    n_groups: int
    n_empty: int = 0
    extra: dict = field(default_factory=dict)
    # Near duplicates of training pieces that the run does not train on: copy checks look at them too.
    dropped: list[Piece] = field(default_factory=list)

    def hash(self) -> str:
        """Content hash over both sides of the split (and the dropped near duplicates, when there are any)."""
        parts = {"train": [p.key for p in self.train], "heldout": [p.key for p in self.heldout]}
        if self.dropped:  # absent when empty, so a dataset without them hashes as before
            parts["dropped"] = [p.key for p in self.dropped]
        return sha256_json(parts)[:16]

    def summary(self) -> dict:
        """Counts for results.json."""
        return {"name": self.name, "hash": self.hash(), "n_train": len(self.train), "n_heldout": len(self.heldout),
                "n_raw": self.n_raw, "n_exact_duplicates": self.n_exact_duplicates,
                "n_near_duplicates": self.n_near_duplicates, "n_groups": self.n_groups, "n_empty": self.n_empty,
                **self.extra}

    def to_dict(self) -> dict:
        """Everything, pieces included, for handing the split to a child process."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Dataset:
        """The inverse of to_dict."""
        return cls(**{**data, **{side: [Piece(**p) for p in data.get(side, [])]
                                 for side in ("train", "heldout", "dropped")}})


def normalize(text: str) -> str:
    """Tabs to spaces, trailing spaces off, blank edge lines off, common indent off."""
    lines = [line.rstrip() for line in text.replace("\r\n", "\n").replace("\r", "\n").expandtabs(8).split("\n")]
    while lines and not lines[0]:
        lines.pop(0)
    while lines and not lines[-1]:
        lines.pop()
    return textwrap.dedent("\n".join(lines))


def collapse_whitespace(text: str) -> str:
    """Whitespace-normalized form used for every similarity comparison."""
    return " ".join(text.split())


def format_example(art: str, eos_token: str) -> str:
    """The training text: newline, art, newline, EOS (the seed notebook's format)."""
    return "\n" + art + "\n" + eos_token


# ---------------------------------------------------------------- loading

def _cats() -> list[tuple[str, str]]:
    spec = importlib.util.find_spec("catsart")
    if spec is None or spec.origin is None:
        raise UserError("The built-in cats data needs the catsart package: run `pip install catsart==7.0`.")
    rows = []
    for file in sorted((Path(spec.origin).parent / "database").glob("*.json")):
        for i, art in enumerate(json.loads(file.read_text(encoding="utf-8"))):
            rows.append((art, f"catsart:{file.stem}[{i}]"))
    return rows


def load_raw(cfg: DataConfig) -> list[tuple[str, str]]:
    """(text, origin) rows from the configured source, before any cleaning (files: harness.pieces.read)."""
    if cfg.source == "cats":
        return _cats()
    path = Path(cfg.source).expanduser()
    if not path.exists():
        raise UserError(f"Data source '{cfg.source}' does not exist: pass 'cats', a folder of .txt files, "
                        "or a .jsonl/.csv/.parquet file.")
    if path.is_file() and path.suffix.lower() not in (*piece_files.TABLE_SUFFIXES, ".txt"):
        raise UserError(f"Data file '{path}' has an unsupported type: use .jsonl, .csv or .parquet "
                        "(or a folder of .txt files).")
    read = piece_files.read(path, cfg.text_column, text_files=False)
    rows = list(zip(read.texts, read.origins, strict=True))
    if not rows:
        raise UserError(f"Data source '{cfg.source}' holds no pieces of art: add .txt files (one piece each) "
                        "or rows with a text column.")
    return rows


# ---------------------------------------------------------------- grouping

# A group holds at most this share of the pieces (two at least). Moving the split's boundary past one group moves
# its share by the group's size; it stops on the side nearer the fraction, so groups of at most 2 x SPLIT_TOLERANCE
# of the set keep the split within its tolerance. Complete linkage alone keeps the regrouped styles of
# tests/art_kinds.py under the cap (banners: 12 of 185, formulas: 13 of 150); it binds on a clique of close variants.
GROUP_CAP_SHARE = 0.1
# How far the split may land from data.heldout_fraction before it is called uneven (`asciitune data` says so and
# `asciitune run` stops unless data.allow_uneven_split), on both of its shares: training keeps 1 - fraction of the
# distinct pieces, the held-out set the fraction of the drawings (one piece each; their near duplicates are left
# out, so on a set rich in them held-out / (train + held-out) pieces is lower: banners at 0.3, 39 / 165).
SPLIT_TOLERANCE = 0.05


def _similarities(texts: list[str], threshold: float):
    """Pairwise similarity of the whitespace-collapsed texts (rapidfuzz), 0 where below `threshold`."""
    import numpy as np
    from rapidfuzz import process
    from rapidfuzz.distance import Levenshtein

    collapsed = [collapse_whitespace(t) for t in texts]
    sims = process.cdist(collapsed, collapsed, scorer=Levenshtein.normalized_similarity, score_cutoff=threshold,
                         workers=1)
    np.fill_diagonal(sims, 0.0)
    return sims


def _components(n: int, pairs) -> list[int]:
    """Union-find: a component id per item, the items of a pair in one.

    Hand-written rather than scipy.sparse.csgraph, whose import takes longer than grouping all of catsart.
    """
    parent = list(range(n))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, j in pairs:
        parent[find(j)] = find(i)
    return [find(i) for i in range(n)]


def _complete_linkage(idx: list[int], texts: list[str], sims, drawing: list[int], threshold: float,
                      cap: int) -> list[list[int]]:
    """Split one over-large component into groups every two drawings of which are `threshold` similar, of at most cap.

    Complete linkage (scipy) on the pieces, with the pieces of one drawing at distance 0 so a drawing is never cut;
    the tree is cut at the threshold, and a branch still over the cap at its tightest merges that fit. Pieces are
    ordered by content first, so the groups do not depend on the order the source lists them in.
    """
    import numpy as np
    from scipy.cluster.hierarchy import linkage, to_tree
    from scipy.spatial.distance import squareform

    idx = sorted(idx, key=lambda i: texts[i])
    dist = 1.0 - sims[np.ix_(idx, idx)].astype(np.float64)  # below the cut-off: similarity 0, distance 1
    own = np.asarray([drawing[i] for i in idx])
    dist[own[:, None] == own[None, :]] = 0.0
    groups, stack = [], [to_tree(linkage(squareform(dist, checks=False), "complete"))]
    while stack:
        node = stack.pop()
        if node.dist == 0.0 or (node.dist <= 1.0 - threshold + 1e-9 and node.count <= cap):  # a leaf is at 0
            groups.append([idx[i] for i in node.pre_order()])
        else:
            stack += [node.right, node.left]
    return groups


@dataclass(frozen=True)
class Grouping:
    """Per piece: its drawing (near duplicates: small edits of one drawing) and its group (kept on one side)."""

    drawing: list[int]
    group: list[int]
    cap: int  # the largest group allowed; only a drawing larger than this is larger

    def members(self) -> dict[int, list[int]]:
        """Group id -> piece indices, in source order."""
        out: dict[int, list[int]] = {}
        for i, g in enumerate(self.group):
            out.setdefault(g, []).append(i)
        return out


def group_pieces(texts: list[str], variant_similarity: float = DataConfig.variant_similarity,
                 near_duplicate_similarity: float = DataConfig.near_duplicate_similarity) -> Grouping:
    """Drawings (components of the near-duplicate graph) and groups of close variants that cannot chain.

    Groups are connected components of the close-variant graph (pairs at least `variant_similarity` similar), as
    long as a component holds at most GROUP_CAP_SHARE of the pieces; a larger one is a shared style, not one
    subject redrawn (a font's banners chain through each other into one component), and is re-grouped by complete
    linkage: every two of its drawings in one group are close variants, and no group passes the cap.
    """
    import numpy as np

    n = len(texts)
    sims = _similarities(texts, min(variant_similarity, near_duplicate_similarity))
    pairs = list(zip(*np.nonzero(np.triu(sims) >= min(variant_similarity, near_duplicate_similarity)), strict=True))
    drawing = _components(n, [(i, j) for i, j in pairs if sims[i, j] >= near_duplicate_similarity])
    component = _components(n, pairs)
    cap = max(2, int(GROUP_CAP_SHARE * n))
    parts: dict[int, list[int]] = {}
    for i, c in enumerate(component):
        parts.setdefault(c, []).append(i)
    groups = []
    for idx in parts.values():
        if len(idx) <= cap:
            groups.append(idx)
        else:
            groups += _complete_linkage(idx, texts, sims, drawing, variant_similarity, cap)
    label = [0] * n
    for g, idx in enumerate(sorted(groups, key=min)):  # numbered in source order
        for i in idx:
            label[i] = g
    return Grouping(drawing, label, cap)


def variant_groups(texts: list[str], variant_similarity: float = DataConfig.variant_similarity,
                   near_duplicate_similarity: float = DataConfig.near_duplicate_similarity) -> list[int]:
    """A group id per text, as the split keeps them together (group_pieces)."""
    return group_pieces(texts, variant_similarity, near_duplicate_similarity).group


# ---------------------------------------------------------------- splitting

def _level(u: float, m: int) -> float:
    """Where a group of m drawings stands in the split, uniform in [0, 1) whatever m: u is the smallest of m hashes."""
    return 1.0 - (1.0 - u) ** m


def _held_out_groups(members: dict[int, list[int]], keys: list[str], is_variant: list[bool], fraction: float,
                     manifest: dict[str, str]) -> set[int]:
    """The groups held out: frozen ones as the manifest says, the rest by a hash of their own content.

    A group's level comes from u, the smallest content hash of its m drawings (the first piece read of each, so a
    near duplicate added to a drawing never moves it), as 1 - (1 - u)^m: uniform whatever m, where u alone (the
    old rule, u < fraction) held out a group of m drawings about m times as often (the regrouped banners: 0.40-0.72
    of their pieces held out for 0.1-0.3). Held out are the groups whose level lies below the fraction, so a
    group's side depends only on its own pieces and stays put as others are added, unless that misses the fraction
    by more than SPLIT_TOLERANCE in drawings (the held-out set) or in pieces (what training keeps); then the
    boundary moves along the levels, holding out the training groups next (or returning the held-out ones last)
    while each brings the split nearer, and back where a group rich in near duplicates overshot in pieces.
    """
    drawings = {g: sum(not is_variant[i] for i in idx) for g, idx in members.items()}
    pieces = {g: len(idx) for g, idx in members.items()}
    n_drawings, n_pieces = sum(drawings.values()), sum(pieces.values())
    level = {g: _level(int(min(keys[i] for i in idx if not is_variant[i])[:8], 16) / 0x1_0000_0000, drawings[g])
             for g, idx in members.items()}
    frozen: dict[int, bool] = {}
    for g, idx in members.items():
        sides = {manifest[keys[i]] for i in idx if keys[i] in manifest}
        if sides:  # a group that mixes sides (grouping changed since freezing) is held out: never train on held-out
            frozen[g] = "heldout" in sides
    held = {g for g in members if frozen.get(g, level[g] < fraction)}
    n_held = sum(drawings[g] for g in held), sum(pieces[g] for g in held)

    def gap(d: int, p: int) -> float:
        """How far the held-out share lands from the fraction, in drawings or in pieces, whichever is further."""
        return max(abs(d / n_drawings - fraction), abs(p / n_pieces - fraction))

    free = sorted((g for g in members if g not in frozen), key=level.get)
    if gap(*n_held) > SPLIT_TOLERANCE:
        grow = n_held[0] / n_drawings < fraction
        for direction in (grow, not grow):  # and back, where a group rich in near duplicates overshot in pieces
            sign = 1 if direction else -1
            for g in free if direction else reversed(free):
                d, p = n_held[0] + sign * drawings[g], n_held[1] + sign * pieces[g]
                if (g in held) != direction and p < n_pieces and gap(d, p) < gap(*n_held):  # training keeps one
                    n_held = d, p
                    held ^= {g}
    if not held:  # no group fits: hold out the one that comes nearest, if training keeps a piece
        fits = [g for g in free if pieces[g] < n_pieces]
        if fits:
            held = {min(fits, key=lambda g: (gap(drawings[g], pieces[g]), level[g]))}
    return held


def _uneven_facts(e: dict, n_heldout: int, fraction: float, keeps: str = "keeps") -> str:
    """What an uneven split holds against what data.heldout_fraction asks, from Dataset.extra; '' when even."""
    if max(abs(e["train_share"] - (1 - fraction)), abs(e["heldout_share"] - fraction)) <= SPLIT_TOLERANCE + 1e-12:
        return ""
    return (f"training {keeps} {round(e['train_share'] * e['n_distinct'])} of its {e['n_distinct']} distinct "
            f"pieces ({e['train_share']:.2f}) and the held-out set {n_heldout} of its {e['n_drawings']} drawings "
            f"({e['heldout_share']:.2f}), not within {SPLIT_TOLERANCE:g} of {1 - fraction:g} and {fraction:g}")


def uneven_split(ds: Dataset, cfg: DataConfig) -> str:
    """One sentence when the split misses data.heldout_fraction by more than SPLIT_TOLERANCE, else ''.

    Two shares, as `_held_out_groups` measures them: of the distinct pieces, training keeps about 1 - fraction;
    of the drawings, the held-out set holds about the fraction (one piece each).
    """
    e, f = ds.extra, cfg.heldout_fraction
    facts = _uneven_facts(e, len(ds.heldout), f, keeps="would keep")
    if not facts:
        return ""
    return (f"Data source '{cfg.source}' cannot be split as data.heldout_fraction={f:g} asks: {facts} "
            f"({ds.n_groups} group(s) of close variants, the largest of {e['largest_group']} piece(s)): add pieces, "
            "change data.heldout_fraction, or set data.allow_uneven_split=true to go on with this split.")


def data_warnings(summary: dict) -> list[str]:
    """What a run's data summary (Dataset.summary) says a reader of its verdicts must know: an uneven split that
    data.allow_uneven_split let through, and pieces that hold non-ASCII characters (the judge's non_ascii flag)."""
    out = []
    if summary.get("uneven_split"):
        out.append(f"Uneven split (data.allow_uneven_split let the run go on): {summary['uneven_split']}; "
                   "verdicts read against so few held-out pieces are weak evidence.")
    return out + non_ascii_warning(summary)


def non_ascii_warning(summary: dict) -> list[str]:
    """One sentence where pieces of the data hold non-ASCII characters, saying what the judge does with them."""
    n = summary.get("n_non_ascii") or 0
    if not n:
        return []
    chars = " ".join(summary.get("non_ascii_chars") or [])
    total = (summary.get("n_train") or 0) + (summary.get("n_heldout") or 0)
    return [f"{n} of the {total} pieces a run trains on or holds out contain{'s' * (n == 1)} non-ASCII characters "
            f"({chars}): the judge flags every sample holding one non_ascii, which makes it invalid, so art that uses "
            "them is judged invalid (docs/data.md, Non-ASCII pieces)."]


def check_split(ds: Dataset, cfg: DataConfig) -> None:
    """Refuse an uneven split (uneven_split) unless data.allow_uneven_split: before a run trains on it."""
    problem = uneven_split(ds, cfg)
    if problem and not cfg.allow_uneven_split:
        raise UserError(problem)


def subset_rank(key: str) -> str:
    """Where a training piece stands for data.max_train_pieces: the first N by this rank are trained on.

    A hash of the piece's content key, salted so it is independent of the split's anchor hash (the
    smallest keys sit next to the held-out threshold and lean towards pieces in small groups). Stable:
    pieces added to the source displace chosen ones only where their own rank falls below the N-th.
    """
    return hashlib.sha256(f"max_train_pieces:{key}".encode()).hexdigest()


def default_manifest_path(cfg: DataConfig) -> Path | None:
    """The frozen split manifest for this source, if one is checked in."""
    if cfg.split_manifest:
        return Path(cfg.split_manifest)
    if cfg.source == "cats":
        return Path(__file__).resolve().parent.parent / "data" / "splits" / "cats.json"
    return None


def distinct_pieces(cfg: DataConfig) -> tuple[list[Piece], dict]:
    """Every distinct normalized piece of the source (empty, over-long and exactly repeated ones out), and counts."""
    raw = load_raw(cfg)
    pieces, seen, n_empty, n_long = [], set(), 0, 0
    for text, origin in raw:
        piece_files.check_art(text, origin, cfg.source)  # NUL, escape sequences, controls: refused, never trained on
        art = normalize(text)
        if not art.strip():
            n_empty += 1
            continue
        if cfg.max_piece_chars and len(art) > cfg.max_piece_chars:
            n_long += 1  # left out on purpose and reported, never truncated
            continue
        if art in seen:
            continue
        seen.add(art)
        pieces.append(Piece(art, origin))
    if not pieces:
        raise UserError(f"Data source '{cfg.source}' has only empty pieces: every piece needs visible characters.")
    counts = {"n_raw": len(raw), "n_empty": n_empty, "n_long": n_long,
              "n_exact": len(raw) - n_empty - n_long - len(pieces)}
    return pieces, counts


def build_pool(cfg: DataConfig, unit: str = "group") -> tuple[list[Piece], list[int]]:
    """Every distinct piece of the source with its group of close variants (unit="group", as the split keeps them
    together) or its drawing (unit="drawing": it and its near duplicates): what external scoring trains on."""
    pieces, _ = distinct_pieces(cfg)
    grouping = group_pieces([p.text for p in pieces], cfg.variant_similarity, cfg.near_duplicate_similarity)
    return pieces, grouping.drawing if unit == "drawing" else grouping.group


def _manifest(cfg: DataConfig) -> tuple[dict[str, str], Path | None, str]:
    """The frozen split to honour (content hash -> side), its path, and why a checked-in one is not honoured."""
    path = default_manifest_path(cfg)
    if not path or not path.is_file():
        return {}, None, ""
    doc = json.loads(path.read_text(encoding="utf-8"))
    frozen_at = doc.get("heldout_fraction", cfg.heldout_fraction)
    if abs(frozen_at - cfg.heldout_fraction) > 1e-9:  # another fraction is another split
        return {}, None, f"{path} froze the split at data.heldout_fraction={frozen_at:g}"
    return doc.get("split", {}), path, ""


def build_dataset(cfg: DataConfig) -> Dataset:
    """Load, normalize, de-duplicate, group and split the configured source."""
    if not 0.0 < cfg.heldout_fraction < 1.0:
        raise UserError(f"data.heldout_fraction must be between 0 and 1, not {cfg.heldout_fraction}.")
    pieces, counts = distinct_pieces(cfg)
    keys = [p.key for p in pieces]
    grouping = group_pieces([p.text for p in pieces], cfg.variant_similarity, cfg.near_duplicate_similarity)
    near = grouping.drawing
    seen_near: set[int] = set()
    is_variant = []  # a near duplicate of an earlier piece: the first piece read of a drawing stands for it
    for g in near:
        is_variant.append(g in seen_near)
        seen_near.add(g)
    manifest, manifest_path, manifest_skipped = _manifest(cfg)
    members = grouping.members()
    held = _held_out_groups(members, keys, is_variant, cfg.heldout_fraction, manifest)
    # A held-out group keeps one piece per drawing (the human reference holds distinct drawings); a training
    # group keeps its near duplicates unless data.drop_near_duplicates. The split does not depend on that switch.
    train, heldout, left_out = [], [], []
    for i, piece in enumerate(pieces):
        if grouping.group[i] in held:
            if not is_variant[i]:
                heldout.append(piece)
        elif is_variant[i] and cfg.drop_near_duplicates:
            left_out.append(i)
        else:
            train.append(i)
    if not train or not heldout:
        raise UserError(f"Data source '{cfg.source}' cannot be split into train and held-out sets: its "
                        f"{len(pieces)} distinct piece(s) form {len(members)} group(s) of close variants and each "
                        "side needs one (or a split manifest puts every piece on one side): add more pieces.")
    n_full_train = len(train)
    if 0 < cfg.max_train_pieces < len(train):
        # A representative subset, not the first N in source order (a source's order is its authors'; catsart's
        # first files hold short cats, unlike the held-out ones): the N training pieces first by a hash of their
        # own key, kept in source order. Per piece, like the cap always was: a near duplicate may be chosen
        # without its first piece, and the left-out ones of a trained drawing ride along in `dropped`.
        chosen = set(sorted(train, key=lambda i: subset_rank(keys[i]))[: cfg.max_train_pieces])
        left_out += [i for i in train if i not in chosen]
        train = [i for i in train if i in chosen]
    trained = {near[i] for i in train}
    dropped = [pieces[i] for i in sorted(left_out) if near[i] in trained]
    n_variants = sum(is_variant)
    n_train_variants = sum(is_variant[i] and grouping.group[i] not in held for i in range(len(pieces)))
    extra = {"n_train_available": n_full_train, "n_over_max_piece_chars": counts["n_long"],
             "near_duplicate_similarity": cfg.near_duplicate_similarity,
             "near_duplicates": "dropped" if cfg.drop_near_duplicates else "kept in training",
             "n_near_duplicates_in_training": 0 if cfg.drop_near_duplicates else n_train_variants,
             "n_near_duplicates_dropped": n_variants - (0 if cfg.drop_near_duplicates else n_train_variants),
             "n_dropped_copy_checked": len(dropped), "manifest": str(manifest_path) if manifest_path else "",
             "n_distinct": len(pieces), "n_drawings": len(seen_near),
             "train_share": round(sum(grouping.group[i] not in held for i in range(len(pieces))) / len(pieces), 4),
             "heldout_share": round(len(heldout) / len(seen_near), 4),
             "largest_group": max(map(len, members.values())), "group_cap": grouping.cap}
    if manifest_skipped:
        extra["manifest_skipped"] = manifest_skipped
    # Recorded only where present, so the summary of a plain ASCII, even split reads as it always did.
    n_non_ascii, chars = piece_files.non_ascii([pieces[i].text for i in train] + [p.text for p in heldout])
    if n_non_ascii:
        extra["n_non_ascii"], extra["non_ascii_chars"] = n_non_ascii, chars
    uneven = _uneven_facts(extra, len(heldout), cfg.heldout_fraction)
    if uneven:
        extra["uneven_split"] = uneven
    return Dataset(cfg.source, [pieces[i] for i in train], heldout, counts["n_raw"], counts["n_exact"], n_variants,
                   len(members), counts["n_empty"], extra, dropped)


def manifest_of(ds: Dataset, fraction: float) -> dict:
    """A frozen split manifest (content hash -> side) for `asciitune data --freeze`."""
    split = {p.key: "train" for p in ds.train} | {p.key: "heldout" for p in ds.heldout}
    return {"source": ds.name, "heldout_fraction": fraction, "n": len(split), "split": dict(sorted(split.items()))}


# ---------------------------------------------------------------- statistics

def _quantiles(values: list[int]) -> dict[str, float]:
    import numpy as np

    if not values:
        return {}
    q = np.percentile(values, [0, 25, 50, 75, 90, 100])
    return dict(zip(["min", "p25", "median", "p75", "p90", "max"], [float(x) for x in q]))


def token_lengths(pieces: list[Piece], tokenizer) -> list[int]:
    """Token count of each training text, EOS included."""
    texts = [format_example(p.text, tokenizer.eos_token) for p in pieces]
    return [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]


def check_lengths(pieces: list[Piece], lengths: list[int], max_seq_length: int) -> None:
    """Refuse pieces that would be cut by max_seq_length instead of silently truncating them."""
    over = [(n, p.origin) for n, p in zip(lengths, pieces) if n > max_seq_length]
    if over:
        longest = max(over)
        raise UserError(f"{len(over)} piece(s) are longer than model.max_seq_length={max_seq_length} tokens "
                        f"(longest: {longest[0]} tokens, {longest[1]}): raise model.max_seq_length or remove them.")


def describe(ds: Dataset, tokenizer=None, max_seq_length: int = 2048) -> dict:
    """Counts, line and width distributions, token lengths and over-length pieces, per side."""
    out = {"summary": ds.summary()}
    for side, pieces in (("train", ds.train), ("heldout", ds.heldout)):
        lines = [len(p.text.split("\n")) for p in pieces]
        widths = [max(len(line) for line in p.text.split("\n")) for p in pieces]
        info = {"pieces": len(pieces), "lines": _quantiles(lines), "max_width": _quantiles(widths),
                "characters": Counter("".join(p.text for p in pieces)).most_common(10)}
        if tokenizer is not None:
            toks = token_lengths(pieces, tokenizer)
            info["tokens"] = _quantiles(toks)
            info["tokens_total"] = sum(toks)
            info["over_max_seq_length"] = sum(t > max_seq_length for t in toks)
        out[side] = info
    return out


def pieces_phrase(data: dict) -> str:
    """A run's piece counts for its header, from Dataset.summary() (+ n_by_variant where variants differ):
    "16 training / 13 held-out pieces", or each variant's counts where their data settings give different ones."""
    per = data.get("n_by_variant") or {}
    if len({tuple(n) for n in per.values()}) > 1:
        if len({h for _, h in per.values()}) == 1:  # data.max_train_pieces only: one held-out set
            counts = ", ".join(f"{name} {t}" for name, (t, _) in per.items())
            trains = [t for t, _ in per.values()]
            return f"{min(trains)}-{max(trains)} training pieces ({counts}) / {_held_out(data)}"
        return "training / held-out pieces per variant: " + ", ".join(f"{name} {t} / {h}"
                                                                       for name, (t, h) in per.items())
    return f"{data.get('n_train', '-')} training / {_held_out(data)}"


def _held_out(data: dict) -> str:
    n = data.get("n_heldout", "-")
    return f"{n} held-out piece{'' if n == 1 else 's'}"  # "1 held-out piece", never "1 ... pieces"
