"""Losses (1)-(19) of Qu et al., one function per equation, named after it.

Conventions:

* ``||a - b||_2^2`` is the mean squared error ``mean((a - b) ** 2)`` over every element, as the
  authors' ``mse_loss = reduce_mean(square(x - y))``; a scalar target (0 or 1) is broadcast.
* Per-modality quantities are sequences of 4 tensors indexed by modality i (``MODALITIES`` order,
  0 t1, 1 t1ce, 2 t2, 3 flair); stacks such as the (B, 4, 4, H, W) output of ``LesionGuidance``
  are split with ``.unbind(1)``.
* Pair-indexed quantities are mappings keyed by the paper's subscript ``(j, i)``, j != i:
  ``x_t[(j, i)]`` is x_{t,j,i}, the MRI of modality i translated from x_j; ``x_cr[(j, i)]`` is
  x_{cr,j,i}, x_i translated to modality j and back to i; ``x_gt[(j, i)]`` is x_{gt,j,i}, the
  synthetic MRI of modality i translated from x_{g,j}; ``code_t[(j, i)]`` is the semantic feature
  map of x_t[(j, i)]. The paper's text swaps the indices once ("d_{t,j,i} ... for x_{t,i,j}"); we
  follow the equations, where the category target of x_{t,j,i} is i.
* ``c`` terms: ``||c - i||_2^2`` compares the category head of D (softmax probabilities over the
  modalities, (B, 4, h, w)) with the one-hot of modality i.
* Labels are one-hot (B, 4, H, W) in ``LABELS`` order (``models.fusion.label_to_onehot``) and
  segmentations are the segmentors' softmax probabilities of the same shape.

Pair sampling: every sum over modality pairs takes an optional ``pairs``, a list of (j, i) keys
(default: all 12 ordered pairs). The sum over the given pairs is multiplied by
(#all pairs / #given pairs). Passing all pairs gives the exact sum; drawing a fixed number of pairs
uniformly without replacement (:func:`sample_pairs`) gives an unbiased estimate of it, since each
pair is drawn with probability #given / #all. Terms over single modalities are never sampled.
"""

from collections.abc import Iterable, Mapping, Sequence
from itertools import permutations

import torch
from torch import Tensor

from mrisynth.conventions import MODALITIES

Pair = tuple[int, int]
"""A (j, i) subscript: j the other modality, i the modality of the image (see the module docstring)."""

N_MODALITIES: int = len(MODALITIES)
ALL_PAIRS: tuple[Pair, ...] = tuple(
    (j, i) for i in range(N_MODALITIES) for j in range(N_MODALITIES) if j != i
)
"""The 12 ordered pairs (j, i), j != i, of the sums of equations (7), (8), (10), (11), (17), (18)."""
ALL_TRIPLES: tuple[tuple[int, int, int], ...] = tuple(permutations(range(N_MODALITIES), 3))
"""The 24 ordered (i, j, k), all different, of the second sum of equation (10)."""


def mse(x: Tensor, y: Tensor | float) -> Tensor:
    """||x - y||_2^2 of the paper: mean of the squared difference over all elements."""
    return torch.mean(torch.square(x - y))


def sample_pairs(n: int, generator: torch.Generator | None = None) -> list[Pair]:
    """Draw ``n`` distinct (j, i) pairs uniformly from :data:`ALL_PAIRS`, for the ``pairs`` arguments.

    Args:
        n: number of pairs, 1 to 12.
        generator: optional torch random generator.
    """
    if not 1 <= n <= len(ALL_PAIRS):
        raise ValueError(f"n must be in [1, {len(ALL_PAIRS)}], got {n}")
    order = torch.randperm(len(ALL_PAIRS), generator=generator)[:n]
    return [ALL_PAIRS[k] for k in order.tolist()]


