"""Registration of a photo to an orthophoto: local features and matchers, homographies, priors and the camera pose.

The interface is `Registrar.register(photo query, reference windows) -> Registration per window`; `geo/` reads
the windows from rasters and tiles, and turns registrations into positions on Earth.
"""

from .features import Features, Matcher
from .matchers import FEATURES, MATCHERS, create_matcher
from .pose import Pose, corner_pixels, free_focal, ground_at_pixels, solve_pose
from .register import PhotoQuery, Plane, RegisterConfig, Registrar, Registration, Window, homography_jacobian

__all__ = [
    "FEATURES", "MATCHERS", "Features", "Matcher", "PhotoQuery", "Plane", "Pose", "RegisterConfig", "Registrar",
    "Registration", "Window", "corner_pixels", "create_matcher", "free_focal", "ground_at_pixels",
    "homography_jacobian", "solve_pose",
]
