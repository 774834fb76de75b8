"""Known answers of the evaluation's metrics of issues 15 and 17, on hand-made inputs.

Bootstrap intervals (a constant difference collapses the interval to it; zero-mean noise straddles 0),
BraSyn's paired SSIM / PSNR (identical images score 1 and the cap; a shifted image scores less; a change
inside the tumour leaves the outside scores at 1), MMD (identical sets ~0, a shifted set more, the
median heuristic by hand), the modality classifier (right on its own modalities, ~0 on swapped ones),
the lesion contrast (a region at +3 sd reads 3), the histogram-matching baseline, the held-out set
(content leaks, the case-count refusal) and the paired Table 2 comparisons.
"""

import dataclasses
from pathlib import Path

import cv2
import numpy as np
import pytest
from hand_made import textured_brain

from models.data import RealSplit
from models.evaluation.comparisons import compare_rows, differences
from models.evaluation.fidelity import PSNR_CAP, masked_scores, paired_scores, percentile_clip
from models.evaluation.mmd import FEATURES, image_features, median_bandwidth, mmd2_unbiased, mmd_by_modality
from models.evaluation.modalities import ProbeConfig, contrast_table, probe_accuracy, train_probe
from models.evaluation.paper import PAPER_TABLE2
from models.evaluation.real import HeldOut, check_enough_cases, content_leaks
from models.evaluation.stats import bootstrap_interval, case_means, mean_sd, verdict
from models.evaluation.table2 import Curve, RowResult, RunScores, Table2Config, curve_rows
from models.evaluation.translation_table import baseline_input, histogram_baseline
from models.presets import get_preset
from mrisynth.conventions import MODALITIES

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# --- bootstrap ---------------------------------------------------------------------------------


def test_bootstrap_of_a_constant_difference_collapses_to_the_constant() -> None:
    interval = bootstrap_interval(np.full((3, 6), 0.125), np.random.default_rng(0), resamples=500)
    assert interval.estimate == interval.low == interval.high == pytest.approx(0.125)
    assert (interval.runs, interval.cases) == (3, 6) and verdict(interval) == "helps"
    assert verdict(bootstrap_interval(np.full((2, 5), -0.1), np.random.default_rng(0))) == "hurts"
    single = bootstrap_interval(np.array([[0.3]]), np.random.default_rng(0))
    assert single.low == single.high == 0.3


def test_bootstrap_of_zero_mean_noise_cannot_tell_and_of_a_clear_gain_helps() -> None:
    noise = np.random.default_rng(1).normal(0, 0.05, size=(4, 30))
    noise -= noise.mean()
    interval = bootstrap_interval(noise, np.random.default_rng(2))
    assert interval.low < 0 < interval.high and verdict(interval) == "cannot tell"
    gain = bootstrap_interval(noise + 0.2, np.random.default_rng(2))
    assert verdict(gain) == "helps" and gain.high - gain.low == pytest.approx(interval.high - interval.low)
    assert interval.estimate == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError, match="runs, cases"):
        bootstrap_interval(np.zeros(4), np.random.default_rng(0))


def test_case_means_and_mean_sd() -> None:
    scores = np.array([[1.0, 0.0], [0.0, 0.0], [0.5, 1.0]])
    assert case_means(scores, np.array([0, 0, 1]), 2).tolist() == [[0.5, 0.0], [0.5, 1.0]]
    with pytest.raises(ValueError, match="needs an image"):
        case_means(scores, np.array([0, 0, 0]), 2)
    assert mean_sd(np.array([1.0, 2.0, 3.0])) == (2.0, 1.0) and mean_sd(np.array([4.0])) == (4.0, 0.0)


def _row_result(number: int, case_dice: list[np.ndarray]) -> RowResult:
    runs = [
        RunScores(
            seed=1000 * r,
            dice=float(d.mean()),
            mse=0.0,
            dice_by_modality=d.mean(0),
            case_dice=d,
            curve=Curve(),
        )
        for r, d in enumerate(case_dice)
    ]
    return RowResult(
        row=PAPER_TABLE2[number],
        counts={"real": 1, "synthetic": 0, "enhanced": 0},
        phases=[],
        dice=max(run.dice for run in runs),
        mse=0.0,
        dice_by_modality={},
        run_dice=[run.dice for run in runs],
        curve=Curve(),
        runs=runs,
    )


