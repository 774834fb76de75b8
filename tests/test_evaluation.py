"""``mrisynth evaluate``: each metric on hand-made inputs with a known answer, and one tiny run end to end.

The metrics are checked where the answer is known without the code: identical sets (Dice 1, SWD 0,
MS-SSIM 1), disjoint sets (Dice 0), shifted images (lower MS-SSIM and registration Dice), an affine
change of intensity (Algorithm 1 maps unchanged, registration Dice 1). The end-to-end test exports
random-init networks (ngf 4, 32 x 32, ``1SEG``, MG's head set to "brain everywhere": conftest's
``brain_everywhere_networks``, as ``test_pipeline.py``'s), takes the tiny labeled cases of conftest's
``brats`` and runs ``mrisynth evaluate --preset test`` for a few steps; random networks cannot pass
the lesion filter at 0.95, so the run also takes the filter's fallback path.
"""

import csv
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from hand_made import textured_brain

from cli.main import main
from models.evaluation.augmentation import AugmentationConfig, augment_slice
from models.evaluation.metrics import (
    dice,
    mean_pairwise_ms_ssim,
    ms_ssim,
    ms_ssim_scales,
    onehot,
    segmentation_scores,
)
from models.evaluation.paper import DEFAULT_ROWS, PAPER_TABLE2, amount, table2_rows
from models.evaluation.registration import MODALITY_PAIRS, between_modalities, registration
from models.evaluation.swd import (
    SwdConfig,
    laplacian_pyramid,
    pyramid_levels,
    sliced_wasserstein,
    swd_per_level,
)
from models.evaluation.table1 import FILTER_THRESHOLDS, filter_pass_rates, segment
from models.evaluation.table2 import Table2Data, amount_count, phases, required_samples
from mrisynth.conventions import LABELS, MODALITIES
from mrisynth.structure import structural_feature_map
from worker.sessions import Synthesizer

SIZE = 32
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _brain(size: int = 64, shift: int = 0, seed: int = 0) -> np.ndarray:
    return textured_brain(size, shift, seed, stripes=True)


# --- Dice and MSE ------------------------------------------------------------------------------


def test_dice_known_answers() -> None:
    a = np.zeros((2, 8, 8), np.uint8)
    a[:, 2:4, 2:4] = 1
    b = np.zeros_like(a)
    b[0, 2:4, 2:4] = 1
    b[1, 5:7, 5:7] = 1
    assert dice(a, a).tolist() == [1.0, 1.0]
    assert dice(a, b).tolist() == [1.0, 0.0]
    half = np.zeros_like(a[0])
    half[2:4, 2:3] = 1
    assert dice(a[0], half) == pytest.approx(2 * 2 / (4 + 2))
    assert dice(np.zeros((4, 4)), np.zeros((4, 4))) == 1.0
    with pytest.raises(ValueError, match="same shape"):
        dice(a, a[0])


def test_segmentation_scores_of_perfect_and_empty_segmentations() -> None:
    labels = np.zeros((2, 8, 8), np.uint8)
    labels[:, 2:5, 2:5] = 2
    labels[0, 3, 3] = 4
    perfect = np.repeat(onehot(labels)[:, None], 4, axis=1)
    score, mse = segmentation_scores(perfect, labels)
    assert score.shape == mse.shape == (2, 4)
    assert np.all(score == 1.0) and np.all(mse == 0.0)
    background = np.zeros_like(perfect)
    background[:, :, LABELS.index(0)] = 1.0
    score, mse = segmentation_scores(background, labels)
    assert np.all(score == 0.0)
    lesion_pixels = 9
    assert np.allclose(mse, 2 * lesion_pixels / (len(LABELS) * 64))


# --- MS-SSIM -----------------------------------------------------------------------------------


def test_filter_pass_rates_count_images_with_a_lesion_by_their_mean_dice() -> None:
    labels = np.zeros((4, 8, 8), np.uint8)
    labels[:3, 2:4, 2:4] = 2
    dice_by_modality = np.array([[1.0, 1.0], [0.9, 1.0], [0.0, 0.5], [0.0, 0.0]])  # means 1, 0.95, 0.25
    rates = filter_pass_rates(dice_by_modality, labels)
    assert list(rates) == list(FILTER_THRESHOLDS)
    assert rates[0.95] == pytest.approx(2 / 3) and rates[0.5] == pytest.approx(2 / 3)
    assert filter_pass_rates(dice_by_modality[:, :1], labels)[0.95] == pytest.approx(1 / 3)
    assert set(filter_pass_rates(dice_by_modality[3:], labels[3:]).values()) == {0.0}