def _checked_pairs(pairs: Sequence[Pair] | None) -> list[Pair]:
    if pairs is None:
        return list(ALL_PAIRS)
    chosen = [(int(j), int(i)) for j, i in pairs]
    if not chosen or len(set(chosen)) != len(chosen) or not set(chosen) <= set(ALL_PAIRS):
        raise ValueError(
            f"pairs must be distinct (j, i) with j != i in [0, {N_MODALITIES}), got {list(pairs)}"
        )
    return chosen


def _checked_modalities(name: str, tensors: Sequence[Tensor]) -> Sequence[Tensor]:
    if len(tensors) != N_MODALITIES:
        raise ValueError(f"{name} must hold one tensor per modality ({N_MODALITIES}), got {len(tensors)}")
    return tensors


def _pair(name: str, tensors: Mapping[Pair, Tensor], pair: Pair) -> Tensor:
    if pair not in tensors:
        raise ValueError(f"{name} has no entry for pair {pair}, which is in pairs")
    return tensors[pair]


def _category(c: Tensor, modality: int) -> Tensor:
    """||c - i||_2^2: category probabilities (B, 4, h, w) against the one-hot of modality i."""
    target = torch.zeros_like(c)
    target[:, modality] = 1.0
    return mse(c, target)


def _scale(pairs: Sequence[Pair]) -> float:
    return len(ALL_PAIRS) / len(pairs)


def _total(terms: Iterable[Tensor]) -> Tensor:
    """Sum of scalar terms, on their device."""
    return torch.stack(list(terms)).sum()


def _sum_per_modality(names: tuple[str, str], a: Sequence[Tensor], b: Sequence[Tensor]) -> Tensor:
    """sum_{i} ||a_i - b_i||_2^2 over the 4 modalities."""
    a, b = _checked_modalities(names[0], a), _checked_modalities(names[1], b)
    return _total(mse(a[i], b[i]) for i in range(N_MODALITIES))


def loss_code_d_f(fd_code_f_g: Tensor, fd_code_f: Tensor) -> Tensor:
    """(1) Code matrix distribution discriminator loss, Sec. 2.3.

    loss_code,d,f = ||FD_f(code_f,g) - 1||_2^2 + ||FD_f(code_f)||_2^2

    Args:
        fd_code_f_g: FD_f output on code_f,g, a matrix drawn from N(0, 1) (positive sample).
        fd_code_f: FD_f output on code_f, the reparameterized code of EC_f (negative sample).
    """
    return mse(fd_code_f_g, 1.0) + mse(fd_code_f, 0.0)


def loss_d_f(d_f: Tensor, d_f_g: Tensor) -> Tensor:
    """(2) Structural feature map discriminator loss, Sec. 2.3.

    loss_d,f = ||D_f(f) - 1||_2^2 + ||D_f(f_g)||_2^2

    Args:
        d_f: D_f output on the real structural feature map f (Algorithm 1).
        d_f_g: D_f output on f_g = DC_f(code_f,g).
    """
    return mse(d_f, 1.0) + mse(d_f_g, 0.0)


def loss_g_f(fd_code_f: Tensor, d_f_g: Tensor) -> Tensor:
    """(3) Structural feature map adversarial loss, Sec. 2.3 (for EC_f and DC_f).

    loss_g,f = ||FD_f(code_f) - 1||_2^2 + ||D_f(f_g) - 1||_2^2

    Args:
        fd_code_f: FD_f output on code_f.
        d_f_g: D_f output on f_g.
    """
    return mse(fd_code_f, 1.0) + mse(d_f_g, 1.0)


def loss_normal(code_f_mean: Tensor, code_f_logvar: Tensor) -> Tensor:
    """(4) Code matrix distribution loss, Sec. 2.3.

    loss_normal = ||mean(code_f,mean)||_2^2 + ||mean(exp(0.5 x code_f,logvar)) - 1||_2^2

    The means are taken over the whole tensors (batch included), as the authors' ``reduce_mean``.

    Args:
        code_f_mean: first output of EC_f, (B, 4, H/4, W/4).
        code_f_logvar: second output of EC_f, same shape.
    """
    return torch.square(torch.mean(code_f_mean)) + torch.square(
        torch.mean(torch.exp(0.5 * code_f_logvar)) - 1.0
    )


