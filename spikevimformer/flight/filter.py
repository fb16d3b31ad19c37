"""A constant-velocity Kalman filter over east/north metres: camera fixes with their 95 % radii in, a track out.

State x = (east, north, v_east, v_north) in metres and metres per second, with white acceleration noise (the
continuous white-noise acceleration model, Bar-Shalom, Li & Kirubarajan 2001, sec. 6.2.2). A fix is a position
measurement whose 95 % radius r gives an isotropic standard deviation r / R95_PER_SIGMA. A fix further from the
prediction than the gate (squared Mahalanobis distance against chi-square with 2 degrees of freedom) is rejected;
`gate_reset` rejected fixes in a row that agree with each other restart the filter from the last of them (then the
track was wrong, not they), and so does a fused fix that would have the drone faster than `max_speed`. The
Rauch-Tung-Striebel smoother gives the offline track.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

R95_PER_SIGMA = math.sqrt(-2 * math.log(0.05))  # 2.448: a 2-D isotropic Gaussian's 95 % radius in sigmas
POSITION, VELOCITY = slice(0, 2), slice(2, 4)
H = np.eye(4)[POSITION]  # a fix observes the position
H_MOVED = np.c_[np.eye(2), np.zeros((2, 2)), -np.eye(2)]  # the displacement: position now less the one before


@dataclass(frozen=True)
class FilterConfig:
    """The motion model and the gate (metres, seconds)."""

    accel_sigma: float = 5.0  # m/s^2: a synthetic flight at 8 m/s with 15 m corners (seed 8, 120 frames) kept its
    # online radius holding 95 % of frames with 5, 90 % with 3 and 77 % with 1.5 (turns during frames without a fix)
    speed_sigma: float = 15.0  # m/s: the velocity's prior standard deviation when the filter (re)starts
    max_speed: float = 30.0  # m/s: how far apart two rejected fixes may be per second and still agree; a fused fix
    # that calls for a faster drone restarts the filter from it
    gate_chi2: float = 13.82  # chi-square, 2 degrees of freedom, 99.9 %: one right fix in a thousand is refused
    gate_reset: int = 3  # rejected fixes in a row that agree restart the filter from the last
    fix_floor: float = 0.5  # the position's standard deviation stays at least this share of a fused fix's: fixes
    # of consecutive frames share much of their error (the same reference content, the same lens), so fusing many
    # does not average it away (a flight across dates: errors of 6-12 m for frames in a row, radius holding 82 %)

    def __post_init__(self) -> None:
        if (min(self.accel_sigma, self.speed_sigma, self.max_speed, self.gate_chi2) <= 0 or self.gate_reset < 1
                or not 0 <= self.fix_floor <= 1):  # fmt: skip
            raise ValueError(f"filter settings must be positive, got {self}")


@dataclass
class Estimate:
    """The filter after one frame: state mean (4,) and covariance (4, 4); NaN before anything is known."""

    time_s: float
    mean: np.ndarray
    cov: np.ndarray
    source: str  # "fix" (a fix was fused), "predicted" (no fix, or a rejected one), "none" (nothing known yet)
    rejected: bool = False  # the frame's fix was refused by the gate
    prior_mean: np.ndarray | None = None  # the prediction before this frame's fix; None where a segment starts
    prior_cov: np.ndarray | None = None

    @property
    def en(self) -> np.ndarray:
        return self.mean[POSITION]

    @property
    def radius_m(self) -> float:
        """The position's 95 % radius: its larger principal standard deviation times R95_PER_SIGMA (NaN unknown)."""
        if self.source == "none":
            return math.nan
        return float(R95_PER_SIGMA * math.sqrt(max(float(np.linalg.eigvalsh(self.cov[POSITION, POSITION]).max()), 0)))


def transition(dt: float, accel_sigma: float) -> tuple[np.ndarray, np.ndarray]:
    """F and Q of the constant-velocity model over dt seconds."""
    f = np.eye(4)
    f[POSITION, VELOCITY] = dt * np.eye(2)
    q = np.zeros((4, 4))
    for axis in (0, 1):
        q[np.ix_([axis, axis + 2], [axis, axis + 2])] = accel_sigma**2 * np.array(
            [[dt**4 / 4, dt**3 / 2], [dt**3 / 2, dt**2]])
    return f, q


