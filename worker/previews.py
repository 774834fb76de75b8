"""PNG previews of bundle samples: one row of tiles per sample, as `mrisynth.montage` draws them."""

import cv2
import numpy as np

from mrisynth.montage import grid, overlay_label, to_gray
from worker.bundle_layout import BundleSample


def preview_titles(modalities: tuple[str, ...]) -> list[str]:
    """Column titles of a preview row: the modalities, ``label``, ``structure`` and ``brain mask``."""
    return [*modalities, "label", "structure", "brain mask"]


def preview_row(sample: BundleSample, modalities: tuple[str, ...]) -> list[np.ndarray]:
    """Tiles of one sample: each modality, the label over FLAIR (else the first modality), the
    structural feature map f and the brain mask.

    Args:
        sample: the sample; its arrays are (H, W).
        modalities: the modalities to show, in order.

    Returns:
        uint8 tiles, (H, W) gray or (H, W, 3) BGR, in `preview_titles` order.
    """
    grays = [to_gray(sample.images[m]) for m in modalities]
    under = grays[modalities.index("flair")] if "flair" in modalities else grays[0]
    maps = [(np.asarray(binary) > 0).astype(np.uint8) * 255 for binary in (sample.f, sample.brain_mask)]
    return [*grays, overlay_label(under, np.asarray(sample.label)), *maps]


def preview_png(
    rows: list[list[np.ndarray]], modalities: tuple[str, ...], row_names: list[str] | None = None
) -> bytes:
    """PNG bytes of preview rows laid out in a titled grid (`mrisynth.montage.grid`)."""
    image = grid(rows, preview_titles(modalities), row_names)
    ok, encoded = cv2.imencode(".png", image)
    if not ok:
        raise ValueError(f"could not encode a {image.shape} image as PNG")
    return encoded.tobytes()
