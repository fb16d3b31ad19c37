"""Matchers by name: what `--features` accepts, each built once per process (the learned ones load weights)."""

from __future__ import annotations

import functools

from .features import OPENCV_FEATURES, Matcher, OpenCVMatcher
from .features_xfeat import XFeatMatcher

LEARNED = ("xfeat", "xfeat-mnn")
MATCHERS = (*LEARNED, *OPENCV_FEATURES)
AUTO = "auto"  # SIFT, then XFeat + LighterGlue where SIFT verifies no candidate (register.Registrar)
FEATURES = (AUTO, *MATCHERS)  # what --features accepts


@functools.cache
def create_matcher(name: str) -> Matcher:
    """The matcher called `name` (one of MATCHERS); ValueError naming the choices otherwise."""
    if name in LEARNED:
        return XFeatMatcher(glue=name == "xfeat")
    if name in OPENCV_FEATURES:
        return OpenCVMatcher(name)
    raise ValueError(f"features must be one of {', '.join(MATCHERS)}, got {name!r}")
