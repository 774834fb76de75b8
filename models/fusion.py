"""Fusion of a structural feature map and a lesion label, Sec. 2.5.

The paper converts the label into an n-channel one-hot matrix onehot_l and "calculate[s] the
weighted sum of each channel of onehot_l with f_g". We keep one channel per label class:

    fusion_c = FUSION_LABEL_WEIGHT * onehot_c + FUSION_STRUCTURE_WEIGHT * f,   c over LABELS,

so the fusion map is (B, 4, H, W) with channels in ``LABELS`` order (0, 1, 2, 4) and values in
{0, 0.2, 0.8, 1.0}: 0.8 marks structure, +0.2 marks the pixel's label class. Why these weights:
they are those of the authors' public TensorFlow code (``0.2 * one_hot + 0.8 * f`` per channel);
they sum to 1, so the map stays in [0, 1] like f; the four levels are distinct, so both f and the
label can be read back from the map (no information is lost, unlike a single-channel sum where
classes could collide); the structure dominates every channel and the lesion shows as a step.
The worker's numpy twin must use the same two constants (to be moved into ``mrisynth/`` later).
"""

import torch
from torch import Tensor

from mrisynth.conventions import LABELS

FUSION_LABEL_WEIGHT: float = 0.2
"""Weight of each one-hot label channel in the fusion map."""

FUSION_STRUCTURE_WEIGHT: float = 0.8
"""Weight of the structural feature map f, added to every channel of the fusion map."""

FUSION_CHANNELS: int = len(LABELS)
"""Channels of the fusion map (input of EC_r): one per label class, in ``LABELS`` order."""


def label_to_onehot(label: Tensor) -> Tensor:
    """onehot_l of Sec. 2.5: a label map with values in LABELS -> one channel per class.

    Args:
        label: (B, H, W) integer or float tensor with values in ``LABELS`` = (0, 1, 2, 4).

    Returns:
        (B, 4, H, W) float32 tensor; channel c is 1 where ``label == LABELS[c]``, 0 elsewhere.

    Raises:
        ValueError: if ``label`` is not 3-D or holds a value outside ``LABELS``.
    """
    if label.dim() != 3:
        raise ValueError(f"label must be (B, H, W), got shape {tuple(label.shape)}")
    onehot = torch.stack([label == value for value in LABELS], dim=1).to(torch.float32)
    if not bool((onehot.sum(dim=1) == 1).all()):
        raise ValueError(f"label values must be in {LABELS}")
    return onehot


def fuse(f: Tensor, label: Tensor) -> Tensor:
    """The fusion map of Sec. 2.5, input of EC_r (Fig. 4).

    Args:
        f: structural feature map f_g (B, 1, H, W), values in [0, 1] (binary when from Algorithm 1).
        label: lesion label (B, H, W) with values in ``LABELS``.

    Returns:
        (B, 4, H, W) float32 tensor, channel c = 0.2 * onehot_c + 0.8 * f (see the module docstring).

    Raises:
        ValueError: if the shapes do not match or ``label`` holds a value outside ``LABELS``.
    """
    if f.dim() != 4 or f.shape[1] != 1 or f.shape[0] != label.shape[0] or f.shape[2:] != label.shape[1:]:
        raise ValueError(
            f"f must be (B, 1, H, W) and label (B, H, W), got {tuple(f.shape)} and {tuple(label.shape)}"
        )
    return FUSION_LABEL_WEIGHT * label_to_onehot(label) + FUSION_STRUCTURE_WEIGHT * f.to(torch.float32)
