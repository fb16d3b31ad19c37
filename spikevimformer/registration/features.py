"""Local features behind one contract: `extract(gray) -> Features` and `match(query, reference) -> index pairs`.

Registration and pose call the contract, never a particular matcher (the LightGlue / kornia.feature shape).
OpenCV's SIFT and ORB are rotation- and scale-invariant; the learned XFeat (features_xfeat.py) is neither and
is fed photos turned north-up at the reference's scale (register.py).
"""

from __future__ import annotations

import abc
import threading
from dataclasses import dataclass

import cv2
import faiss
import numpy as np
import torch


@dataclass(frozen=True)
class Features:
    """Keypoints and descriptors of one grey image."""

    keypoints: np.ndarray  # (n, 2) float32 pixels (x right, y down) of the image they were extracted from
    descriptors: np.ndarray  # (n, d): float32 (SIFT, XFeat: L2-normalised) or uint8 (ORB, binary)
    size: tuple[int, int]  # (width, height) of that image

    def __len__(self) -> int:
        return len(self.keypoints)

    def subset(self, keep: np.ndarray) -> Features:
        return Features(self.keypoints[keep], self.descriptors[keep], self.size)


class Matcher(abc.ABC):
    """A local-feature extractor and its matcher, chosen by name (create_matcher)."""

    name: str
    rotation_invariant: bool  # False: the photo must be turned to the reference's orientation first

    @abc.abstractmethod
    def extract(self, gray: np.ndarray, max_keypoints: int | None = None) -> Features:
        """Features of an (h, w) uint8 image."""

    @abc.abstractmethod
    def match(self, query: Features, reference: Features) -> np.ndarray:
        """(m, 2) int64 index pairs [query, reference] of putative correspondences."""

    def match_fast(self, query: Features, reference: Features) -> np.ndarray:
        """A cheaper match for coarse searches; the full one unless a matcher has both."""
        return self.match(query, reference)


class OpenCVMatcher(Matcher):
    """SIFT (L2) or ORB (Hamming) from OpenCV with Lowe's ratio test (SIFT paper, 2004: 0.8)."""

    rotation_invariant = True

    def __init__(self, name: str, ratio: float = 0.8) -> None:
        if name not in OPENCV_FEATURES:
            raise ValueError(f"OpenCV features are {', '.join(OPENCV_FEATURES)}, got {name!r}")
        self.name, self.ratio = name, ratio
        self._norm = cv2.NORM_L2 if name == "sift" else cv2.NORM_HAMMING
        self._local = threading.local()  # OpenCV detectors are not shared across threads

    def _detector(self):
        if not hasattr(self._local, "detector"):
            self._local.detector = OPENCV_FEATURES[self.name]()
        return self._local.detector

    def extract(self, gray: np.ndarray, max_keypoints: int | None = None) -> Features:
        kps, desc = self._detector().detectAndCompute(gray, None)
        if max_keypoints is not None and len(kps) > max_keypoints:
            best = np.argsort([-k.response for k in kps])[:max_keypoints]
            kps, desc = [kps[i] for i in best], desc[best]
        pts = np.array([k.pt for k in kps], dtype=np.float32).reshape(-1, 2)
        if desc is None:
            desc = np.zeros((0, 32 if self._norm == cv2.NORM_HAMMING else 128), np.uint8 if self.name == "orb" else
                            np.float32)  # fmt: skip
        return Features(pts, desc, (gray.shape[1], gray.shape[0]))

    def match(self, query: Features, reference: Features) -> np.ndarray:
        if len(query) < 2 or len(reference) < 2:
            return np.zeros((0, 2), dtype=np.int64)
        if self._norm == cv2.NORM_L2:  # exact L2 neighbours through BLAS (faiss): the same pairs as OpenCV's
            # brute force, several times faster on the ~8000 x 8000 SIFT descriptors of a 1024 px photo and window
            d2, idx = faiss.knn(np.ascontiguousarray(query.descriptors, np.float32),
                                np.ascontiguousarray(reference.descriptors, np.float32), 2)  # fmt: skip
            dist = np.sqrt(np.maximum(d2, 0.0))
            keep = np.flatnonzero(dist[:, 0] < self.ratio * dist[:, 1])
            return np.c_[keep, idx[keep, 0]].astype(np.int64)
        pairs = cv2.BFMatcher(self._norm).knnMatch(query.descriptors, reference.descriptors, k=2)
        good = [(m[0].queryIdx, m[0].trainIdx) for m in pairs
                if len(m) == 2 and m[0].distance < self.ratio * m[1].distance]  # fmt: skip
        return np.array(good, dtype=np.int64).reshape(-1, 2)


def mutual_nearest(query: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """(m, 2) index pairs whose descriptors are each other's nearest by cosine (descriptors L2-normalised)."""
    if len(query) == 0 or len(reference) == 0:
        return np.zeros((0, 2), dtype=np.int64)
    q, r = (torch.from_numpy(np.asarray(d, dtype=np.float32)) for d in (query, reference))
    sim = q @ r.T  # torch: numpy's argmax down columns took twice as long
    forward = sim.argmax(1)
    keep = torch.nonzero(sim.argmax(0)[forward] == torch.arange(len(query))).ravel()
    return np.c_[keep.numpy(), forward[keep].numpy()].astype(np.int64)


# AKAZE left OpenCV's main modules in 5.0; offered where the installed OpenCV still has it
OPENCV_FEATURES = {
    "sift": cv2.SIFT_create,
    "orb": lambda: cv2.ORB_create(nfeatures=4000),
    **({"akaze": cv2.AKAZE_create} if hasattr(cv2, "AKAZE_create") else {}),
}
