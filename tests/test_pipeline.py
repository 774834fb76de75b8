"""The synthesis worker (paper Sec. 2.5, 2.8, Fig. 7) on tiny exported networks, and its filters.

The module fixture exports random-init networks (ngf 4, 32 x 32, ``1SEG``) with ``models.export``.
Two output layers are set by hand so that the pipeline's paths can be reached without training: MG's
head says "brain" everywhere (random masks would let no lesion fit), and the shared segmentor's head
is scaled and biased towards background, so that it finds a few dozen lesion pixels per image, a
count that varies from sample to sample. Random networks cannot pass the Dice filter at 0.95: the
integration tests relax the thresholds, and the filters' logic is tested on hand-made arrays.
"""

import logging
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import cv2
import nibabel as nib
import numpy as np
import pytest

from mrisynth.artifacts import ArtifactError, FusionWeights
from mrisynth.conventions import LABELS, MODALITIES
from mrisynth.settings import Settings
from mrisynth.structure import DEFAULT_MAE_THRESHOLD, accept_structure, structure_mae
from worker.candidates import (
    CODE_STREAM,
    LESION_STREAM,
    STAGES,
    Plan,
    Rejection,
    StageClock,
    candidate_rng,
    evaluate,
    make_plan,
)
from worker.filters import (
    RejectionTally,
    accept_healthy,
    accept_lesion,
    fuse,
    lesion_pixels,
    may_pass,
    whole_tumor_dice,
)
from worker.lesions import augment, fit_lesions, lesion_fits, read_label_files
from worker.pipeline import AcceptanceError, SynthesisProgress, synthesize
from worker.request import LesionControls, RequestThresholds, SynthesisRequest
from worker.sessions import Synthesizer

SIZE = 32
RELAXED = RequestThresholds(structure_mae=1.0, dice=0.0)
STILL = LesionControls(scale=(1.0, 1.0), rotation_degrees=0.0, translation=0.0, flip=False)
"""No augmentation: a drawn label stays where it is."""


def _library() -> np.ndarray:
    labels = np.zeros((3, SIZE, SIZE), np.uint8)
    labels[:, 12:20, 12:20] = 2
    labels[:, 14:18, 14:18] = 4
    labels[1, 15:17, 15:17] = 1
    return labels


@pytest.fixture(scope="module")
def artifacts(
    tmp_path_factory: pytest.TempPathFactory,
    write_run: Callable[..., Path],
    brain_everywhere_networks: Callable[[], tuple[Any, Any]],
) -> Path:
    import torch
    from torch import nn

    from models.export import export_run

    run = tmp_path_factory.mktemp("run")
    config, networks = brain_everywhere_networks()
    segmentor_head = cast(nn.Conv2d, networks.get_submodule("lesion.networks.SEG.head.0"))
    assert segmentor_head.bias is not None
    with torch.no_grad():
        segmentor_head.weight.mul_(10.0)
        segmentor_head.bias.copy_(torch.tensor([1.0, 0.0, 0.0, 0.0]))
    write_run(run, networks, config, SIZE, _library(), structure_density=0.5)
    out = tmp_path_factory.mktemp("artifacts") / "tiny"
    export_run(run, out)
    return out


@pytest.fixture(scope="module")
def synthesizer(artifacts: Path) -> Synthesizer:
    return Synthesizer.load(artifacts)


def _same(a, b) -> bool:
    arrays = [(a.label, b.label), (a.f, b.f), (a.brain_mask, b.brain_mask)]
    arrays += [(a.images[m], b.images[m]) for m in a.images]
    return a.index == b.index and a.scores == b.scores and all(np.array_equal(x, y) for x, y in arrays)


# --- the worker, end to end ---------------------------------------------------------------------


def test_worker_never_imports_torch():
    modules = "worker.pipeline, worker.sessions, worker.lesions, worker.benchmark"
    code = f"import sys, {modules}; assert 'torch' not in sys.modules and 'models' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[1])


def test_load_verifies_checksums(artifacts, tmp_path):
    copy = tmp_path / "copy"
    copy.mkdir()
    for path in artifacts.iterdir():
        copy.joinpath(path.name).write_bytes(path.read_bytes())
    with (copy / "MG.onnx").open("ab") as stream:
        stream.write(b"\0")
    with pytest.raises(ArtifactError, match="MG.onnx"):
        Synthesizer.load(copy)


