"""Losses (1)-(19) on hand-made tensors whose values are known by hand, and pair sampling."""

from collections.abc import Callable
from itertools import combinations

import pytest
import torch
from torch import Tensor

from models.losses import (
    ALL_PAIRS,
    ALL_TRIPLES,
    loss_code_1,
    loss_code_2,
    loss_code_d_f,
    loss_cycle,
    loss_d_1,
    loss_d_2,
    loss_d_f,
    loss_f,
    loss_g_1,
    loss_g_2,
    loss_g_f,
    loss_lesion_1,
    loss_lesion_2,
    loss_normal,
    loss_reconstruction,
    loss_reconstruction_f,
    loss_reconstruction_mask,
    loss_registration,
    loss_segmentation,
    mse,
    sample_pairs,
)

M = 4
SHAPE = (2, 1, 4, 4)  # 16 pixels per image
ZEROS = torch.zeros(SHAPE)
ONES = torch.ones(SHAPE)


def value(t: Tensor) -> float:
    return float(t.item())


def two_pixels(v: float = 1.0) -> Tensor:
    """Zeros except two pixels set to ``v`` in each image: mse against zeros is 2 v^2 / 16."""
    t = torch.zeros(SHAPE)
    t[:, 0, 1, 2] = v
    t[:, 0, 3, 0] = v
    return t


def category(i: int, shape: tuple[int, ...] = (2, M, 2, 2)) -> Tensor:
    """Category probabilities of D all on modality i."""
    c = torch.zeros(shape)
    c[:, i] = 1.0
    return c


def per_pair(make: Callable[[int, int], Tensor]) -> dict[tuple[int, int], Tensor]:
    return {(j, i): make(j, i) for j, i in ALL_PAIRS}


def test_pair_and_triple_counts() -> None:
    assert len(ALL_PAIRS) == 12 and all(j != i for j, i in ALL_PAIRS)
    assert len(ALL_TRIPLES) == 24


def test_mse_is_the_mean_of_squares() -> None:
    assert value(mse(two_pixels(), ZEROS)) == pytest.approx(2 / 16)
    assert value(mse(ONES * 3.0, 1.0)) == pytest.approx(4.0)


def test_loss_code_d_f_1() -> None:
    assert value(loss_code_d_f(ONES, ZEROS)) == 0.0
    assert value(loss_code_d_f(ZEROS, ONES)) == 2.0
    assert value(loss_code_d_f(ONES * 0.5, ZEROS)) == pytest.approx(0.25)


def test_loss_d_f_2() -> None:
    assert value(loss_d_f(ONES, ZEROS)) == 0.0
    assert value(loss_d_f(ZEROS, ONES)) == 2.0


def test_loss_g_f_3() -> None:
    assert value(loss_g_f(ONES, ONES)) == 0.0
    assert value(loss_g_f(ZEROS, ONES)) == 1.0
    assert value(loss_g_f(ZEROS, ZEROS)) == 2.0


def test_loss_normal_4() -> None:
    assert value(loss_normal(torch.zeros(2, 4, 3, 3), torch.zeros(2, 4, 3, 3))) == 0.0
    logvar = torch.full((2, 4, 3, 3), 2.0 * torch.log(torch.tensor(3.0)).item())  # exp(0.5 logvar) = 3
    # mean(code_mean)^2 + (mean(std) - 1)^2 = 2^2 + (3 - 1)^2
    assert value(loss_normal(torch.full((2, 4, 3, 3), 2.0), logvar)) == pytest.approx(8.0)


def test_loss_reconstruction_f_5() -> None:
    assert value(loss_reconstruction_f(two_pixels(), two_pixels(), ZEROS)) == 0.0
    # f_r has 2 pixels where f has none (2/16); one of them lies outside the brain (1/16)
    background = torch.zeros(SHAPE)
    background[:, 0, 3, :] = 1.0
    assert value(loss_reconstruction_f(ZEROS, two_pixels(), background)) == pytest.approx(3 / 16)
    brain_mask = 1.0 - background
    assert value(loss_reconstruction_f(ZEROS, two_pixels(), 1.0 - brain_mask)) == pytest.approx(3 / 16)