def test_paired_comparisons_read_the_interval() -> None:
    rng = np.random.default_rng(0)
    reference = [rng.uniform(0.3, 0.7, size=(5, 4)) for _ in range(3)]
    better = [d + 0.1 for d in reference]
    noisy = [d + rng.normal(0, 0.05, size=d.shape) for d in reference]
    rows = [
        _row_result(1, reference),
        _row_result(25, better),
        _row_result(13, noisy),
        _row_result(2, reference),
    ]
    by_pair = {(c.row, c.reference): c for c in compare_rows(rows, seed=0, resamples=300)}
    assert set(by_pair) == {(25, 1), (13, 1)}  # NO.6 and NO.19 were not trained
    gain = by_pair[(25, 1)]
    assert gain.verdict == "helps" and gain.interval.low == pytest.approx(0.1) == gain.interval.high
    assert gain.by_modality["t1"].estimate == pytest.approx(0.1)
    assert gain.paper == pytest.approx(PAPER_TABLE2[25].dice - PAPER_TABLE2[1].dice)
    assert differences(rows[1], rows[0]).shape == (3, 5, 4)
    with pytest.raises(ValueError, match="runs x cases"):
        differences(_row_result(25, better[:2]), rows[0])


# --- BraSyn's paired SSIM and PSNR -------------------------------------------------------------


def test_percentile_clip_scales_to_the_unit_range_ignoring_outliers() -> None:
    image = textured_brain()
    image[0, 0] = 1e6
    clipped = percentile_clip(image)
    assert clipped.min() == 0.0 and clipped.max() == 1.0 and clipped.dtype == np.float32
    assert np.allclose(percentile_clip(3 * image + 7), clipped, atol=1e-6)
    assert not percentile_clip(np.ones((4, 4))).any()


def test_identical_images_score_ssim_one_and_the_psnr_cap() -> None:
    image = textured_brain()
    tumour = np.zeros(image.shape, bool)
    tumour[28:36, 28:36] = True
    assert masked_scores(image, image, tumour) == pytest.approx((1.0, 1.0, PSNR_CAP, PSNR_CAP))
    ssim_in, ssim_out, psnr_in, psnr_out = masked_scores(image, image, np.zeros_like(tumour))
    assert np.isnan(ssim_in) and np.isnan(psnr_in) and ssim_out == pytest.approx(1.0)


def test_a_shifted_image_scores_lower_and_more_so_the_further() -> None:
    image = textured_brain()
    tumour = np.zeros(image.shape, bool)
    tumour[24:40, 24:40] = True
    scores = [masked_scores(image, textured_brain(shift=shift), tumour) for shift in (1, 3, 6)]
    for k in range(4):
        values = [s[k] for s in scores]
        assert values[0] > values[1] > values[2], k
    assert scores[0][1] < 1.0 and scores[0][3] < PSNR_CAP


def test_a_change_inside_the_tumour_leaves_the_outside_scores_perfect() -> None:
    real = textured_brain()
    tumour = np.zeros(real.shape, bool)
    tumour[24:40, 24:40] = True
    synthetic = real.copy()
    # the tumour's pixels shuffled: another image inside, the same histogram, so the same clipping
    synthetic[tumour] = np.random.default_rng(0).permutation(real[tumour])
    ssim_in, ssim_out, psnr_in, psnr_out = masked_scores(real, synthetic, tumour)
    assert ssim_in < 0.99 and psnr_in < 40  # BraSyn's SSIM of a masked whole image: the zeros agree
    assert (ssim_out, psnr_out) == (pytest.approx(1.0), PSNR_CAP)
    scores = paired_scores(real[None, None], synthetic[None, None], tumour[None].astype(np.uint8), ("t1",))
    assert scores.ssim_tumour.shape == (1, 1) and scores.means()["t1"]["ssim_tumour"] == pytest.approx(
        ssim_in
    )


# --- MMD ---------------------------------------------------------------------------------------


def test_mmd_of_identical_and_shifted_sets() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 5))
    sigma = median_bandwidth(x)
    assert abs(mmd2_unbiased(x, x, sigma)) < 0.02  # the U-statistic of one set with itself: O(1/n) below 0
    same = rng.normal(size=(200, 5))
    shifted = same + np.array([1.5, 0, 0, 0, 0])
    assert abs(mmd2_unbiased(x, same, sigma)) < 0.02 < mmd2_unbiased(x, shifted, sigma)
    line = np.array([[0.0], [1.0], [3.0]])  # pairwise distances 1, 2, 3
    assert median_bandwidth(line) == 2.0
    two = np.array([[0.0], [1.0]])
    k = np.exp(-1 / 2)  # kernel of points 1 apart at sigma 1
    assert mmd2_unbiased(two, two + 10, 1.0) == pytest.approx(2 * k, abs=1e-9)


def test_mmd_by_modality_is_small_for_the_same_images_and_large_for_swapped_modalities() -> None:
    images = np.stack(
        [
            np.stack([(1 + k) * textured_brain(32, seed=4 * n + k) ** (1 + k % 2) for k in range(4)])
            for n in range(12)
        ]
    )
    brain = (images[:, 0] > 0).astype(np.uint8)
    assert image_features(images[:, 0], brain).shape == (12, FEATURES)
    swapped = images[:, ::-1]
    result = mmd_by_modality((images, brain), (images, brain), (swapped, brain), seed=0)
    for m in MODALITIES:
        assert abs(result.real[m]) < 0.15 < result.synthetic[m]


# --- modality classifier and lesion contrast ---------------------------------------------------


