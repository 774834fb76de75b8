"""A differentiable twin of Algorithm 1 for the structural feature map consistency loss (15).

Loss (15) compares the input f with Algorithm 1 of each synthetic MRI x_g,i. Algorithm 1
(:func:`mrisynth.structure.structural_feature_map`) thresholds, so its output has no gradient. The twin
follows it step by step in torch and replaces only the two hard decisions:

1. Sobel edge maps as a ``conv2d`` with OpenCV's 3x3 kernels on a reflect-101 padded image (OpenCV's
   default border, which is torch's ``"reflect"``);
2. f1 = min and f2 = max over the two edge maps, each min-max normalized per image;
3. f1 = mean(f1) - f1, f2 = f2 - mean(f2), per image;
4. thresholds ``v > beta`` become ``sigmoid((v - beta) / tau)``;
5. the union ``(f1 + f2) > 0`` of two binary maps becomes the soft union ``s1 + s2 - s1 * s2``.

As tau -> 0 each sigmoid tends to the step function, so the twin tends to Algorithm 1 at every pixel
whose value is not exactly beta (tested in ``tests/test_training.py``). With tau > 0 a pixel near the
threshold gets a partial value and a gradient; the gradient also flows through the min-max
normalization and the means. The computation runs in float32 (or float64 when given), never in a
reduced precision autocast dtype, since ``(v - beta) / tau`` needs the resolution.
"""

import torch
import torch.nn.functional as F
from torch import Tensor

from mrisynth.structure import DEFAULT_BETA

DEFAULT_TAU = 0.02
"""Temperature of the soft thresholds: a pixel 0.05 (2.5 tau) above beta is 0.92."""

_SOBEL_X = ((-1.0, 0.0, 1.0), (-2.0, 0.0, 2.0), (-1.0, 0.0, 1.0))
"""OpenCV's 3x3 Sobel kernel for d/dx, applied as a correlation (``conv2d``)."""


def _min_max(v: Tensor) -> Tensor:
    """Scale each image of (B, 1, H, W) to [0, 1]; a constant image becomes zeros (as the numpy one)."""
    low = v.amin(dim=(2, 3), keepdim=True)
    span = v.amax(dim=(2, 3), keepdim=True) - low
    return (v - low) / span.clamp_min(torch.finfo(v.dtype).tiny)


def soft_structural_feature_map(x: Tensor, beta: float = DEFAULT_BETA, tau: float = DEFAULT_TAU) -> Tensor:
    """Differentiable Algorithm 1: soft structural feature map of a batch of MRI slices.

    Args:
        x: MRI slices (B, 1, H, W), H and W >= 2, any intensity scale (Algorithm 1 is scale invariant).
        beta: threshold in (0, 1) on the normalized fusion maps; default 0.12 as Algorithm 1.
        tau: temperature > 0 of the soft thresholds; default 0.02. Smaller is closer to Algorithm 1 and
            gives sparser gradients.

    Returns:
        (B, 1, H, W) map in [0, 1], float32 (float64 for a float64 input).

    Raises:
        ValueError: ``x`` not (B, 1, H, W), ``beta`` outside (0, 1) or ``tau`` <= 0.
    """
    if x.dim() != 4 or x.shape[1] != 1:
        raise ValueError(f"x must be (B, 1, H, W), got shape {tuple(x.shape)}")
    if not 0.0 < beta < 1.0 or tau <= 0.0:
        raise ValueError(f"need beta in (0, 1) and tau > 0, got beta={beta}, tau={tau}")
    dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    with torch.autocast(device_type=x.device.type, enabled=False):
        x = x.to(dtype)
        sobel_x = torch.tensor(_SOBEL_X, dtype=dtype, device=x.device)
        kernels = torch.stack([sobel_x.T, sobel_x]).unsqueeze(1)
        edges = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="reflect"), kernels)
        f1 = _min_max(edges.amin(dim=1, keepdim=True))
        f2 = _min_max(edges.amax(dim=1, keepdim=True))
        f1 = f1.mean(dim=(2, 3), keepdim=True) - f1
        f2 = f2 - f2.mean(dim=(2, 3), keepdim=True)
        s1 = torch.sigmoid((f1 - beta) / tau)
        s2 = torch.sigmoid((f2 - beta) / tau)
        return s1 + s2 - s1 * s2