def test_loss_reconstruction_mask_6() -> None:
    background = torch.zeros(SHAPE)
    background[:, 0, 3, :] = 1.0  # bottom row outside the brain, the pixel (3, 0) of two_pixels()
    f = torch.zeros(SHAPE)
    f[:, 0, 0, 0] = 1.0  # structure inside the brain only
    assert value(loss_reconstruction_mask(background, background, f, f, f, background)) == 0.0
    # mask_r misses the background row (4/16); f_r and f_g each have one pixel on background (1/16 each)
    got = loss_reconstruction_mask(background, ZEROS, f, two_pixels(), two_pixels(), background)
    assert value(got) == pytest.approx(4 / 16 + 0 + 0 + 1 / 16)
    got = loss_reconstruction_mask(background, background, f, two_pixels(), two_pixels(), background)
    assert value(got) == pytest.approx(0 + 0 + 1 / 16 + 1 / 16)


def test_loss_d_1_7() -> None:
    d_fake = per_pair(lambda j, i: torch.zeros(2, 1, 2, 2))
    c_right = per_pair(lambda j, i: category(i))
    fd_real = [torch.ones(2, 1, 2, 2)] * M
    assert value(loss_d_1(d_fake, c_right, fd_real)) == 0.0
    d_real = per_pair(lambda j, i: torch.ones(2, 1, 2, 2))
    assert value(loss_d_1(d_real, c_right, fd_real)) == 12.0
    assert value(loss_d_1(d_fake, c_right, [torch.zeros(2, 1, 2, 2)] * M)) == 4.0
    # a wrong modality puts 1 on two of four channels: 2/4 per pair
    c_wrong = per_pair(lambda j, i: category(j))
    assert value(loss_d_1(d_fake, c_wrong, fd_real)) == pytest.approx(12 * 0.5)
    # uniform probabilities: (0.75^2 + 3 * 0.25^2) / 4 = 0.1875 per pair
    c_uniform = per_pair(lambda j, i: torch.full((2, M, 2, 2), 0.25))
    assert value(loss_d_1(d_fake, c_uniform, fd_real)) == pytest.approx(12 * 0.1875)
    # the authors' code: the category head learns from real images only
    assert value(loss_d_1(d_fake, c_wrong, fd_real, fake_category=0.0)) == 0.0


def test_loss_g_1_8() -> None:
    d_real = per_pair(lambda j, i: torch.ones(2, 1, 2, 2))
    c_right = per_pair(lambda j, i: category(i))
    assert value(loss_g_1(d_real, c_right)) == 0.0
    d_fake = per_pair(lambda j, i: torch.zeros(2, 1, 2, 2))
    assert value(loss_g_1(d_fake, c_right)) == 12.0


def test_loss_reconstruction_9() -> None:
    x = [torch.randn(SHAPE) for _ in range(M)]
    assert value(loss_reconstruction(x, x)) == 0.0
    x_r = [x[0] + two_pixels(), x[1], x[2], x[3] + two_pixels(0.5)]
    assert value(loss_reconstruction(x, x_r)) == pytest.approx(2 / 16 + 2 * 0.25 / 16)


def test_loss_cycle_10() -> None:
    x = [torch.randn(SHAPE) for _ in range(M)]
    assert value(loss_cycle(x, per_pair(lambda j, i: x[i]))) == 0.0
    # all cycles off by 1 and equal to each other: 12 * 1 + 0
    assert value(loss_cycle(x, per_pair(lambda j, i: x[i] + 1.0))) == pytest.approx(12.0)
    # x_cr,j,i = x_i + j: sum_i sum_{j != i} j^2 = 3 * (0 + 1 + 4 + 9) = 42, and
    # sum_i sum_{j, k != i, k != j} (j - k)^2 = 12 (i=0) + 28 (i=1) + 28 (i=2) + 12 (i=3) = 80
    assert value(loss_cycle(x, per_pair(lambda j, i: x[i] + float(j)))) == pytest.approx(42.0 + 80.0)