def loss_reconstruction_f(f: Tensor, f_r: Tensor, background_mask: Tensor) -> Tensor:
    """(5) Structural feature map reconstruction loss, Sec. 2.3.

    loss_reconstruction,f = ||f - f_r||_2^2 + ||f_r x mask||_2^2

    The paper's ``mask`` (Algorithm 2) is 1 OUTSIDE the brain, so pass ``background_mask =
    1 - brain_mask`` with our brain_mask (1 inside the brain): f_r is pushed to 0 outside the brain.

    Args:
        f: structural feature map (B, 1, H, W).
        f_r: its VAE reconstruction DC_f(code_f).
        background_mask: the paper's mask, 1 outside the brain, (B, 1, H, W).
    """
    return mse(f, f_r) + mse(f_r * background_mask, 0.0)


def loss_reconstruction_mask(
    background_mask: Tensor,
    background_mask_r: Tensor,
    f: Tensor,
    f_r: Tensor,
    f_g: Tensor,
    background_mask_g: Tensor,
) -> Tensor:
    """(6) Mask reconstruction loss, Sec. 2.3 (for MG).

    loss_reconstruction,mask = ||mask - mask_r||_2^2 + ||f x mask_r||_2^2 + ||f_r x mask_r||_2^2
                               + ||f_g x mask_g||_2^2

    All masks are the paper's (1 OUTSIDE the brain): ``background_mask = 1 - brain_mask``, and since
    MG predicts our brain mask, ``background_mask_r = 1 - MG(f)`` and ``background_mask_g =
    1 - MG(f_g)``. (The paper writes "extract mask_r from f" and "mask_g from f" again; mask_g must
    come from f_g, the only reading under which the last term constrains anything new.)

    Args:
        background_mask: Algorithm 2 mask of the real MRI, 1 outside the brain, (B, 1, H, W).
        background_mask_r: 1 - MG(f).
        f: structural feature map.
        f_r: its VAE reconstruction.
        f_g: structural feature map generated from noise, DC_f(code_f,g).
        background_mask_g: 1 - MG(f_g).
    """
    return (
        mse(background_mask, background_mask_r)
        + mse(f * background_mask_r, 0.0)
        + mse(f_r * background_mask_r, 0.0)
        + mse(f_g * background_mask_g, 0.0)
    )


def loss_d_1(
    d_t: Mapping[Pair, Tensor],
    c_t: Mapping[Pair, Tensor],
    fd_code: Sequence[Tensor],
    pairs: Sequence[Pair] | None = None,
    fake_category: float = 1.0,
) -> Tensor:
    """(7) Discriminator loss of reconstruction and translation training, Sec. 2.4.

    loss_d,1 = sum_{i} sum_{j != i} (||d_t,j,i||_2^2 + ||c_t,j,i - i||_2^2) + sum_{i} ||FD(code_i) - 1||_2^2

    Implemented as written. Ambiguities: the term for real MRI, ||d_i - 1||_2^2, is not in (7) but in
    (13), and FD's negative sample (code_g of EC_r) is in (13) as well, so (7) and (13) together make
    the complete D/FD objective and neither is a complete GAN discriminator loss alone. The category
    head is trained here on translated (fake) images towards their target modality i; the authors'
    public code trains it on real images only, which is the (13) term: ``fake_category`` = 0.

    Args:
        d_t: real/fake map of D on x_t,j,i, keyed (j, i).
        c_t: category probabilities of D on x_t,j,i, (B, 4, h, w), keyed (j, i).
        fd_code: FD output on code_i = EC(x_i), per modality (positive samples).
        pairs: (j, i) pairs to sum (scaled by 12 / len(pairs)); default all 12.
        fake_category: factor of the category terms ||c_t,j,i - i||_2^2 (1 as written, 0 as the authors'
            code; see ``LossWeights.fake_category``).
    """
    chosen = _checked_pairs(pairs)
    pair_sum = _total(
        mse(_pair("d_t", d_t, p), 0.0) + fake_category * _category(_pair("c_t", c_t, p), p[1]) for p in chosen
    )
    code_sum = _total(mse(v, 1.0) for v in _checked_modalities("fd_code", fd_code))
    return _scale(chosen) * pair_sum + code_sum


