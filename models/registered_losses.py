"""Losses of the registered objective: what we add to and change in (7)-(19) on registered training data.

The paper trains without registered data; BraTS and the phantom are registered, and as printed the
objective is at its minimum when DC ignores its condition (issue 12: (9)-(11) are zero when a
"translation" returns its input, and (15), (17), (18) penalise modalities that differ; the committed
demo drew one image for all four modalities). ``Preset.registered`` (default on, ``--printed`` off) uses
the registration the data has. Conventions as :mod:`models.losses` (``||a - b||_2^2`` is a mean, pairs
keyed (j, i), sums over sampled pairs scaled by 12 / #pairs so that they stay unbiased):

* (T) paired translation: ``sum_{i} sum_{j != i} ||x_t,j,i - x_i||_2^2``, a translation is the real
  registered image of its target modality;
* (S) paired synthesis: ``sum_{i} ||x_p,i - x_i||_2^2``, x_p,i = DC(EC_r(fusion(f, label)), i) for the
  part of the batch (``Preset.paired_fraction``) fused with a label whose images x_i are known: by default
  the slice's own label (``Preset.paired_lesion`` "own"), or a lesion of the library pasted with its four
  images into the slice ("pasted", :mod:`models.data`);
* (R) one code per slice: ``sum_{i} sum_{j != i} ||code_i - code_j||_2^2`` on the registered codes, so
  that (11), (17) and (18) no longer ask the modalities to collapse;
* (C) category guidance: cross-entropy of the frozen modality classifier CL on x_g,i and x_t,j,i
  towards i, and (K) CL's own training on real slices;
* (L) lesion loss: soft Dice over the lesion classes plus cross-entropy, for (12), (16) and (19),
  where the printed mean squared error of probabilities let the T2 segmentor learn "no lesion" on a
  40-case phantom (lesions are 2-3 % of the pixels);
* (15) masked at the fused lesion, where f has no edges by construction (``loss_f_outside``).
"""

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from models.losses import (
    Pair,
    _checked_modalities,
    _checked_pairs,
    _pair,
    _scale,
    _total,
    loss_f,
    loss_lesion_1,
    mse,
)
from models.presets import LesionLoss

DICE_EPS = 1.0
"""Smoothing of the soft Dice (in pixels): an empty class in both label and prediction scores 1."""


def loss_translation_pair(
    x: Sequence[Tensor], x_t: Mapping[Pair, Tensor], pairs: Sequence[Pair] | None = None
) -> Tensor:
    """(T) Paired translation loss: sum_{i} sum_{j != i} ||x_t,j,i - x_i||_2^2.

    Args:
        x: real MRI x_i per modality, each (B, 1, H, W), registered.
        x_t: x_t,j,i = DC(EC(x_j), onehot_i) keyed (j, i).
        pairs: (j, i) pairs to sum (scaled by 12 / len(pairs)); default all 12.
    """
    chosen = _checked_pairs(pairs)
    x = _checked_modalities("x", x)
    return _scale(chosen) * _total(mse(_pair("x_t", x_t, (j, i)), x[i]) for j, i in chosen)


def loss_synthesis_pair(x: Sequence[Tensor], x_p: Sequence[Tensor]) -> Tensor:
    """(S) Paired synthesis loss: sum_{i} ||x_p,i - x_i||_2^2.

    Args:
        x: real MRI x_i per modality of the paired samples, each (P, 1, H, W).
        x_p: x_p,i, synthesized from the fusion of those samples' f with their own label, same shapes.
    """
    x, x_p = _checked_modalities("x", x), _checked_modalities("x_p", x_p)
    return _total(mse(x_p[i], x[i]) for i in range(len(x)))


def loss_code_registered(code: Sequence[Tensor], pairs: Sequence[Pair] | None = None) -> Tensor:
    """(R) One code per registered slice: sum_{i} sum_{j != i} ||code_i - code_j||_2^2.

    Args:
        code: code_i = EC(x_i) per modality, each (B, C, H/4, W/4).
        pairs: (j, i) pairs to sum (scaled by 12 / len(pairs)); default all 12.
    """
    chosen = _checked_pairs(pairs)
    code = _checked_modalities("code", code)
    return _scale(chosen) * _total(mse(code[i], code[j]) for j, i in chosen)


