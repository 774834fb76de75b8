"""Collapse alarms of the synthesis stage, logged beside its losses in ``losses.csv``.

The printed objective's failure (issue 12) shows in numbers long before a montage: translations that
correlate with their source rather than their target, four synthetic modalities that are one image, a
classifier that cannot tell them apart, a lesion of the wrong sign. Each alarm is a detached scalar:

* ``corr_source`` / ``corr_target``: mean Pearson correlation, inside the brain, of x_t,j,i with x_j
  (its source) and with x_i (the real image of its target);
* ``spread``: mean absolute difference, inside the brain, between the synthetic modalities x_g,i of a
  sample, over the 6 unordered pairs (0 when they collapse);
* ``cl_accuracy``: share of the x_g,i that the frozen classifier CL names i;
* ``contrast_<modality>``: lesion contrast of x_g,i, (mean inside the fused lesion - mean of the healthy
  brain) / std of the healthy brain, averaged over the batch; its sign must be that of real data.
"""

from collections.abc import Mapping, Sequence
from itertools import combinations

import torch
from torch import Tensor

from models.losses import Pair
from mrisynth.conventions import MODALITIES

ALARM_NAMES: tuple[str, ...] = (
    "corr_source",
    "corr_target",
    "spread",
    "cl_accuracy",
    *(f"contrast_{modality}" for modality in MODALITIES),
)
"""Column names of the alarms in ``losses.csv``, in order."""


def masked_mean(x: Tensor, mask: Tensor) -> Tensor:
    """Per-sample mean of x (B, 1, H, W) over mask (B, 1, H, W) in {0, 1} -> (B,)."""
    return (x * mask).sum((1, 2, 3)) / mask.sum((1, 2, 3)).clamp_min(1.0)


def masked_correlation(a: Tensor, b: Tensor, mask: Tensor) -> Tensor:
    """Per-sample Pearson correlation of a and b (B, 1, H, W) over mask -> (B,)."""
    da = (a - masked_mean(a, mask)[:, None, None, None]) * mask
    db = (b - masked_mean(b, mask)[:, None, None, None]) * mask
    norm = (da.square().sum((1, 2, 3)) * db.square().sum((1, 2, 3))).sqrt()
    return (da * db).sum((1, 2, 3)) / (norm + 1e-8)


def lesion_contrast(x: Tensor, lesion: Tensor, brain: Tensor) -> Tensor:
    """Per-sample (mean of x in lesion - mean of healthy brain) / std of healthy brain -> (B,)."""
    healthy = brain * (1 - lesion)
    mean = masked_mean(x, healthy)
    std = masked_mean((x - mean[:, None, None, None]).square(), healthy).sqrt()
    return (masked_mean(x, lesion) - mean) / std.clamp_min(1e-6)


@torch.no_grad()
def collapse_alarms(
    x: Sequence[Tensor],
    x_t: Mapping[Pair, Tensor],
    pairs: Sequence[Pair],
    x_g: Sequence[Tensor],
    cl_logits_g: Sequence[Tensor],
    brain: Tensor,
    lesion: Tensor,
) -> dict[str, Tensor]:
    """The alarms of the module docstring for one step.

    Args:
        x: real MRI x_i per modality, (B, 1, H, W).
        x_t: translations x_t,j,i keyed (j, i), with an entry for every pair of ``pairs``.
        pairs: the step's (j, i) pairs.
        x_g: synthetic MRI x_g,i per modality, (B, 1, H, W).
        cl_logits_g: CL(x_g,i) per modality, (B, 4).
        brain: brain mask of the sample (B, 1, H, W), 1 inside.
        lesion: 1 inside the fused lesion label, (B, 1, H, W).
    """

    def correlation(end: int) -> Tensor:
        """Mean correlation of the translations with x_j (end 0, the source) or x_i (end 1, the target)."""
        return torch.stack([masked_correlation(x_t[p], x[p[end]], brain).mean() for p in pairs]).mean()

    alarms = {
        "corr_source": correlation(0),
        "corr_target": correlation(1),
        "spread": torch.stack(
            [masked_mean((x_g[i] - x_g[j]).abs(), brain).mean() for i, j in combinations(range(len(x_g)), 2)]
        ).mean(),
        "cl_accuracy": torch.stack(
            [(logits.argmax(1) == i).float().mean() for i, logits in enumerate(cl_logits_g)]
        ).mean(),
    }
    for i, modality in enumerate(MODALITIES):
        alarms[f"contrast_{modality}"] = lesion_contrast(x_g[i], lesion, brain).mean()
    return alarms
