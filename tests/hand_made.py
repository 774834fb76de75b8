"""Hand-made images for the evaluation tests."""

import cv2
import numpy as np


def textured_brain(size: int = 64, shift: int = 0, seed: int = 0, stripes: bool = False) -> np.ndarray:
    """A smooth textured ellipse 'brain' on a zero background, shifted right by ``shift`` pixels.

    Args:
        size: side of the float32 (size, size) image.
        shift: pixels the ellipse and its texture move to the right.
        seed: seed of the texture.
        stripes: add vertical stripes ``cos(x / 4)``, moving with the shift (a pattern SSIM sees).
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size].astype(np.float32)
    inside = ((yy - size / 2) / (0.4 * size)) ** 2 + ((xx - size / 2 - shift) / (0.3 * size)) ** 2 <= 1
    texture = cv2.GaussianBlur(rng.normal(size=(size, size)).astype(np.float32), (0, 0), 2.0)
    texture = np.roll(texture, shift, axis=1) + (np.cos(xx / 4 - shift / 4) if stripes else 0.0)
    return np.where(inside, 2.0 + texture, 0.0).astype(np.float32)
