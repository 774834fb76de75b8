"""PNG montages of multimodal slices with the lesion label drawn over them (OpenCV only)."""

from pathlib import Path

import cv2
import numpy as np

LABEL_COLORS_BGR: dict[int, tuple[int, int, int]] = {1: (60, 60, 230), 2: (60, 200, 60), 4: (40, 220, 250)}
"""Overlay colors: necrotic core red, edema green, enhancing tumor yellow."""


def to_gray(image: np.ndarray) -> np.ndarray:
    """Window a (H, W) slice to uint8 between its 1st and 99.5th percentiles, for display.

    The background (the slice's minimum, e.g. outside a skull-stripped brain) stays black.
    """
    x = np.asarray(image, dtype=np.float32)
    foreground = x[x > x.min()]
    if foreground.size == 0:
        return np.zeros(x.shape, np.uint8)
    low, high = np.percentile(foreground, (1.0, 99.5))
    scaled = np.clip((x - low) / max(high - low, 1e-6), 0.0, 1.0) * 255.0
    scaled[x <= x.min()] = 0.0
    return scaled.astype(np.uint8)


def overlay_label(gray: np.ndarray, label: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """Blend the label's colors over a uint8 (H, W) slice; returns (H, W, 3) BGR uint8."""
    color = cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR)
    blended = color.copy()
    for value, bgr in LABEL_COLORS_BGR.items():
        blended[label == value] = bgr
    return cv2.addWeighted(blended, alpha, color, 1.0 - alpha, 0.0)


def _tile(image: np.ndarray) -> np.ndarray:
    """Display orientation and 3 channels: BraTS (x, y) arrays are shown anterior up."""
    tile = np.rot90(image)
    return np.ascontiguousarray(tile if tile.ndim == 3 else cv2.cvtColor(tile, cv2.COLOR_GRAY2BGR))


def grid(rows: list[list[np.ndarray]], titles: list[str], row_names: list[str] | None = None) -> np.ndarray:
    """Lay out tiles in a titled grid.

    Args:
        rows: one list per row of tiles, each uint8 (H, W) gray or (H, W, 3) BGR, all the same H, W.
        titles: one column title per tile of a row.
        row_names: optional text written in each row's first tile.

    Returns:
        (title_h + rows * H, columns * W, 3) BGR uint8 image.
    """
    if not rows or any(len(row) != len(titles) for row in rows):
        raise ValueError(f"every row needs one tile per title ({len(titles)} titles)")
    tiles = [[_tile(t) for t in row] for row in rows]
    body = np.vstack([np.hstack(row) for row in tiles])
    width = tiles[0][0].shape[1]
    header = np.zeros((28, body.shape[1], 3), np.uint8)
    for column, title in enumerate(titles):
        cv2.putText(
            header, title, (column * width + 6, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (255, 255, 255), 1
        )
    height = tiles[0][0].shape[0]
    for index, name in enumerate(row_names or []):
        cv2.putText(body, name, (6, index * height + 18), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1)
    return np.vstack([header, body])


def save_png(path: Path, image: np.ndarray) -> None:
    """Write a uint8 image as PNG, creating the parent directory."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), image):
        raise OSError(f"could not write PNG {path}")