def test_ms_ssim_is_one_for_identical_images_and_falls_with_the_shift() -> None:
    image = _brain(96)
    assert ms_ssim(image, image) == pytest.approx(1.0, abs=1e-9)
    assert ms_ssim(image, 3.0 * image + 1.0) == pytest.approx(1.0, abs=1e-9)
    scores = [ms_ssim(image, _brain(96, shift)) for shift in (1, 2, 4)]
    assert 1.0 > scores[0] > scores[1] > scores[2]
    noise = np.random.default_rng(1).normal(size=(96, 96))
    assert 0.0 <= ms_ssim(image, noise) < scores[2]
    assert ms_ssim_scales(96) == 4 and ms_ssim_scales(32) == 2 and ms_ssim_scales(176) == 5
    with pytest.raises(ValueError, match="smaller than the SSIM window"):
        ms_ssim(np.zeros((8, 8)), np.zeros((8, 8)))


def test_pairwise_ms_ssim_is_one_for_copies_and_lower_for_shifted_images() -> None:
    rng = np.random.default_rng(0)
    copies = np.stack([_brain(64)] * 5)
    assert mean_pairwise_ms_ssim(copies, 20, rng) == pytest.approx(1.0, abs=1e-9)
    shifted = np.stack([_brain(64, shift) for shift in range(0, 20, 4)])
    assert mean_pairwise_ms_ssim(shifted, 20, rng) < 0.9


# --- SWD on Laplacian pyramids -----------------------------------------------------------------


def test_laplacian_pyramid_adds_back_to_the_image() -> None:
    image = _brain(96)
    bands = laplacian_pyramid(image, pyramid_levels(96, 16))
    assert [band.shape for band in bands] == [(96, 96), (48, 48), (24, 24)]
    rebuilt = bands[-1]
    for band in reversed(bands[:-1]):
        rebuilt = band + cv2.pyrUp(rebuilt, dstsize=band.shape[::-1])
    assert np.allclose(rebuilt, image, atol=1e-4)
    assert pyramid_levels(32, 16) == 2 and pyramid_levels(15, 16) == 1


def test_sliced_wasserstein_of_a_translated_set_is_the_mean_projected_shift() -> None:
    config = SwdConfig(directions=16, repeats=3)
    a = np.random.default_rng(0).normal(size=(500, 5))
    shift = np.array([3.0, 0.0, -1.0, 0.0, 2.0])
    expected = []
    directions = np.random.default_rng(7)
    for _ in range(config.repeats):
        d = directions.standard_normal((5, config.directions))
        d /= np.linalg.norm(d, axis=0, keepdims=True)
        expected.append(np.abs(shift @ d).mean())
    assert sliced_wasserstein(a, a + shift, config, np.random.default_rng(7)) == pytest.approx(
        np.mean(expected)
    )
    assert sliced_wasserstein(a, a, config, np.random.default_rng(7)) == 0.0


def test_swd_is_zero_for_identical_sets_and_grows_with_the_difference() -> None:
    config = SwdConfig(descriptors=2048)
    rng = np.random.default_rng(0)
    first = rng.normal(size=(20, 32, 32)).astype(np.float32)
    second = rng.normal(size=(20, 32, 32)).astype(np.float32)
    blurred = np.stack([cv2.GaussianBlur(image, (0, 0), 1.5) for image in second])
    assert swd_per_level(first, first, config, seed=3) == [0.0, 0.0]
    same_distribution = swd_per_level(first, second, config, seed=3)[0]
    assert 0.0 < same_distribution < swd_per_level(first, blurred, config, seed=3)[0]


# --- registration ------------------------------------------------------------------------------


