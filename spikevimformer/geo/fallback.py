"""The answer when nothing registers: the best tile's centre, with a 95 % radius earned on evaluation worlds, and
a flag for photos that are probably of a place the index does not hold.

A softmax of the top-k tile centres lands between candidates that are often far apart (on the demo 238 m from the
camera in median, the top-1 tile 88 m), and its spread says nothing about how often the truth lies inside it.
Here the errors are a mixture, measured rather than assumed: with a probability that grows with the top-1 cosine
similarity, the top-1 tile is the photo's own and the camera lies within `right_radius_footprints` of its centre
(the camera stands off from the ground it looks at); otherwise the top-1 tile is any other tile of the index, so
the photo's own lies as far away as the index's tiles do. Both parts are fitted on photos with known cameras
retrieved against indexes of their worlds (scripts/calibrate_fallback.py); the index's own layout turns them into
metres at query time, so one calibration serves a 2 km index and a 20 km one alike.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np

from ..fileio import atomic_write_text

FORMAT = "spikevimformer-tile-fallback/2"
NEVER = -1.0  # elsewhere_below that flags nothing: no cosine similarity is under -1


@dataclass(frozen=True)
class TileFallback:
    """Top-1 similarity -> chance that the top-1 tile is the photo's own, and how far the camera is from it then."""

    model_sha256: str  # the weights whose similarities these are
    image_size: int  # at this input size (the same weights at another size give other similarities)
    score_edges: tuple[float, ...]  # ascending top-1 cosine similarities between bins
    p_right: tuple[float, ...]  # per bin (len(score_edges) + 1): share of photos whose top-1 tile was their own
    right_radius_footprints: float  # `coverage` of those cameras lie within this many footprints of its centre
    elsewhere_below: float  # a top-1 similarity under this: probably a place outside the index (NEVER: no flag)
    coverage: float = 0.95
    command: str = ""  # what measured it
    measured: dict = field(default_factory=dict)  # sample counts and the held-out check

    def __post_init__(self) -> None:
        if len(self.p_right) != len(self.score_edges) + 1:
            raise ValueError(f"{len(self.score_edges)} score edges need {len(self.score_edges) + 1} shares, got "
                             f"{len(self.p_right)}")  # fmt: skip
        if list(self.score_edges) != sorted(self.score_edges):
            raise ValueError(f"score edges must ascend, got {list(self.score_edges)}")

    def radius_m(self, score: float, footprint_m: float, tile_distances_m: np.ndarray) -> float:
        """The radius about the top-1 tile's centre holding the camera with probability `coverage`.

        score: top-1 cosine similarity; tile_distances_m: (n,) distances in metres from that tile's centre to
        every tile of the index (itself included). When the top-1 tile is wrong, the photo's own tile is taken
        to be any of the others, so the radius reaches the share of them the mixture needs, plus the stand-off.
        """
        p = self.p_right[int(np.searchsorted(self.score_edges, score, side="right"))]
        right = self.right_radius_footprints * footprint_m
        if p >= self.coverage or len(tile_distances_m) < 2:
            return float(right)
        need = (self.coverage - p) / (1.0 - p)  # of the wrong cases, the share the radius must hold
        others = np.sort(np.asarray(tile_distances_m, dtype=np.float64))[1:]  # the top-1 tile itself is not wrong
        far = others[min(len(others) - 1, math.ceil(need * len(others)) - 1)]
        return float(far + right)

    def elsewhere(self, score: float) -> bool:
        """Whether a photo whose best tile scores `score` is probably of a place the index does not hold."""
        return score < self.elsewhere_below

    def save(self, path: str | Path) -> None:
        atomic_write_text(path, json.dumps({"format": FORMAT, **asdict(self)}, indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> TileFallback:
        """A saved calibration; ValueError naming the file when it is not one."""
        try:
            data = json.loads(Path(path).read_text())
            if data.pop("format", None) != FORMAT:
                raise ValueError(f"not a {FORMAT} file")
            return cls(**{**data, "score_edges": tuple(data["score_edges"]), "p_right": tuple(data["p_right"])})
        except (OSError, ValueError, TypeError, KeyError) as exc:
            raise ValueError(f"{path}: not a tile-fallback calibration ({exc})") from exc


def fit(scores: Sequence[float], right: Sequence[bool], right_errors_footprints: Sequence[float],
        outside_scores: Sequence[float], model_sha256: str, image_size: int, bins: int = 4, coverage: float = 0.95,
        false_alarm: float = 0.05, min_odds: float = 4.0, command: str = "") -> TileFallback:  # fmt: skip
    """Calibrate from photos inside their indexes (top-1 similarity; whether the top-1 tile was their own; for
    those, the camera's distance from its centre in footprints) and photos of places outside them (similarity).

    Bins hold equal numbers of photos; p_right is made non-decreasing with similarity. The stand-off radius is
    the `coverage` quantile, rounded up to the next order statistic (finite-sample conformal). `elsewhere_below`
    flags at most `false_alarm` of the photos inside, and is kept only where it flags `min_odds` times as large
    a share of those outside (a flagged photo is then probably elsewhere when both are equally common); else
    NEVER: the model's similarities cannot tell them apart.
    """
    s, ok = np.asarray(scores, dtype=np.float64), np.asarray(right, dtype=bool)
    errors = np.asarray(right_errors_footprints, dtype=np.float64)
    if len(s) != len(ok) or len(s) < 10 * bins or len(errors) < 10:
        raise ValueError(f"need at least {10 * bins} photos with truth for {bins} bins and 10 whose top-1 tile was "
                         f"right, got {len(s)} and {len(errors)}")  # fmt: skip
    order = np.argsort(s)
    s, ok = s[order], ok[order]
    groups = np.array_split(np.arange(len(s)), bins)
    edges = [float((s[g[0] - 1] + s[g[0]]) / 2) for g in groups[1:]]
    shares = np.maximum.accumulate([float(ok[g].mean()) for g in groups])
    k = min(len(errors), math.ceil((len(errors) + 1) * coverage))
    stand_off = float(np.sort(errors)[k - 1])
    out = np.asarray(outside_scores, dtype=np.float64)
    flagged = math.floor(len(s) * false_alarm)  # inside photos the flag may catch
    cut = float(s[flagged]) if flagged else NEVER
    inside, outside = float((s < cut).mean()), float((out < cut).mean()) if len(out) else 0.0
    below = cut if outside >= min_odds * max(inside, 1.0 / len(s)) else NEVER  # a flag that tells them apart
    measured = {"photos": int(len(s)), "right": int(ok.sum()), "outside_photos": int(len(out)),
                "outside_flagged": float((out < below).mean()) if len(out) else None,
                "inside_flagged": float((s < below).mean())}  # fmt: skip
    return TileFallback(model_sha256, image_size, tuple(edges), tuple(float(p) for p in shares), stand_off, below,
                        coverage, command, measured)  # fmt: skip


def shipped(model_sha256: str, image_size: int) -> TileFallback | None:
    """The calibration shipped for a released model at the input size it was fitted at
    (resources/<release>-fallback.json), else None."""
    folder = resources.files("spikevimformer") / "resources"
    for entry in folder.iterdir():
        if entry.name.endswith("-fallback.json"):
            found = TileFallback.load(Path(str(entry)))
            if found.model_sha256 == model_sha256 and found.image_size == image_size:
                return found
    return None