class TrackFilter:
    """Causal estimates frame by frame (`step`), and the smoothed track of all of them (`smooth`)."""

    def __init__(self, cfg: FilterConfig | None = None, start_en: np.ndarray | None = None,
                 start_radius_m: float | None = None) -> None:  # fmt: skip
        self.cfg = cfg or FilterConfig()
        self.mean: np.ndarray | None = None
        self.cov: np.ndarray | None = None
        self.time_s: float | None = None
        self.history: list[Estimate] = []
        self._rejected: list[tuple[np.ndarray, float, float]] = []  # (position, radius, time) refused in a row
        if start_en is not None:
            if start_radius_m is None or not start_radius_m > 0:
                raise ValueError(f"a start position needs a positive radius, got {start_radius_m}")
            self._restart(np.asarray(start_en, dtype=np.float64), start_radius_m)

    def step(self, time_s: float, fix_en: np.ndarray | None = None, fix_radius_m: float | None = None,
             moved_en: np.ndarray | None = None, moved_sigma_m: float | None = None) -> Estimate:  # fmt: skip
        """Advance to `time_s` (seconds, never back), fuse the displacement relative motion measured since the
        last step (east/north metres, with its standard deviation; gated like a fix), then the frame's fix
        (east/north metres, 95 % radius) where it passes the gate; ValueError for time going back or a fix without
        a positive radius."""
        if self.time_s is not None and time_s < self.time_s:
            raise ValueError(f"frame times must not go back: {time_s:.3f} s after {self.time_s:.3f} s")
        if fix_en is not None and not (fix_radius_m is not None and fix_radius_m > 0):
            raise ValueError(f"a fix needs a positive 95 % radius, got {fix_radius_m}")
        if self.mean is None:  # nothing known yet: the first fix starts the track
            self.time_s = time_s
            if fix_en is None:
                return self._record(Estimate(time_s, np.full(4, np.nan), np.full((4, 4), np.nan), "none"))
            self._restart(np.asarray(fix_en, dtype=np.float64), fix_radius_m)
            return self._record(Estimate(time_s, self.mean.copy(), self.cov.copy(), "fix"))
        old_en, old_cov, cross = self.mean[POSITION].copy(), self.cov[POSITION, POSITION].copy(), self.cov[:, POSITION]
        stepped = self.time_s is not None  # not the first step after a start position (which has no time)
        if stepped:
            f, q = transition(time_s - self.time_s, self.cfg.accel_sigma)
            self.mean, self.cov, cross = f @ self.mean, f @ self.cov @ f.T + q, f @ cross
        self.time_s = time_s
        prior = (self.mean.copy(), self.cov.copy())
        if stepped and moved_en is not None and moved_sigma_m is not None and moved_sigma_m > 0:
            self._moved(np.asarray(moved_en, dtype=np.float64), moved_sigma_m, old_en, old_cov, cross)
        if fix_en is None:
            return self._record(Estimate(time_s, self.mean.copy(), self.cov.copy(), "predicted", False, *prior))
        z = np.asarray(fix_en, dtype=np.float64)
        if not self._update(H, z, (fix_radius_m / R95_PER_SIGMA) ** 2):
            self._rejected = [*self._rejected, (z, fix_radius_m, time_s)] if self._agrees(z, fix_radius_m, time_s) \
                else [(z, fix_radius_m, time_s)]
            if len(self._rejected) >= self.cfg.gate_reset:  # the fixes agree among themselves: the track was wrong
                self._restart(z, fix_radius_m)
                return self._record(Estimate(time_s, self.mean.copy(), self.cov.copy(), "fix"))
            return self._record(Estimate(time_s, self.mean.copy(), self.cov.copy(), "predicted", True, *prior))
        self._rejected = []
        if float(np.hypot(*self.mean[VELOCITY])) > self.cfg.max_speed:  # no drone flew there from the prediction:
            # the track was wrong (a --start far off, long unseen), not the fix; the fix starts a new segment
            self._restart(z, fix_radius_m)
            return self._record(Estimate(time_s, self.mean.copy(), self.cov.copy(), "fix"))
        self._floor(self.cfg.fix_floor * fix_radius_m / R95_PER_SIGMA)
        return self._record(Estimate(time_s, self.mean.copy(), self.cov.copy(), "fix", False, *prior))

    def _floor(self, sigma: float) -> None:
        """Scale the position's rows and columns of the covariance (it stays positive semi-definite) so that its
        larger principal standard deviation is at least `sigma` metres."""
        largest = float(np.linalg.eigvalsh(self.cov[POSITION, POSITION]).max())
        if 0 < largest < sigma**2:
            d = np.diag([sigma / math.sqrt(largest)] * 2 + [1.0, 1.0])
            self.cov = d @ self.cov @ d

    def _moved(self, moved: np.ndarray, sigma: float, old_en: np.ndarray, old_cov: np.ndarray,
               cross: np.ndarray) -> None:  # fmt: skip
        """Fuse a displacement since the last step by stochastic cloning (Roumeliotis & Burdick, ICRA 2002): the
        position before the step (`old_en`, its covariance, and `cross`, (4, 2), the state's against it) rides
        beside the state, the displacement is measured between the two, and the clone is dropped again."""
        mean, cov = self.mean, self.cov
        self.mean, self.cov = np.r_[mean, old_en], np.block([[cov, cross], [cross.T, old_cov]])
        if self._update(H_MOVED, moved, sigma**2):
            mean, cov = self.mean[:4], self.cov[:4, :4]
        self.mean, self.cov = mean, cov

    def _update(self, h: np.ndarray, z: np.ndarray, variance: float) -> bool:
        """The Kalman update by measurement z = h x + noise of isotropic `variance`; False (and no update) where
        it fails the gate."""
        s = h @ self.cov @ h.T + np.eye(len(z)) * variance
        innovation = z - h @ self.mean
        if float(innovation @ np.linalg.solve(s, innovation)) > self.cfg.gate_chi2:
            return False
        gain = self.cov @ h.T @ np.linalg.inv(s)
        self.mean = self.mean + gain @ innovation
        self.cov = (np.eye(len(self.mean)) - gain @ h) @ self.cov
        self.cov = (self.cov + self.cov.T) / 2
        return True

    def predict(self, time_s: float) -> Estimate:
        """Where the filter expects the drone at `time_s` (no frame taken in: the state is left as it is); source
        "none" before anything is known."""
        if self.mean is None:
            return Estimate(time_s, np.full(4, np.nan), np.full((4, 4), np.nan), "none")
        f, q = transition(0.0 if self.time_s is None else max(time_s - self.time_s, 0.0), self.cfg.accel_sigma)
        return Estimate(time_s, f @ self.mean, f @ self.cov @ f.T + q, "predicted")

    def smooth(self) -> list[Estimate]:
        """Rauch-Tung-Striebel smoothed copies of every estimate so far, each segment (from the first fix or a
        restart to the next) on its own. Frames before a segment back to the last fused fix (those before the first
        fix, and those of a track a restart found wrong) are placed by running the motion model backwards from the
        segment, their covariance growing as they go."""
        out = [Estimate(e.time_s, e.mean.copy(), e.cov.copy(), e.source, e.rejected) for e in self.history]
        for i in range(len(out) - 2, -1, -1):
            here, nxt = self.history[i], self.history[i + 1]
            if here.source == "none" or nxt.prior_mean is None:
                continue
            f, _ = transition(nxt.time_s - here.time_s, self.cfg.accel_sigma)
            gain = here.cov @ f.T @ np.linalg.pinv(nxt.prior_cov)
            out[i].mean = here.mean + gain @ (out[i + 1].mean - nxt.prior_mean)
            out[i].cov = here.cov + gain @ (out[i + 1].cov - nxt.prior_cov) @ gain.T
        for start in (s for s, e in enumerate(self.history) if s and e.source == "fix" and e.prior_mean is None):
            i = start - 1
            while i >= 0 and self.history[i].source != "fix":
                f, q = transition(out[i + 1].time_s - out[i].time_s, self.cfg.accel_sigma)
                back = np.linalg.inv(f)
                out[i].mean = back @ out[i + 1].mean
                out[i].cov = back @ (out[i + 1].cov + q) @ back.T
                out[i].source = "predicted"
                i -= 1
        return out

    def _restart(self, en: np.ndarray, radius_m: float) -> None:
        sigma = radius_m / R95_PER_SIGMA
        self.mean = np.r_[en, 0.0, 0.0]
        self.cov = np.diag([sigma**2, sigma**2, self.cfg.speed_sigma**2, self.cfg.speed_sigma**2])
        self._rejected = []

    def _agrees(self, z: np.ndarray, radius_m: float, time_s: float) -> bool:
        """Whether a refused fix lies where the refused fix before it allows (both radii, and flying between)."""
        if not self._rejected:
            return True
        last, last_r, last_t = self._rejected[-1]
        return float(np.hypot(*(z - last))) <= radius_m + last_r + self.cfg.max_speed * (time_s - last_t)

    def _record(self, est: Estimate) -> Estimate:
        self.history.append(est)
        return est