def test_registration_dice_is_one_for_registered_and_lower_for_shifted_modalities() -> None:
    images = np.stack([_brain(64, shift=4 * k, seed=k) for k in range(3)])
    contrasts = np.stack([images, 2.0 * images + 1.0, 0.5 * images, 4.0 * images - 2.0], axis=1)
    f = structural_feature_map(images, 0.12)
    registered = registration(contrasts, f, contrasts, beta=0.12)
    assert registered.synthetic_between == pytest.approx(1.0)
    assert registered.synthetic_with_input == pytest.approx(1.0)
    assert registered.unpaired_between < 0.9
    shifted = contrasts.copy()
    shifted[:, 1] = np.stack([_brain(64, shift=4 * k + 2, seed=k) for k in range(3)])
    maps = structural_feature_map(shifted, 0.12)
    pairs = between_modalities(maps)
    assert pairs.shape == (3, 6)
    with_shifted = [k for k, pair in enumerate(MODALITY_PAIRS) if 1 in pair]
    assert pairs[:, with_shifted].max() < 0.8
    assert np.allclose(np.delete(pairs, with_shifted, axis=1), 1.0)


# --- Table 2 data ------------------------------------------------------------------------------


def test_rows_amounts_and_phases_follow_the_paper() -> None:
    assert [amount(f) for f in (1.0, 0.5, 0.1, 0.0, 2.0)] == ["x1", "x50%", "x10%", "0", "x2"]
    assert PAPER_TABLE2[25].label == "real x1 + synthetic x1 (synthetic first)"
    assert [row.number for row in table2_rows(DEFAULT_ROWS)] == list(DEFAULT_ROWS)
    with pytest.raises(ValueError, match="distinct NO"):
        table2_rows((1, 26))
    rows = table2_rows((1, 6, 13, 19))
    assert required_samples(rows, 40) == (40, 20) and amount_count(0.1, 4) == 1
    real = (np.zeros((40, 4, 8, 8), np.float32), np.zeros((40, 8, 8), np.uint8))
    synthetic = (np.ones((40, 4, 8, 8), np.float32), np.ones((40, 8, 8), np.uint8))
    enhanced = (np.full((20, 4, 8, 8), 2, np.float32), np.full((20, 8, 8), 2, np.uint8))
    data = Table2Data(real, synthetic, enhanced, real)
    sequential = phases(PAPER_TABLE2[25], data, 10)
    assert [(names, steps, len(labels)) for names, steps, _, labels in sequential] == [
        ("synthetic", 5, 40),
        ("real", 5, 40),
    ]
    assert sequential[0][3].max() == 1 and sequential[1][3].max() == 0
    few_real = phases(PAPER_TABLE2[6], data, 11)
    assert [(names, steps, len(labels)) for names, steps, _, labels in few_real] == [
        ("synthetic", 10, 40),
        ("real", 1, 4),
    ]
    ((names, steps, _, labels),) = phases(PAPER_TABLE2[13], data, 10)
    assert (names, steps, len(labels), int(labels.sum())) == ("real + synthetic", 10, 60, 20 * 64)
    ((names, _, _, labels),) = phases(PAPER_TABLE2[19], data, 10)
    assert (names, len(labels)) == ("real + enhanced", 60)


def test_classical_augmentation_keeps_labels_and_is_identity_without_ranges() -> None:
    images = np.stack([_brain(32, seed=k) for k in range(4)])
    images = (images - images.mean(axis=(1, 2), keepdims=True)) / images.std(axis=(1, 2), keepdims=True)
    label = np.zeros((32, 32), np.uint8)
    label[10:20, 10:20] = 2
    label[13:16, 13:16] = 4
    still = AugmentationConfig(scale=(1.0, 1.0), rotation_degrees=0.0, translation=0.0, flip=False)
    same_images, same_label = augment_slice(images, label, np.random.default_rng(0), still)
    assert np.array_equal(same_label, label) and np.allclose(same_images, images, atol=1e-5)
    moved_images, moved_label = augment_slice(images, label, np.random.default_rng(0), AugmentationConfig())
    assert set(np.unique(moved_label)) <= set(LABELS) and not np.array_equal(moved_label, label)
    assert moved_images.shape == images.shape and np.allclose(moved_images.mean(axis=(1, 2)), 0, atol=1e-4)