def test_session_settings_reach_onnxruntime_and_leave_the_samples_alone(artifacts, synthesizer):
    settings = Settings(onnx_intra_op_threads=1, onnx_cpu_mem_arena=False, onnx_execution_mode="parallel")
    single = Synthesizer.load(artifacts, settings)
    assert single.intra_op_threads == 1
    request = SynthesisRequest(thresholds=RELAXED)
    a, b = (synthesize(s, request, 3, 3, batch_size=3).samples for s in (synthesizer, single))
    assert all(_same(x, y) for x, y in zip(a, b, strict=True))


def test_samples_have_documented_shapes_and_values(synthesizer):
    progress: list[SynthesisProgress] = []
    result = synthesize(synthesizer, SynthesisRequest(thresholds=RELAXED), 0, 6, 4, progress=progress.append)
    assert [s.index for s in result.samples] == list(range(6))
    for sample in result.samples:
        assert list(sample.images) == list(MODALITIES)
        for image in sample.images.values():
            assert image.dtype == np.float32 and image.shape == (SIZE, SIZE)
        assert sample.label.dtype == np.uint8 and sample.label.shape == (SIZE, SIZE)
        assert set(np.unique(sample.label)) <= set(LABELS) and sample.label.any()
        for binary in (sample.f, sample.brain_mask):
            assert binary.dtype == np.uint8 and set(np.unique(binary)) <= {0, 1}
        assert not (sample.label > 0)[sample.brain_mask == 0].any()
        assert set(sample.scores.dice) == set(MODALITIES) and sample.scores.attempts.structure >= 1
    counters = result.progress
    assert counters.accepted == 6 and progress[-1] == counters
    rejected = counters.rejected_structure + counters.rejected_lesion + counters.rejected_dice
    assert counters.candidates == counters.accepted + rejected


def test_same_seed_same_samples_whatever_the_batching(synthesizer):
    # A tolerance at the median lesion fraction of untrained segmentors on healthy candidates rejects
    # about half of them: the samples then need attempts beyond the first.
    lenient = SynthesisRequest(lesion_source="none", thresholds=RequestThresholds(lesion_free_fraction=0.99))
    fractions = [
        max(sample.scores.lesion_pixels.values()) / SIZE**2
        for sample in synthesize(synthesizer, lenient, 3, 8, batch_size=8).samples
    ]
    thresholds = RequestThresholds(lesion_free_fraction=float(np.median(fractions)))
    request = SynthesisRequest(lesion_source="none", thresholds=thresholds)
    one = synthesize(synthesizer, request, 11, 6, batch_size=1)
    five = synthesize(synthesizer, request, 11, 6, batch_size=5)
    chunk = synthesize(synthesizer, request, 11, 2, batch_size=8, first_index=4)
    assert one.progress.rejected_dice > 0
    assert all(_same(a, b) for a, b in zip(one.samples, five.samples, strict=True))
    assert all(_same(a, b) for a, b in zip(one.samples[4:], chunk.samples, strict=True))
    assert one.progress.candidates == five.progress.candidates


def test_different_seeds_give_different_samples(synthesizer):
    request = SynthesisRequest(thresholds=RELAXED, modalities=("flair", "t1"))
    a, b = (synthesize(synthesizer, request, seed, 2, 2).samples for seed in (1, 2))
    assert list(a[0].images) == ["t1", "flair"]
    assert not np.array_equal(a[0].images["t1"], b[0].images["t1"])
    assert not np.array_equal(a[0].label, b[0].label)


def test_healthy_source_gives_empty_labels(synthesizer):
    """``lesion_source="none"``: empty labels, and the filter keeps what the segmentors call lesion-free,
    the tolerance taken from what these random segmentors call lesion in the same samples."""
    relaxed_request = SynthesisRequest(
        lesion_source="none", thresholds=RequestThresholds(lesion_free_fraction=0.999)
    )
    relaxed = synthesize(synthesizer, relaxed_request, 0, 3, 3).samples
    pixels = [max(sample.scores.lesion_pixels.values()) for sample in relaxed]
    tolerance = max(pixels) / (SIZE * SIZE)
    request = SynthesisRequest(
        lesion_source="none", thresholds=RequestThresholds(lesion_free_fraction=tolerance)
    )
    result = synthesize(synthesizer, request, 0, 3, 3)
    assert [sample.index for sample in result.samples] == [sample.index for sample in relaxed]
    for sample in result.samples:
        assert not sample.label.any() and sample.scores.attempts.lesion == 0
        assert max(sample.scores.lesion_pixels.values()) <= tolerance * SIZE * SIZE