def loss_g_1(
    d_t: Mapping[Pair, Tensor], c_t: Mapping[Pair, Tensor], pairs: Sequence[Pair] | None = None
) -> Tensor:
    """(8) Adversarial and category guidance loss of reconstruction and translation training, Sec. 2.4.

    loss_g,1 = sum_{i} sum_{j != i} (||d_t,j,i - 1||_2^2 + ||c_t,j,i - i||_2^2)

    Args:
        d_t: real/fake map of D on x_t,j,i, keyed (j, i).
        c_t: category probabilities of D on x_t,j,i, keyed (j, i).
        pairs: (j, i) pairs to sum (scaled by 12 / len(pairs)); default all 12.
    """
    chosen = _checked_pairs(pairs)
    pair_sum = _total(mse(_pair("d_t", d_t, p), 1.0) + _category(_pair("c_t", c_t, p), p[1]) for p in chosen)
    return _scale(chosen) * pair_sum


def loss_reconstruction(x: Sequence[Tensor], x_r: Sequence[Tensor]) -> Tensor:
    """(9) MRI reconstruction loss, Sec. 2.4.

    loss_reconstruction = sum_{i} ||x_i - x_r,i||_2^2

    Args:
        x: real MRI x_i per modality, each (B, 1, H, W).
        x_r: reconstructions x_r,i = DC(EC(x_i), onehot_i) per modality.
    """
    return _sum_per_modality(("x", "x_r"), x, x_r)


def loss_cycle(
    x: Sequence[Tensor], x_cr: Mapping[Pair, Tensor], pairs: Sequence[Pair] | None = None
) -> Tensor:
    """(10) MRI cycle-reconstruction loss, Sec. 2.4.

    loss_cycle = sum_{i} sum_{j != i} ||x_i - x_cr,j,i||_2^2
                 + sum_{i} sum_{j != i} sum_{k != j, k != i} ||x_cr,j,i - x_cr,k,i||_2^2

    The first sum has 12 terms, the second 24 (ordered triples). With ``pairs``, the first sum runs
    over the given pairs times 12 / len(pairs); the second over the triples whose (j, i) and (k, i)
    are both given, times 24 / their number (0 if there is none). Both are exact when all pairs are
    given. The second is unbiased for uniformly drawn pairs when every draw has two pairs with the
    same i (e.g. 5 or more pairs); with fewer, it is low by the chance of drawing none.

    Args:
        x: real MRI x_i per modality, each (B, 1, H, W).
        x_cr: cycle reconstructions x_cr,j,i (x_i to modality j and back), keyed (j, i).
        pairs: (j, i) pairs available; default all 12.
    """
    chosen = _checked_pairs(pairs)
    x = _checked_modalities("x", x)
    first = _total(mse(x[i], _pair("x_cr", x_cr, (j, i))) for j, i in chosen)
    given = set(chosen)
    triples = [(i, j, k) for i, j, k in ALL_TRIPLES if (j, i) in given and (k, i) in given]
    if not triples:
        return _scale(chosen) * first
    second = _total(mse(x_cr[(j, i)], x_cr[(k, i)]) for i, j, k in triples)
    return _scale(chosen) * first + len(ALL_TRIPLES) / len(triples) * second


