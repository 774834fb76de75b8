"""Known answers for the terms of the registered objective (models.registered_losses) and the alarms."""

import math
from itertools import combinations

import pytest
import torch

from models import registered_losses as registered
from models.alarms import ALARM_NAMES, collapse_alarms, lesion_contrast, masked_correlation
from models.losses import ALL_PAIRS, loss_lesion_1

N = 4
SQUARED_GAPS = sum((i - j) ** 2 for j, i in ALL_PAIRS)
"""sum over the 12 ordered pairs of (i - j)^2 = 40: every pair term when image i is the constant i."""


def constant(value: float, shape: tuple[int, ...] = (1, 1, 2, 2)) -> torch.Tensor:
    return torch.full(shape, float(value))


def test_translation_pair_is_zero_for_the_real_target_and_counts_a_copied_source() -> None:
    x = [constant(i) for i in range(N)]
    assert registered.loss_translation_pair(x, {(j, i): x[i] for j, i in ALL_PAIRS}).item() == 0.0
    copies = {(j, i): x[j] for j, i in ALL_PAIRS}
    assert registered.loss_translation_pair(x, copies).item() == pytest.approx(SQUARED_GAPS)
    assert registered.loss_translation_pair(x, copies, [(0, 1)]).item() == pytest.approx(12 * 1.0)


def test_synthesis_pair_sums_the_four_modalities() -> None:
    x = [constant(i) for i in range(N)]
    assert registered.loss_synthesis_pair(x, [xi + 1 for xi in x]).item() == pytest.approx(4.0)
    assert registered.loss_synthesis_pair(x, x).item() == 0.0


def test_code_registered_is_zero_for_one_code_per_slice() -> None:
    assert registered.loss_code_registered([constant(3.0)] * N).item() == 0.0
    codes = [constant(i) for i in range(N)]
    assert registered.loss_code_registered(codes).item() == pytest.approx(SQUARED_GAPS)


@pytest.mark.parametrize("k", [1, 3, 6])
def test_pair_subsets_are_unbiased(k: int) -> None:
    """The mean of the scaled sum over every k-subset of pairs is the exact sum over all 12."""
    generator = torch.Generator().manual_seed(0)
    x = [torch.randn(2, 1, 4, 4, generator=generator) for _ in range(N)]
    x_t = {pair: torch.randn(2, 1, 4, 4, generator=generator) for pair in ALL_PAIRS}
    codes = [torch.randn(2, 3, 2, 2, generator=generator) for _ in range(N)]
    for exact, estimate in (
        (registered.loss_translation_pair(x, x_t), lambda s: registered.loss_translation_pair(x, x_t, s)),
        (registered.loss_code_registered(codes), lambda s: registered.loss_code_registered(codes, s)),
    ):
        subsets = list(combinations(ALL_PAIRS, k))
        mean = sum(estimate(list(subset)).item() for subset in subsets) / len(subsets)
        assert mean == pytest.approx(exact.item(), rel=1e-5)


def test_category_guidance_and_classifier_cross_entropy() -> None:
    uniform = torch.zeros(2, N)
    logits_t = {pair: uniform for pair in ALL_PAIRS}
    assert registered.loss_category([uniform] * N, logits_t).item() == pytest.approx(16 * math.log(4))
    subset = [(0, 1), (2, 3)]
    assert registered.loss_category([uniform] * N, logits_t, subset).item() == pytest.approx(16 * math.log(4))
    sure = [100.0 * torch.eye(N)[i].expand(2, N) for i in range(N)]
    assert registered.loss_category(sure, {(j, i): sure[i] for j, i in ALL_PAIRS}).item() < 1e-6
    assert registered.loss_classifier([uniform] * N).item() == pytest.approx(4 * math.log(4))
    wrong = [100.0 * torch.eye(N)[(i + 1) % N].expand(2, N) for i in range(N)]
    assert registered.loss_classifier(wrong).item() == pytest.approx(4 * 100.0, rel=1e-3)


