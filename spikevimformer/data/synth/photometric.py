"""Photometric change between the drone and the satellite: light, colour, contrast, haze, blur, noise."""

from __future__ import annotations

import cv2
import numpy as np

_LEVELS = np.arange(256, dtype=np.float64) / 255.0


def photometric(img: np.ndarray, rng: np.random.Generator, strength: float, haze: bool = True,
                blur: bool = True) -> np.ndarray:
    """A randomly re-lit copy of an RGB uint8 image; strength 0 returns it unchanged."""
    if strength <= 0:
        return img
    s = float(strength)
    gain = np.exp(rng.normal(0, 0.16 * s)) * np.exp(rng.normal(0, 0.05 * s, 3))
    gamma = float(np.exp(rng.normal(0, 0.12 * s)))
    contrast = float(1.0 + np.clip(rng.normal(0, 0.12 * s), -0.4, 0.4))
    mean = np.array(cv2.mean(img)[:3]) / 255.0
    curves = np.clip(_LEVELS[:, None] * gain, 0, 1) ** gamma  # exposure, white balance, gamma ...
    centre = np.clip(mean * gain, 0, 1) ** gamma
    curves = (curves - centre) * contrast + centre  # ... and contrast about the mean, all in one table
    lut = (np.clip(curves, 0, 1) * 255 + 0.5).astype(np.uint8).reshape(256, 1, 3)
    out = cv2.LUT(img, lut)
    x = None
    if haze:  # more haze towards the top of the frame, which is farther away
        amount = min(0.8, rng.uniform(0, 0.32) * s)
        ramp = np.linspace(1.0, 0.35, img.shape[0], dtype=np.float32)[:, None, None] * np.float32(amount)
        colour = ((np.array([0.74, 0.77, 0.82]) + rng.normal(0, 0.03, 3)) * 255).astype(np.float32)
        x = out.astype(np.float32) * (1 - ramp) + colour * ramp
    if blur:
        sigma = rng.uniform(0, 0.9) * s * img.shape[0] / 256
        if sigma > 0.3:
            x = cv2.GaussianBlur(out.astype(np.float32) if x is None else x, (0, 0), sigma)
    sd = rng.uniform(0, 4.5) * s
    noise = rng.standard_normal(img.shape[:2], dtype=np.float32)[:, :, None] * np.float32(sd)
    x = (out.astype(np.float32) if x is None else x) + noise
    return np.clip(x + 0.5, 0, 255).astype(np.uint8)