def _modal_images(n: int, seed: int) -> np.ndarray:
    """(n, 4, 32, 32): four 'modalities' of distinct brightness and texture scale."""
    rng = np.random.default_rng(seed)
    out = np.zeros((n, 4, 32, 32), np.float32)
    for i in range(n):
        for k in range(4):
            texture = cv2.GaussianBlur(rng.normal(size=(32, 32)).astype(np.float32), (0, 0), 0.5 + 1.5 * k)
            out[i, k] = 3 * (k - 1.5) + texture * (1 + k)
    return out


def test_modality_classifier_names_its_modalities_and_fails_on_swapped_ones() -> None:
    train = _modal_images(24, seed=0)
    probe = train_probe(train, ProbeConfig(ngf=4, steps=120, batch_size=16, lr=3e-3))
    test = _modal_images(8, seed=1)
    assert min(probe_accuracy(probe, test).values()) >= 0.9
    swapped = test[:, [1, 0, 3, 2]]
    assert max(probe_accuracy(probe, swapped).values()) <= 0.1


def test_lesion_contrast_reads_a_region_at_three_healthy_standard_deviations() -> None:
    rng = np.random.default_rng(0)
    images = rng.normal(size=(4, 4, 32, 32)).astype(np.float32)
    labels = np.zeros((4, 32, 32), np.uint8)
    labels[:, 10:16, 10:16] = 2
    images[:, 2][labels == 2] += 3.0  # bright edema on T2 only
    brain = np.ones((4, 32, 32), np.uint8)
    table = contrast_table(images, labels, brain)
    assert table["t2"][2] == pytest.approx(3.0, abs=0.4)
    assert abs(table["t1"][2]) < 0.4 and np.isnan(table["t1"][1]) and np.isnan(table["flair"][4])


# --- translation baseline ----------------------------------------------------------------------


def test_histogram_baseline_takes_the_reference_distribution() -> None:
    rng = np.random.default_rng(0)
    source = rng.uniform(0, 1, size=(3, 16, 16)).astype(np.float32)
    reference = rng.normal(5, 2, size=(10, 16, 16)).astype(np.float32)
    matched = histogram_baseline(source, reference)
    assert matched.shape == source.shape
    assert np.quantile(matched, 0.5) == pytest.approx(np.quantile(reference, 0.5), abs=0.3)
    order = np.argsort(source[0].ravel())
    assert np.all(np.diff(matched[0].ravel()[order]) >= 0)  # a monotone map of the source
    assert baseline_input("t1") == "t1ce" and baseline_input("flair") == "t1"


# --- held-out set and Table 2 bookkeeping ------------------------------------------------------


def _split(images: np.ndarray, cases: tuple[str, ...]) -> RealSplit:
    return RealSplit("train", images, np.zeros((len(images), *images.shape[2:]), np.uint8), cases)


def test_content_leaks_and_the_case_count_refusal() -> None:
    rng = np.random.default_rng(0)
    train = _split(rng.normal(size=(4, 4, 8, 8)).astype(np.float32), ("a",))
    held_images = rng.normal(size=(4, 4, 8, 8)).astype(np.float32)
    held_images[3] = train.images[2]
    held = HeldOut(_split(held_images, ("x", "y")), np.array([0, 0, 1, 1]), Path("held"), separate=True)
    assert content_leaks(train, held) == ["y"]
    check_enough_cases(held, 2)
    with pytest.raises(ValueError, match="--test-data DIR"):
        check_enough_cases(held, 5)


def test_curve_rows_and_the_segmentor_settings() -> None:
    assert curve_rows(10, 4).tolist() == [0, 3, 6, 9] and curve_rows(3, 64).tolist() == [0, 1, 2]
    preset = get_preset("demo")
    tuned = Table2Config(lr=1e-3, beta1=0.9).segmentor_preset(preset)
    assert (tuned.segmentation_lr, tuned.segmentation_beta1) == (1e-3, 0.9)
    assert Table2Config().segmentor_preset(preset) == dataclasses.replace(preset)


def test_a_noisy_background_costs_nothing_once_set_to_the_minimum_outside_the_brain() -> None:
    real = textured_brain()
    brain = real > 0
    noise = np.random.default_rng(0).uniform(0.0, 0.5, real.shape)
    synthetic = np.where(brain, real, noise).astype(np.float32)
    synthetic[0, 0] = real.min()  # the background level, as in the real image
    labels = np.zeros((1, *real.shape), np.uint8)
    labels[0, 28:34, 28:34] = 2
    noisy = paired_scores(real[None, None], synthetic[None, None], labels, ("t2",))
    masked = paired_scores(real[None, None], synthetic[None, None], labels, ("t2",), brain[None])
    assert noisy.ssim_healthy[0, 0] < 0.9
    assert masked.ssim_healthy[0, 0] == pytest.approx(1.0) and masked.psnr_healthy[0, 0] == PSNR_CAP