def test_dice_ce_known_answers() -> None:
    label = torch.zeros(1, 4, 2, 2)
    label[0, 0] = 1.0
    label[0, 0, 0, 0], label[0, 2, 0, 0] = 0.0, 1.0
    assert registered.dice_ce(label, label).item() == pytest.approx(0.0, abs=1e-6)
    uniform = torch.full((1, 4, 2, 2), 0.25)
    background = torch.zeros(1, 4, 2, 2)
    background[0, 0] = 1.0
    # each lesion class: no label pixel, predicted mass 4 * 0.25 = 1 -> Dice (0 + 1) / (1 + 0 + 1) = 0.5
    assert registered.dice_ce(background, uniform).item() == pytest.approx(0.5 + math.log(4), rel=1e-6)


def test_loss_lesion_picks_dice_ce_or_the_printed_mse() -> None:
    label = torch.zeros(2, 4, 4, 4)
    label[:, 0] = 1.0
    label_r = [torch.softmax(torch.randn(2, 4, 4, 4), 1) for _ in range(N)]
    assert registered.loss_lesion("mse", label, label_r).item() == pytest.approx(
        loss_lesion_1([label] * N, label_r).item()
    )
    expected = sum(registered.dice_ce(label, probabilities).item() for probabilities in label_r)
    assert registered.loss_lesion("dice_ce", label, label_r).item() == pytest.approx(expected, rel=1e-6)


def test_f_outside_ignores_the_fused_lesion() -> None:
    f, lesion = constant(1.0), torch.zeros(1, 1, 2, 2)
    lesion[..., 0, :] = 1.0
    assert registered.loss_f_outside(f, [constant(0.0)] * N, lesion).item() == pytest.approx(4 * 0.5)
    f_without_lesion = f * (1 - lesion)
    assert (
        registered.loss_f_outside(f_without_lesion, [constant(1.0)] * N, lesion).item() == 0.0
    )  # edges in it


def test_alarm_helpers_known_answers() -> None:
    generator = torch.Generator().manual_seed(1)
    a, mask = torch.randn(2, 1, 6, 6, generator=generator), torch.ones(2, 1, 6, 6)
    assert masked_correlation(a, 3 * a + 1, mask).tolist() == pytest.approx([1.0, 1.0], abs=1e-5)
    assert masked_correlation(a, -a, mask).tolist() == pytest.approx([-1.0, -1.0], abs=1e-5)
    image, lesion = torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 4, 4)
    image[..., :2] = torch.tensor([1.0, -1.0]).repeat(4, 1)  # healthy half: mean 0, std 1
    lesion[..., 2:] = 1.0
    image[..., 2:] = -2.0
    assert lesion_contrast(image, lesion, torch.ones_like(lesion)).item() == pytest.approx(-2.0)


def test_collapse_alarms_see_a_collapse_and_a_copied_source() -> None:
    generator = torch.Generator().manual_seed(2)
    x = [torch.randn(2, 1, 8, 8, generator=generator) for _ in range(N)]
    pairs = [(0, 1), (2, 3)]
    copies = {(j, i): x[j] for j, i in pairs}
    brain, lesion = torch.ones(2, 1, 8, 8), torch.zeros(2, 1, 8, 8)
    lesion[..., :2, :2] = 1.0
    same = [x[0]] * N
    sure = [100.0 * torch.eye(N)[i].expand(2, N) for i in range(N)]
    alarms = collapse_alarms(x, copies, pairs, same, sure, brain, lesion)
    assert tuple(alarms) == ALARM_NAMES
    assert alarms["corr_source"].item() == pytest.approx(1.0, abs=1e-5)
    assert alarms["spread"].item() == 0.0
    assert alarms["cl_accuracy"].item() == 1.0
    assert alarms["contrast_t1"].item() == pytest.approx(alarms["contrast_flair"].item())