def test_loss_code_1_11() -> None:
    code = [torch.randn(2, 8, 2, 2) for _ in range(M)]
    assert value(loss_code_1(code, per_pair(lambda j, i: code[j]))) == 0.0
    assert value(loss_code_1(code, per_pair(lambda j, i: code[j] + 2.0))) == pytest.approx(12 * 4.0)
    # the code of x_t,j,i is compared with the code of its source x_j, not with code_i
    assert value(loss_code_1(code, per_pair(lambda j, i: code[i]))) > 0.0


def test_loss_lesion_1_12_and_segmentation_19() -> None:
    label = torch.zeros(2, 4, 4, 4)
    label[:, 0] = 1.0
    label[:, 2, 1:3, 1:3] = 1.0
    label[:, 0, 1:3, 1:3] = 0.0
    labels = [label] * M
    assert value(loss_lesion_1(labels, labels)) == 0.0
    assert value(loss_segmentation(labels, labels)) == 0.0
    uniform = [torch.full((2, 4, 4, 4), 0.25)] * M
    assert value(loss_lesion_1(labels, uniform)) == pytest.approx(M * 0.1875)
    assert value(loss_segmentation(labels, uniform)) == pytest.approx(M * 0.1875)


def test_loss_d_2_13() -> None:
    ones, zeros = [torch.ones(2, 1, 2, 2)] * M, [torch.zeros(2, 1, 2, 2)] * M
    right = [category(i) for i in range(M)]
    assert value(loss_d_2(ones, right, zeros, right, torch.zeros(2, 1, 2, 2))) == 0.0
    assert value(loss_d_2(zeros, right, ones, right, torch.zeros(2, 1, 2, 2))) == 8.0
    assert value(loss_d_2(ones, right, zeros, right, torch.ones(2, 1, 2, 2))) == 1.0
    wrong = [category((i + 1) % M) for i in range(M)]
    assert value(loss_d_2(ones, wrong, zeros, right, torch.zeros(2, 1, 2, 2))) == pytest.approx(M * 0.5)
    assert value(loss_d_2(ones, right, zeros, wrong, torch.zeros(2, 1, 2, 2))) == pytest.approx(M * 0.5)
    no_fake = loss_d_2(ones, right, zeros, wrong, torch.zeros(2, 1, 2, 2), fake_category=0.0)
    assert value(no_fake) == 0.0


def test_loss_g_2_14() -> None:
    ones, zeros = [torch.ones(2, 1, 2, 2)] * M, [torch.zeros(2, 1, 2, 2)] * M
    right = [category(i) for i in range(M)]
    assert value(loss_g_2(ones, right, torch.ones(2, 1, 2, 2))) == 0.0
    assert value(loss_g_2(zeros, right, torch.zeros(2, 1, 2, 2))) == 5.0


def test_loss_f_15() -> None:
    f = two_pixels()
    assert value(loss_f(f, [f] * M)) == 0.0
    assert value(loss_f(f, [f, f, ZEROS, f])) == pytest.approx(2 / 16)


def test_loss_lesion_2_16() -> None:
    label = torch.zeros(2, 4, 4, 4)
    label[:, 0] = 1.0
    assert value(loss_lesion_2(label, [label] * M)) == 0.0
    wrong = torch.zeros(2, 4, 4, 4)
    wrong[:, 1] = 1.0  # every pixel in the wrong class: 2 of 4 channels off
    assert value(loss_lesion_2(label, [label, wrong, label, wrong])) == pytest.approx(2 * 0.5)


def test_loss_registration_17() -> None:
    x_g = [torch.randn(SHAPE) for _ in range(M)]
    assert value(loss_registration(x_g, per_pair(lambda j, i: x_g[i]))) == 0.0
    assert value(loss_registration(x_g, per_pair(lambda j, i: x_g[i] + 0.5))) == pytest.approx(12 * 0.25)


def test_loss_code_2_18() -> None:
    code_g = torch.randn(2, 8, 2, 2)
    assert value(loss_code_2(code_g, [code_g] * M)) == 0.0
    # code_g,i = code_g + i: sum_i i^2 = 14, sum_i sum_{j != i} (i - j)^2 = 2 * (1+4+9+1+4+1) = 40
    assert value(loss_code_2(code_g, [code_g + float(i) for i in range(M)])) == pytest.approx(14.0 + 40.0)