def loss_code_1(
    code: Sequence[Tensor], code_t: Mapping[Pair, Tensor], pairs: Sequence[Pair] | None = None
) -> Tensor:
    """(11) Semantic consistency loss of reconstruction and translation training, Sec. 2.4.

    loss_code,1 = sum_{i} sum_{j != i} ||code_i - code_t,i,j||_2^2

    code_t,i,j is the semantic feature map of x_t,i,j (x_i translated to modality j); in our keys the
    term of pair (j, i) is ||code_j - code_t[(j, i)]||_2^2, the same 12 terms renamed.

    Args:
        code: code_i = EC(x_i) per modality, each (B, C, H/4, W/4).
        code_t: EC(x_t,j,i), keyed (j, i).
        pairs: (j, i) pairs to sum (scaled by 12 / len(pairs)); default all 12.
    """
    chosen = _checked_pairs(pairs)
    code = _checked_modalities("code", code)
    pair_sum = _total(mse(code[j], _pair("code_t", code_t, (j, i))) for j, i in chosen)
    return _scale(chosen) * pair_sum


def loss_lesion_1(label: Sequence[Tensor], label_r: Sequence[Tensor]) -> Tensor:
    """(12) Lesion segmentation loss of reconstruction and translation training, Sec. 2.4.

    loss_lesion,1 = sum_{i} ||label_i - label_r,i||_2^2

    Args:
        label: one-hot lesion label of x_i per modality, each (B, 4, H, W).
        label_r: label probabilities of the lesion guidance component of modality i on x_i.
    """
    return _sum_per_modality(("label", "label_r"), label, label_r)


def loss_d_2(
    d: Sequence[Tensor],
    c: Sequence[Tensor],
    d_g: Sequence[Tensor],
    c_g: Sequence[Tensor],
    fd_code_g: Tensor,
    fake_category: float = 1.0,
) -> Tensor:
    """(13) Discriminator loss of multimodal MRI synthesis training, Sec. 2.6.

    loss_d,2 = sum_{i} (||d_i - 1||_2^2 + ||d_g,i||_2^2 + ||c_i - i||_2^2 + ||c_g,i - i||_2^2)
               + ||FD(code_g)||_2^2

    Args:
        d: real/fake map of D on the real MRI x_i, per modality.
        c: category probabilities of D on x_i, per modality.
        d_g: real/fake map of D on the synthetic MRI x_g,i, per modality.
        c_g: category probabilities of D on x_g,i, per modality.
        fd_code_g: FD output on code_g = EC_r(fusion map) (negative sample; see (7)).
        fake_category: factor of the category terms ||c_g,i - i||_2^2 on synthetic MRI (see (7)).
    """
    d, c, d_g, c_g = (_checked_modalities(n, t) for n, t in (("d", d), ("c", c), ("d_g", d_g), ("c_g", c_g)))
    total = _total(
        mse(d[i], 1.0) + mse(d_g[i], 0.0) + _category(c[i], i) + fake_category * _category(c_g[i], i)
        for i in range(N_MODALITIES)
    )
    return total + mse(fd_code_g, 0.0)


def loss_g_2(d_g: Sequence[Tensor], c_g: Sequence[Tensor], fd_code_g: Tensor) -> Tensor:
    """(14) Adversarial and category guidance loss of multimodal MRI synthesis training, Sec. 2.6.

    loss_g,2 = sum_{i} (||d_g,i - 1||_2^2 + ||c_g,i - i||_2^2) + ||FD(code_g) - 1||_2^2

    Args:
        d_g: real/fake map of D on x_g,i, per modality.
        c_g: category probabilities of D on x_g,i, per modality.
        fd_code_g: FD output on code_g.
    """
    d_g, c_g = _checked_modalities("d_g", d_g), _checked_modalities("c_g", c_g)
    return _total(mse(d_g[i], 1.0) + _category(c_g[i], i) for i in range(N_MODALITIES)) + mse(fd_code_g, 1.0)