# --- end to end --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def artifacts(
    tmp_path_factory: pytest.TempPathFactory,
    write_run: Callable[..., Path],
    brain_everywhere_networks: Callable[[], tuple[Any, Any]],
) -> Path:
    from models.export import export_run

    run = tmp_path_factory.mktemp("run")
    config, networks = brain_everywhere_networks()
    labels = np.zeros((2, SIZE, SIZE), np.uint8)
    labels[:, 12:18, 12:18] = 2
    labels[1, 14:16, 14:16] = 1
    write_run(run, networks, config, SIZE, labels, structure_density=0.5)
    info = json.loads((run / "run.json").read_text())
    info["data"]["slice_config"] = {"start": 2, "stop": 10, "test_fraction": 0.1, "seed": 0}
    (run / "run.json").write_text(json.dumps(info))
    out = tmp_path_factory.mktemp("artifacts") / "tiny"
    export_run(run, out)
    return out


def test_segmentation_of_synthetic_samples_matches_the_lesion_filter(artifacts: Path) -> None:
    from models.evaluation.synthetic import make_request, synthesize_set

    synthesizer = Synthesizer.load(artifacts)
    samples = synthesize_set(synthesizer, make_request(0.0, 1.0), seed=0, n=3, batch_size=4)
    scores, _ = segmentation_scores(segment(synthesizer, samples.images), samples.labels)
    assert np.allclose(scores.mean(axis=1), samples.mean_dice)


def _evaluate(brats: Path, artifacts: Path, out: Path, *rows: str) -> None:
    main(
        [
            "evaluate",
            "--data",
            str(brats),
            "--artifacts",
            str(artifacts),
            "--out",
            str(out),
            "--preset",
            "test",
        ]
        + ["--steps", "4", "--synthetic", "4", "--structure-mae", "1", "--candidates", "2", "--rows", *rows]
        + ["--min-test-cases", "1", "--repeats", "1", "--bootstrap", "20"]
    )


def test_evaluate_writes_report_csv_and_plots_with_every_row(
    brats: Path, artifacts: Path, tmp_path: Path
) -> None:
    out = tmp_path / "report"
    rows = [str(n) for n in DEFAULT_ROWS]
    _evaluate(brats, artifacts, out, *rows)
    report = (out / "report.md").read_text()
    assert "mrisynth evaluate --data" in report and "## Closing note" in report
    for number in DEFAULT_ROWS:
        assert f"\n| {number} | " in report
    assert report.count("not in these artifacts") == 4  # 4SEG and 1EC+4DC synthetic: MSE and Dice
    assert "Table 2 uses the unfiltered set" in report
    for name in ("table2.png", "curves.png", "examples.png"):
        image = cv2.imread(str(out / name))
        assert image is not None and image.size > 0, name
    with (out / "results.csv").open(newline="") as stream:
        lines = list(csv.DictReader(stream))
    items = {(line["section"], line["item"], line["metric"]) for line in lines}
    for row in table2_rows(DEFAULT_ROWS):
        for metric in ("dice", "mse"):
            assert ("table2", f"NO.{row.number} {row.label}", metric) in items
    assert ("table1", "1SEG real", "filter_pass_0.95") in items
    assert "Lesion filter pass rate" in report and "Lesion filter at the artifacts' default Dice" in report
    assert ("table1", "1SEG synthetic", "dice") in items and (
        "registration",
        "synthetic_between",
        "dice",
    ) in items
    for modality in MODALITIES:
        assert ("diversity", modality, "ms_ssim_synthetic") in items
    table2 = [line for line in lines if line["section"] == "table2" and line["metric"] == "dice"]
    assert all(0.0 <= float(line["ours"]) <= 1.0 and line["paper"] for line in table2)


def test_the_same_command_gives_the_same_numbers(brats: Path, artifacts: Path, tmp_path: Path) -> None:
    for name in ("first", "second"):
        _evaluate(brats, artifacts, tmp_path / name, "1", "25")
    first, second = (
        (tmp_path / name / "results.csv").read_text().splitlines() for name in ("first", "second")
    )
    assert [line for line in first if "wall_s" not in line] == [
        line for line in second if "wall_s" not in line
    ]