def _pair_losses() -> dict[str, tuple[Callable[..., Tensor], tuple[object, ...]]]:
    """Each pair-summed loss with random inputs, as (function, args before ``pairs``)."""
    torch.manual_seed(0)
    x = [torch.randn(SHAPE) for _ in range(M)]
    code = [torch.randn(2, 8, 2, 2) for _ in range(M)]
    return {
        "d_1": (
            loss_d_1,
            (
                per_pair(lambda j, i: torch.randn(2, 1, 2, 2)),
                per_pair(lambda j, i: torch.rand(2, M, 2, 2)),
                [torch.randn(2, 1, 2, 2) for _ in range(M)],
            ),
        ),
        "g_1": (
            loss_g_1,
            (per_pair(lambda j, i: torch.randn(2, 1, 2, 2)), per_pair(lambda j, i: torch.rand(2, M, 2, 2))),
        ),
        "cycle": (loss_cycle, (x, per_pair(lambda j, i: torch.randn(SHAPE)))),
        "code_1": (loss_code_1, (code, per_pair(lambda j, i: torch.randn(2, 8, 2, 2)))),
        "registration": (loss_registration, (x, per_pair(lambda j, i: torch.randn(SHAPE)))),
        "code_2": (loss_code_2, (code[0], code)),
    }


@pytest.mark.parametrize("name", ["d_1", "g_1", "cycle", "code_1", "registration", "code_2"])
def test_all_pairs_give_the_full_sum_exactly(name: str) -> None:
    fn, args = _pair_losses()[name]
    full = value(fn(*args))
    assert value(fn(*args, pairs=list(reversed(ALL_PAIRS)))) == pytest.approx(full, rel=1e-6)


@pytest.mark.parametrize(
    ("name", "n"), [("d_1", 3), ("g_1", 1), ("code_1", 7), ("registration", 4), ("code_2", 2), ("cycle", 5)]
)
def test_scaled_sampled_sum_equals_the_full_sum_in_expectation(name: str, n: int) -> None:
    fn, args = _pair_losses()[name]
    full = value(fn(*args))
    subsets = list(combinations(ALL_PAIRS, n))
    mean = sum(value(fn(*args, pairs=list(s))) for s in subsets) / len(subsets)
    assert mean == pytest.approx(full, rel=1e-5)
    assert value(fn(*args, pairs=list(subsets[0]))) != pytest.approx(full, rel=1e-5)


def test_cycle_second_sum_is_biased_when_draws_may_share_no_modality() -> None:
    """Documented limit: with 2 pairs the triple term is often absent, so the mean is low."""
    x = [torch.zeros(SHAPE) for _ in range(M)]
    x_cr = per_pair(lambda j, i: torch.full(SHAPE, float(j)))  # first sum 42, second 80
    subsets = list(combinations(ALL_PAIRS, 2))
    mean = sum(value(loss_cycle(x, x_cr, pairs=list(s))) for s in subsets) / len(subsets)
    assert mean == pytest.approx(42.0 + 80.0 * 12 / 66)  # 12 of the 66 draws share an i


def test_sample_pairs() -> None:
    generator = torch.Generator().manual_seed(0)
    pairs = sample_pairs(5, generator)
    assert len(pairs) == len(set(pairs)) == 5 and set(pairs) <= set(ALL_PAIRS)
    with pytest.raises(ValueError):
        sample_pairs(13)


def test_bad_pairs_and_inputs_are_rejected() -> None:
    x = [torch.zeros(SHAPE) for _ in range(M)]
    x_gt = per_pair(lambda j, i: torch.zeros(SHAPE))
    for pairs in ([], [(1, 1)], [(0, 1), (0, 1)], [(4, 0)]):
        with pytest.raises(ValueError, match="pairs"):
            loss_registration(x, x_gt, pairs=pairs)
    with pytest.raises(ValueError, match="no entry"):
        loss_registration(x, {(0, 1): torch.zeros(SHAPE)}, pairs=[(0, 1), (1, 0)])
    with pytest.raises(ValueError, match="one tensor per modality"):
        loss_registration(x[:3], x_gt)