def loss_f(f: Tensor, f_g: Sequence[Tensor]) -> Tensor:
    """(15) Structural feature map consistency loss, Sec. 2.6.

    loss_f = sum_{i} ||f - f_g,i||_2^2

    f_g,i is Algorithm 1 applied to x_g,i. Algorithm 1 thresholds, so this term has no gradient with
    respect to x_g,i unless the caller uses a differentiable (soft) extraction.

    Args:
        f: input structural feature map (B, 1, H, W).
        f_g: structural feature map of each synthetic MRI x_g,i, per modality.
    """
    return _total(mse(f, fgi) for fgi in _checked_modalities("f_g", f_g))


def loss_lesion_2(label: Tensor, label_g: Sequence[Tensor]) -> Tensor:
    """(16) Lesion generation loss, Sec. 2.6.

    loss_lesion,2 = sum_{i} ||label - label_g,i||_2^2

    Args:
        label: one-hot input lesion label (B, 4, H, W), the one fused into the fusion map.
        label_g: label probabilities of the lesion guidance component of modality i on x_g,i.
    """
    return _total(mse(label, lgi) for lgi in _checked_modalities("label_g", label_g))


def loss_registration(
    x_g: Sequence[Tensor], x_gt: Mapping[Pair, Tensor], pairs: Sequence[Pair] | None = None
) -> Tensor:
    """(17) MRI registration loss, Sec. 2.6.

    loss_registration = sum_{i} sum_{j != i} ||x_g,i - x_gt,j,i||_2^2

    Args:
        x_g: synthetic MRI x_g,i = DC(code_g, onehot_i) per modality.
        x_gt: x_gt,j,i = DC(EC(x_g,j), onehot_i), keyed (j, i).
        pairs: (j, i) pairs to sum (scaled by 12 / len(pairs)); default all 12.
    """
    chosen = _checked_pairs(pairs)
    x_g = _checked_modalities("x_g", x_g)
    pair_sum = _total(mse(x_g[i], _pair("x_gt", x_gt, (j, i))) for j, i in chosen)
    return _scale(chosen) * pair_sum


def loss_code_2(code_g: Tensor, code_g_i: Sequence[Tensor], pairs: Sequence[Pair] | None = None) -> Tensor:
    """(18) Semantic consistency loss of multimodal MRI synthesis training, Sec. 2.6.

    loss_code,2 = sum_{i} ||code_g - code_g,i||_2^2 + sum_{i} sum_{j != i} ||code_g,i - code_g,j||_2^2

    The printed second sum reads "sum_{i != i} ||code_g,i - code_g,i||", a typo; we read it as the
    12 ordered pairs of different modalities (each unordered pair counted twice). Only the second sum
    is sampled by ``pairs``.

    Args:
        code_g: EC_r(fusion map), (B, C, H/4, W/4).
        code_g_i: EC(x_g,i) per modality, same shape.
        pairs: (j, i) pairs of the second sum (scaled by 12 / len(pairs)); default all 12.
    """
    chosen = _checked_pairs(pairs)
    code_g_i = _checked_modalities("code_g_i", code_g_i)
    first = _total(mse(code_g, cgi) for cgi in code_g_i)
    second = _total(mse(code_g_i[i], code_g_i[j]) for j, i in chosen)
    return first + _scale(chosen) * second


def loss_segmentation(label: Sequence[Tensor], label_r: Sequence[Tensor]) -> Tensor:
    """(19) Segmentation loss of the independently trained segmentors, Sec. 2.7; same form as (12).

    loss_segmentation = sum_{i} ||label_i - label_r,i||_2^2

    Args:
        label: one-hot supervised label per modality, each (B, 4, H, W).
        label_r: segmentation probabilities of the segmentor of modality i.
    """
    return loss_lesion_1(label, label_r)