def test_uploaded_label_files(synthesizer, tmp_path):
    volume = np.zeros((64, 64, 5), np.int16)  # 3D, twice the artifacts' size, lesion on 2 slices
    volume[20:40, 20:40, 1:3] = 1
    nib.save(nib.Nifti1Image(volume, np.eye(4)), tmp_path / "case_seg.nii.gz")
    flat = np.zeros((SIZE, SIZE), np.uint8)
    flat[10:20, 10:20] = 1
    nib.save(nib.Nifti1Image(flat, np.eye(4)), tmp_path / "slice.nii")
    assert read_label_files(tmp_path, (SIZE, SIZE)).shape == (3, SIZE, SIZE)
    request = SynthesisRequest(lesion_source=tmp_path, thresholds=RELAXED)
    for sample in synthesize(synthesizer, request, 0, 4, 4).samples:
        assert set(np.unique(sample.label)) == {0, 1}  # the library's labels hold 2 and 4


def test_unusable_label_files_are_named(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        read_label_files(tmp_path / "missing", (SIZE, SIZE))
    with pytest.raises(ValueError, match="no label files"):
        read_label_files(tmp_path, (SIZE, SIZE))
    wrong = np.full((SIZE, SIZE), 3, np.uint8)
    nib.save(nib.Nifti1Image(wrong, np.eye(4)), tmp_path / "bad.nii.gz")
    with pytest.raises(ValueError, match=r"bad\.nii\.gz.*\[3\]"):
        read_label_files(tmp_path, (SIZE, SIZE))


def test_attempt_bound_names_the_threshold_to_relax(synthesizer):
    request = SynthesisRequest(bounds={"candidates_per_sample": 3})  # Dice 0.95: random nets miss it
    with pytest.raises(AcceptanceError, match=r"relax thresholds\.dice \(now 0\.95\)") as caught:
        synthesize(synthesizer, request, 0, 2, 4)
    assert caught.value.threshold == "thresholds.dice"
    assert caught.value.result.samples == [] and caught.value.result.progress.rejected_dice == 6


def test_bad_requests_raise_value_errors(synthesizer):
    for bad in ({"modalities": ()}, {"modalities": ("t1", "pd")}, {"modalities": ("t1", "t1")}):
        with pytest.raises(ValueError, match="modalities"):
            SynthesisRequest.model_validate(bad)
    with pytest.raises(ValueError, match="scale"):
        LesionControls(scale=(1.2, 0.8))
    with pytest.raises(ValueError, match="lesion_source"):
        SynthesisRequest(lesion_source="")
    with pytest.raises(ValueError, match="n >= 1"):
        synthesize(synthesizer, SynthesisRequest(), 0, 0)
    with pytest.raises(ValueError, match="seed"):
        synthesize(synthesizer, SynthesisRequest(), -1, 1)


# --- early rejection, against the unoptimised pipeline -------------------------------------------


def _unoptimised(synthesizer: Synthesizer, plan: Plan, index: int, attempt: int) -> tuple[Any, ...]:
    """Candidate (index, attempt) through Fig. 7 from the networks directly: alone in its batch, DC on
    all its modalities in one call, every segmentor, the filter on the complete scores.

    Returns:
        (rejection, images (M, H, W), Dice (M,), lesion pixels (M,)), the arrays None when rejected
        before synthesis.
    """
    shape = synthesizer.manifest.structure_code_shape
    code = candidate_rng(plan.seed, index, attempt, CODE_STREAM).standard_normal(shape, dtype=np.float32)
    f = (synthesizer.run("DC_f", code=code[None])[:, 0] > plan.structure_probability).astype(np.float32)
    mask = synthesizer.run("MG", f=f[:, None])[:, 0] > plan.probability
    if structure_mae(f, mask.astype(np.float32))[0] > plan.structure_mae:
        return Rejection.STRUCTURE, None, None, None
    label: np.ndarray | None = np.zeros((SIZE, SIZE), np.uint8)
    if plan.pool is not None:
        rng = candidate_rng(plan.seed, index, attempt, LESION_STREAM)
        label, _ = fit_lesions(plan.pool, mask[0], rng, plan.controls, plan.lesion_draws)
    if label is None:
        return Rejection.LESION, None, None, None
    semantic = synthesizer.run("EC_r", fusion=fuse(f, label[None], synthesizer.manifest.fusion))
    count = len(plan.modalities)
    onehot = np.eye(len(MODALITIES), dtype=np.float32)[[MODALITIES.index(m) for m in plan.modalities]]
    condition = np.broadcast_to(onehot[:, :, None, None], (count, len(MODALITIES), *semantic.shape[2:]))
    images = synthesizer.run("DC", code=np.repeat(semantic, count, axis=0), condition=condition)[:, 0]
    predicted = synthesizer.segment(images[None], plan.modalities)
    dice, pixels = whole_tumor_dice(label[None], predicted), lesion_pixels(predicted)
    if plan.pool is None:
        accepted = accept_healthy(pixels, plan.lesion_free_fraction, (SIZE, SIZE))[0]
    else:
        accepted = accept_lesion(dice, plan.dice)[0]
    return (None if accepted else Rejection.DICE), images, dice[0], pixels[0]


def _requests(synthesizer: Synthesizer, keys: list[tuple[int, int]], seed: int) -> list[SynthesisRequest]:
    """Lesion requests at the median of the candidates' mean Dice (some accepted, some rejected) and at
    0.5 (untrained segmentors reach about 0.1: rejected after three modalities, the fourth never made),
    and a healthy request at the median of the candidates' most lesion pixels (rejected at the first
    modality over it)."""
    relaxed = make_plan(synthesizer, SynthesisRequest(thresholds=RELAXED), seed)
    mean_dice = np.median([_unoptimised(synthesizer, relaxed, k, a)[2].mean() for k, a in keys])
    lenient = RELAXED.model_copy(update={"lesion_free_fraction": 0.999})
    healthy = make_plan(synthesizer, SynthesisRequest(lesion_source="none", thresholds=lenient), seed)
    pixels = np.median([_unoptimised(synthesizer, healthy, k, a)[3].max() for k, a in keys])
    fraction = RELAXED.model_copy(update={"lesion_free_fraction": float(pixels) / SIZE**2})
    lesion = [RELAXED.model_copy(update={"dice": dice}) for dice in (float(mean_dice), 0.5)]
    return [SynthesisRequest(thresholds=thresholds) for thresholds in lesion] + [
        SynthesisRequest(lesion_source="none", thresholds=fraction)
    ]


def test_early_rejection_accepts_what_the_full_filter_accepts(synthesizer):
    keys = [(k, a) for k in range(6) for a in range(3)]
    counts = []  # (accepted, rejected by the lesion filter, rejected before the last modality) per request
    for request in _requests(synthesizer, keys, 5):
        plan = make_plan(synthesizer, request, 5)
        tally = RejectionTally(len(plan.modalities))
        tally.add(3, np.array([True]))  # flair first, then the order learned from the first batch
        accepted = rejected = dropped = 0
        outcomes = [*evaluate(synthesizer, plan, keys[:9], tally, StageClock())]
        outcomes += evaluate(synthesizer, plan, keys[9:], tally, StageClock())
        for outcome in outcomes:
            rejection, images, dice, pixels = _unoptimised(synthesizer, plan, outcome.index, outcome.attempt)
            assert outcome.rejection == rejection
            if images is None:
                continue
            done = ~np.isnan(outcome.dice)
            assert done.all() or rejection is Rejection.DICE
            np.testing.assert_allclose(outcome.images[done], images[done], rtol=0, atol=1e-5)
            assert np.array_equal(outcome.dice[done], dice[done])
            assert np.array_equal(outcome.lesion_pixels[done], pixels[done])
            assert np.isnan(outcome.images[~done]).all() and (outcome.lesion_pixels[~done] == -1).all()
            accepted += rejection is None
            rejected += rejection is Rejection.DICE
            dropped += not done.all()
        counts.append((accepted, rejected, dropped))
    (median, _, _), (_, hopeless, hopeless_dropped), (healthy, _, healthy_dropped) = counts
    assert median and counts[0][1] and hopeless == hopeless_dropped > 0 and healthy and healthy_dropped


def test_samples_are_the_unoptimised_pipelines_first_accepted_candidates(synthesizer):
    keys = [(k, a) for k in range(6) for a in range(3)]
    for request in _requests(synthesizer, keys, 7)[::2]:  # lesion at the median Dice, healthy
        plan = make_plan(synthesizer, request, 7)
        for sample in synthesize(synthesizer, request, 7, 3, batch_size=4).samples:
            attempt = 0
            while (reference := _unoptimised(synthesizer, plan, sample.index, attempt))[0] is not None:
                attempt += 1
            _, images, dice, pixels = reference
            assert sample.scores.attempts.structure == attempt + 1
            np.testing.assert_allclose(np.stack(list(sample.images.values())), images, rtol=0, atol=1e-5)
            assert list(sample.scores.dice.values()) == dice.tolist()
            assert list(sample.scores.lesion_pixels.values()) == pixels.tolist()


def test_peer_benchmark_prints_both_rates_the_stages_and_the_filters(artifacts, one_torch_thread, caplog):
    from models.peer_benchmark import main

    arguments = ["--artifacts", str(artifacts), "--n", "2", "--batch-size", "2", "--dice", "0"]
    with caplog.at_level(logging.INFO):
        main([*arguments, "--structure-mae", "1"])
    lines = caplog.messages[-1].splitlines()
    rates = {
        match[1]: float(match[2]) for line in lines if (match := re.fullmatch(r"(.+?)\s+(\d+\.\d+)", line))
    }
    peer = (rates["TorchIO peer, before ours"] + rates["TorchIO peer, after ours"]) / 2
    assert peer > 0 and rates["ours, accepted"] > 0
    assert rates["ratio ours / peer (mean)"] == pytest.approx(rates["ours, accepted"] / peer, rel=0.05)
    filters = ("candidates", "rejected by Algorithm 3", "rejected by lesion fit", "rejected by lesion filter")
    for row in filters:
        assert any(re.fullmatch(rf"{row}\s+\d+( \(\d+%\))?", line) for line in lines), row
    for stage in STAGES:
        assert any(re.fullmatch(rf"{stage}\s+\d+\.\d+ \(\d+%\)", line) for line in lines), stage


# --- the filters, on hand-made arrays -----------------------------------------------------------


def test_algorithm3_rejects_a_cut_open_map():
    f = np.zeros((64, 64), np.float32)
    cv2.circle(f, (32, 32), 24, 1.0, thickness=1)
    brain = np.zeros_like(f)
    cv2.circle(brain, (32, 32), 24, 1.0, thickness=-1)
    cut = f.copy()
    cut[:32, 28:36] = 0.0
    assert accept_structure(f, brain) and structure_mae(f, brain) < DEFAULT_MAE_THRESHOLD
    assert not accept_structure(cut, brain)


def test_lesion_filter_rejects_a_missed_lesion():
    label = np.zeros((1, 16, 16), np.uint8)
    label[0, 4:10, 4:10] = 2
    label[0, 6:8, 6:8] = 4
    exact = np.repeat(label[:, None], 2, axis=1)
    missed = exact.copy()
    missed[:, 1] = 0  # the second modality's segmentor finds nothing
    dice = whole_tumor_dice(label, exact)
    assert accept_lesion(dice, 0.95).tolist() == [True] and np.allclose(dice, 1.0)
    dice = whole_tumor_dice(label, missed)
    assert accept_lesion(dice, 0.95).tolist() == [False] and dice.tolist() == [[1.0, 0.0]]
    whole_tumor = exact.copy()
    whole_tumor[exact > 0] = 2  # wrong sub-regions, right whole tumor
    assert accept_lesion(whole_tumor_dice(label, whole_tumor), 0.95).tolist() == [True]


def test_healthy_filter_tolerance_and_empty_dice():
    predicted = np.zeros((2, 1, 32, 32), np.uint8)
    predicted[1, 0, :2, :2] = 1
    pixels = lesion_pixels(predicted)
    assert pixels.tolist() == [[0], [4]]
    assert accept_healthy(pixels, 0.001, (32, 32)).tolist() == [True, False]  # 1.02 pixels tolerated
    assert whole_tumor_dice(np.zeros((2, 32, 32), np.uint8), predicted).tolist() == [[1.0], [0.0]]


def test_filter_rejects_early_only_what_it_would_reject_late():
    nan = np.nan
    dice = np.array([[0.1, 0.2, nan, nan], [0.9, 0.2, nan, nan], [0.1, 0.2, 0.3, 0.4]])
    options = {"healthy": False, "threshold": 0.5, "image_size": (32, 32)}
    # best completions: means 0.575, 0.775, and the complete 0.25
    assert may_pass(dice, np.full(dice.shape, -1), **options).tolist() == [True, True, False]
    assert may_pass(dice, np.full(dice.shape, -1), **{**options, "threshold": 0.6}).tolist() == [
        False,
        True,
        False,
    ]
    pixels = np.array([[0, -1], [2, -1], [0, 1]])  # tolerance 1.024 pixels
    healthy = {"healthy": True, "threshold": 0.001, "image_size": (32, 32)}
    assert may_pass(np.full(pixels.shape, nan), pixels, **healthy).tolist() == [True, False, True]


def test_rejection_tally_orders_the_likeliest_rejecter_first():
    tally = RejectionTally(3)
    assert tally.order() == [0, 1, 2]
    tally.add(2, np.array([True, True, False]))
    tally.add(1, np.array([True, False, False, False]))
    assert tally.order() == [2, 1, 0]


def test_labels_outside_the_brain_are_redrawn():
    brain = np.zeros((SIZE, SIZE), bool)
    brain[8:24, 8:24] = True
    outside, inside = np.zeros((2, SIZE, SIZE), np.uint8)
    outside[0:6, 0:6] = 2
    inside[12:16, 12:16] = 4
    assert not lesion_fits(outside, brain) and lesion_fits(inside, brain)
    assert not lesion_fits(np.zeros_like(inside), brain)  # empty after augmentation: re-draw
    pool = np.stack([outside, inside])
    for seed in range(5):
        label, draws = fit_lesions(pool, brain, np.random.default_rng(seed), STILL, 50)
        assert np.array_equal(label, inside) and draws >= 1
    assert fit_lesions(pool[:1], brain, np.random.default_rng(0), STILL, 7) == (None, 7)


def test_several_lesions_do_not_overlap():
    brain = np.ones((SIZE, SIZE), bool)
    lesion = np.zeros((1, SIZE, SIZE), np.uint8)
    lesion[0, 14:18, 14:18] = 2
    controls = STILL.model_copy(update={"translation": 0.4, "count": 3})
    label, _ = fit_lesions(lesion, brain, np.random.default_rng(0), controls, 200)
    assert label is not None and (label == 2).sum() == 3 * 16


def test_augmentation_keeps_label_values_and_scales_area():
    label = _library()[1]
    controls = LesionControls(scale=(2.0, 2.0), rotation_degrees=0.0, translation=0.0)
    grown = augment(label, np.random.default_rng(0), controls)
    assert set(np.unique(grown)) == set(np.unique(label))
    assert (grown > 0).sum() == pytest.approx(4 * (label > 0).sum(), rel=0.1)


def test_fusion_matches_the_training_fusion():
    import torch

    from models.fusion import FUSION_LABEL_WEIGHT, FUSION_STRUCTURE_WEIGHT
    from models.fusion import fuse as torch_fuse

    rng = np.random.default_rng(0)
    f = (rng.random((2, 8, 8)) > 0.5).astype(np.float32)
    label = np.asarray(LABELS, np.uint8)[rng.integers(4, size=(2, 8, 8))]
    weights = FusionWeights(label_weight=FUSION_LABEL_WEIGHT, structure_weight=FUSION_STRUCTURE_WEIGHT)
    expected = torch_fuse(torch.from_numpy(f)[:, None], torch.from_numpy(label.astype(np.int64))).numpy()
    assert np.array_equal(fuse(f, label, weights), expected)
    with pytest.raises(ValueError, match="label values"):
        fuse(f, np.full_like(label, 3), weights)