def modality_cross_entropy(logits: Tensor, modality: int) -> Tensor:
    """Mean cross-entropy of modality logits (B, 4) against one modality index for the whole batch."""
    target = torch.full((logits.shape[0],), modality, dtype=torch.long, device=logits.device)
    return F.cross_entropy(logits, target)


def loss_category(
    logits_g: Sequence[Tensor], logits_t: Mapping[Pair, Tensor], pairs: Sequence[Pair] | None = None
) -> Tensor:
    """(C) Category guidance by the frozen classifier CL.

    sum_{i} CE(CL(x_g,i), i) + sum_{i} sum_{j != i} CE(CL(x_t,j,i), i) (second sum scaled by 12 / #pairs).

    Args:
        logits_g: CL(x_g,i) per modality, each (B, 4).
        logits_t: CL(x_t,j,i) keyed (j, i), each (B, 4).
        pairs: (j, i) pairs of the second sum; default all 12.
    """
    chosen = _checked_pairs(pairs)
    translated = _total(modality_cross_entropy(_pair("logits_t", logits_t, (j, i)), i) for j, i in chosen)
    return loss_classifier(logits_g) + _scale(chosen) * translated


def loss_classifier(logits: Sequence[Tensor]) -> Tensor:
    """(K) CL's training on real slices: sum_{i} CE(CL(x_i), i).

    Args:
        logits: CL(x_i) per modality, each (B, 4).
    """
    logits = _checked_modalities("logits", logits)
    return _total(modality_cross_entropy(logits[i], i) for i in range(len(logits)))


def dice_ce(label: Tensor, probabilities: Tensor) -> Tensor:
    """(L) for one segmentation: (1 - mean soft Dice of the lesion classes) + cross-entropy.

    Soft Dice of class k: (2 sum(p_k l_k) + eps) / (sum(p_k) + sum(l_k) + eps), summed over the batch's
    pixels, for the lesion classes 1, 2, 4 (channels 1-3); cross-entropy over all four classes.

    Args:
        label: one-hot label (B, 4, H, W).
        probabilities: softmax probabilities of a segmentor, same shape.
    """
    lesion_p, lesion_l = probabilities[:, 1:], label[:, 1:]
    dims = (0, 2, 3)
    overlap = 2 * (lesion_p * lesion_l).sum(dims) + DICE_EPS
    dice = overlap / (lesion_p.sum(dims) + lesion_l.sum(dims) + DICE_EPS)
    cross_entropy = -(label * torch.log(probabilities.clamp_min(1e-7))).sum(1).mean()
    return (1 - dice.mean()) + cross_entropy


def loss_lesion(kind: LesionLoss, label: Tensor | Sequence[Tensor], label_r: Sequence[Tensor]) -> Tensor:
    """(12), (16) or (19) with the preset's lesion loss: sum_{i} dice_ce(label_i, label_r,i) for (L),
    sum_{i} ||label_i - label_r,i||_2^2 as printed (``kind`` "mse").

    Args:
        kind: ``Preset.lesion_loss``.
        label: one-hot label (B, 4, H, W) shared by every modality, or one per modality.
        label_r: segmentation probabilities per modality.
    """
    label_r = _checked_modalities("label_r", label_r)
    labels = [label] * len(label_r) if isinstance(label, Tensor) else _checked_modalities("label", label)
    if kind == "mse":
        return loss_lesion_1(labels, label_r)
    return _total(dice_ce(labels[i], label_r[i]) for i in range(len(label_r)))


def loss_f_outside(f: Tensor, f_g: Sequence[Tensor], lesion: Tensor) -> Tensor:
    """(15) masked at the fused lesion: sum_{i} ||(f - f_g,i) * (1 - lesion)||_2^2.

    Args:
        f: input structural feature map (B, 1, H, W), no edges inside the fused lesion.
        f_g: soft Algorithm 1 of each x_g,i, per modality.
        lesion: 1 where the fused label is a lesion, (B, 1, H, W).
    """
    outside = 1 - lesion
    return loss_f(f * outside, [fgi * outside for fgi in _checked_modalities("f_g", f_g)])
