"""Training stages, the differentiable Algorithm 1, checkpoint/resume and ``mrisynth train`` end to end.

Everything runs on the CPU on hand-made data: the ``brats`` fixture of conftest.py (three 48 x 48 x 12
cases: an ellipse brain with smooth modality-specific texture and a two-class lesion), trained
with the ``test`` preset (32 x 32 slices, ngf 4). Stage tests overfit one fixed batch at lr 1e-3 so
that a few steps lower the stage's reconstruction loss deterministically.
"""

import csv
import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from cli.main import main
from models.data import TrainingData, load_training_data
from models.networks import define_networks
from models.presets import STAGES, get_preset, printed_objective, with_overrides
from models.segmentation_stage import SegmentationStage
from models.soft_structure import soft_structural_feature_map
from models.stage import Stage
from models.structure_stage import StructureStage
from models.synthesis_stage import SynthesisStage
from mrisynth.conventions import LABELS
from mrisynth.structure import structural_feature_map

PRESET = get_preset("test")
CPU = torch.device("cpu")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def data(brats: Path, tmp_path_factory: pytest.TempPathFactory) -> TrainingData:
    return load_training_data(brats, tmp_path_factory.mktemp("run") / "cache", PRESET)


def _losses_over_steps(
    stage_cls: type[Stage], data: TrainingData, steps: int, **overrides: Any
) -> list[dict[str, float]]:
    """Train a fresh stage ``steps`` times on one fixed batch of 4; the losses of every step."""
    preset = dataclasses.replace(PRESET, lr=1e-3, **overrides)
    torch.manual_seed(0)
    networks = define_networks(preset.network)
    stage = stage_cls(networks, preset, CPU)
    stage.train()
    batch = dataclasses.replace(data, preset=preset).batch(4, np.random.default_rng(0), CPU)
    history = []
    for _ in range(steps):
        stage.set_input(batch)
        stage.optimize_parameters()
        history.append(stage.current_losses())
    return history


def _falls(history: list[dict[str, float]], name: str, k: int = 3) -> bool:
    values = [step[name] for step in history]
    return float(np.mean(values[-k:])) < 0.95 * float(np.mean(values[:k]))


def test_data_samples_shapes_and_lesion_library(data: TrainingData) -> None:
    assert len(data) == 2 * (PRESET.slices.stop - PRESET.slices.start)
    sample = data.sample(0, np.random.default_rng(0))
    s = PRESET.image_size
    assert sample["x"].shape == (4, s, s) and sample["f"].shape == sample["brain_mask"].shape == (1, s, s)
    assert np.allclose(sample["x"].mean(axis=(1, 2)), 0, atol=1e-4)
    assert set(np.unique(sample["f"])) <= {0.0, 1.0} and not np.any(sample["f"][0][sample["label_x"] > 0])
    assert not np.any((sample["label"] > 0) & (sample["brain_mask"][0] == 0))
    assert data.lesion_library.dtype == np.uint8 and data.lesion_library.shape[1:] == (s, s)
    assert set(np.unique(data.lesion_library)) <= set(LABELS)
    assert (data.lesion_library.reshape(len(data.lesion_library), -1).max(axis=1) > 0).all()


def test_the_pasted_sample_is_a_library_lesion_with_its_images_inside_the_brain(data: TrainingData) -> None:
    rng = np.random.default_rng(3)
    assert "x_paste" not in data.sample(0, rng)  # the default, "own": no paste is drawn
    data = dataclasses.replace(data, preset=dataclasses.replace(PRESET, paired_lesion="pasted"))
    for row in range(0, len(data), 5):
        sample = data.sample(row, rng)
        x, label_x, brain = sample["x"], sample["label_x"], sample["brain_mask"][0]
        x_paste, label_paste = sample["x_paste"], sample["label_paste"]
        assert x_paste.dtype == np.float32 and x_paste.shape == x.shape
        new_lesion = (label_paste > 0) & (label_x == 0)
        assert not np.any(new_lesion & (brain == 0))  # the pasted lesion lies inside the sample's brain
        healthy = label_paste == 0
        assert np.array_equal(x_paste[:, healthy], x[:, healthy])  # the host is untouched elsewhere
        assert np.all(label_paste[label_x > 0] > 0)  # the sample's own lesion stays a lesion
        assert not np.any(sample["f_paste"][0][label_paste > 0])  # f without the pasted lesion
        assert set(np.unique(label_paste)) <= set(LABELS)
    source = np.stack([data.images(int(r)) for r in data.library_rows])
    assert np.array_equal(data.labels[data.library_rows], data.lesion_library)
    assert source.shape == (len(data.lesion_library), 4, PRESET.image_size, PRESET.image_size)


def test_paste_copies_the_source_images_on_the_pasted_lesion() -> None:
    s = 16
    label = np.zeros((s, s), np.uint8)
    label[6:9, 6:9] = 1
    host = np.zeros((4, s, s), np.float32)
    rows = np.stack([host, host + 5.0])

    class Cache:
        images = rows

    preset = dataclasses.replace(PRESET, image_size=s)
    data = TrainingData(Cache(), preset, np.stack([label * 0, label]), label[None], np.array([1]))  # type: ignore[arg-type]
    mask = np.ones((s, s), np.float32)
    x_paste, label_paste = data.paste(host, label * 0, mask, np.random.default_rng(0))
    lesion = label_paste > 0
    assert lesion.sum() == 9 and np.all(x_paste[:, lesion] == 5.0) and np.all(x_paste[:, ~lesion] == 0.0)
    unchanged = data.paste(host, label * 0, np.zeros((s, s), np.float32), np.random.default_rng(0))
    assert unchanged[0] is host and not unchanged[1].any()  # no brain to paste into: the sample itself


def test_soft_algorithm_1_matches_numpy_at_small_tau(data: TrainingData) -> None:
    images = np.asarray(data.cache.images[:4, :, :, :]).reshape(-1, 48, 48).astype(np.float64)
    noise = np.random.default_rng(1).normal(size=(4, 40, 40))
    for batch in (images, noise):
        reference = structural_feature_map(batch)
        soft = soft_structural_feature_map(torch.from_numpy(batch)[:, None], tau=1e-6)[:, 0].numpy()
        assert np.mean(np.abs(soft - reference) > 0.5) < 1e-3
        assert np.mean(np.abs(soft - reference)) < 1e-3
    x = torch.from_numpy(images[:2]).float()[:, None].requires_grad_()
    soft_map = soft_structural_feature_map(x, tau=0.02)
    assert float(soft_map.detach().min()) >= 0.0 and float(soft_map.detach().max()) <= 1.0
    soft_map.sum().backward()
    assert x.grad is not None and float(x.grad.abs().sum()) > 0


def test_structure_stage_lowers_reconstruction_f(data: TrainingData) -> None:
    history = _losses_over_steps(StructureStage, data, steps=20)
    assert _falls(history, "reconstruction_f")
    assert all(np.isfinite(list(step.values())).all() for step in history)


def test_synthesis_stage_lowers_reconstruction(data: TrainingData) -> None:
    history = _losses_over_steps(SynthesisStage, data, steps=10, pairs_per_step=12)
    assert _falls(history, "reconstruction")
    assert set(history[-1]) == set(SynthesisStage.loss_names)


def test_synthesis_losses_fall_with_pair_sampling(data: TrainingData) -> None:
    history = _losses_over_steps(SynthesisStage, data, steps=10, pairs_per_step=3)
    for name in ("reconstruction", "cycle", "f"):
        assert _falls(history, name), name


def test_registered_terms_fall_and_the_printed_objective_leaves_them_out(data: TrainingData) -> None:
    registered = _losses_over_steps(SynthesisStage, data, steps=10, pairs_per_step=3)
    for name in ("translation_pair", "synthesis_pair", "code_registered"):
        assert _falls(registered, name), name
    pasted = _losses_over_steps(SynthesisStage, data, steps=10, pairs_per_step=3, paired_lesion="pasted")
    assert _falls(pasted, "synthesis_pair")
    assert pasted[0]["synthesis_pair"] != registered[0]["synthesis_pair"]
    assert registered[-1]["lesion_1"] == 0.0  # segmentors frozen: (12) is not computed
    printed = _losses_over_steps(SynthesisStage, data, steps=4, **_printed_fields())
    for name in ("translation_pair", "synthesis_pair", "code_registered", "category"):
        assert all(step[name] == 0.0 for step in printed), name
    assert all(step["lesion_1"] > 0.0 for step in printed)


def _printed_fields() -> dict[str, Any]:
    printed = printed_objective(PRESET)
    return {"registered": printed.registered, "lesion_loss": printed.lesion_loss, "weights": printed.weights}


def test_segmentation_stage_lowers_segmentation_loss(data: TrainingData) -> None:
    history = _losses_over_steps(SegmentationStage, data, steps=40)
    assert _falls(history, "segmentation")


def _train(brats: Path, out: Path, *extra: str) -> None:
    main(["train", "--data", str(brats), "--out", str(out), "--preset", "test", "--seed", "3", *extra])


def _rows(path: Path) -> list[tuple[str, str]]:
    with path.open(newline="") as stream:
        return [(row["stage"], row["step"]) for row in csv.DictReader(stream)]


def test_cli_writes_run_directory_and_resume_matches_uninterrupted_run(
    brats: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    full, interrupted = tmp_path / "full", tmp_path / "interrupted"
    _train(brats, full)
    for name in ("run.json", "checkpoint.pt", "losses.csv", "lesion_library.npz"):
        assert (full / name).is_file(), name
    record = json.loads((full / "run.json").read_text())
    assert record["preset"]["name"] == "test" and record["seed"] == 3
    assert record["image_size"] == [32, 32] and record["voxel_size_mm"] == [1.5, 1.5, 1.0]
    assert record["command"].startswith("mrisynth train --data")
    assert record["stages_completed"] == list(STAGES)
    assert record["network_config"]["ngf"] == PRESET.network.ngf
    library = np.load(full / "lesion_library.npz")["labels"]
    assert library.dtype == np.uint8 and library.ndim == 3 and library.shape[1:] == (32, 32)
    checkpoint = torch.load(full / "checkpoint.pt", weights_only=False)
    expected_keys = define_networks(PRESET.network).state_dict().keys()
    assert checkpoint["networks"].keys() == expected_keys

    original = SynthesisStage.optimize_parameters
    calls = {"n": 0}

    def crash_on_third_step(self: SynthesisStage) -> None:
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        original(self)

    monkeypatch.setattr(SynthesisStage, "optimize_parameters", crash_on_third_step)
    with pytest.raises(KeyboardInterrupt):
        _train(brats, interrupted)
    saved = torch.load(interrupted / "checkpoint.pt", weights_only=False)
    assert (saved["stage"], saved["step"]) == ("synthesis", PRESET.checkpoint_every)
    monkeypatch.setattr(SynthesisStage, "optimize_parameters", original)
    with pytest.raises(SystemExit):
        _train(brats, interrupted)
    _train(brats, interrupted, "--resume")

    assert _rows(interrupted / "losses.csv") == _rows(full / "losses.csv")
    resumed = torch.load(interrupted / "checkpoint.pt", weights_only=False)["networks"]
    for key, value in checkpoint["networks"].items():
        torch.testing.assert_close(resumed[key], value, rtol=1e-5, atol=1e-6, msg=key)


def test_overrides_replace_only_the_named_weights_and_steps() -> None:
    demo = get_preset("demo")
    changed = with_overrides(demo, {"lesion_2": 5.0}, {"synthesis": 7})
    assert changed.weights.lesion_2 == 5.0 and changed.steps is not None and changed.steps.synthesis == 7
    assert changed.weights.g_1 == demo.weights.g_1 and changed.steps.structure == demo.steps.structure
    assert changed.name == "demo"
    with pytest.raises(ValueError, match="unknown loss weights"):
        with_overrides(demo, {"lesion": 1.0}, {})
    with pytest.raises(ValueError, match="unknown stages"):
        with_overrides(demo, {}, {"segmentor": 1})
    with pytest.raises(ValueError, match="counts epochs"):
        with_overrides(get_preset("paper"), {}, {"synthesis": 1})


def test_the_segmentation_stage_takes_its_own_adam_settings() -> None:
    """segmentation_lr and segmentation_beta1 reach the segmentation stage's optimizer, and only its."""
    demo, paper = get_preset("test"), get_preset("paper")
    tuned = dataclasses.replace(demo, segmentation_lr=1e-3, segmentation_beta1=0.9)
    networks = define_networks(demo.network)
    for preset, expected in [(tuned, (1e-3, 0.9)), (demo, (demo.lr, demo.beta1))]:
        group = SegmentationStage(networks, preset, torch.device("cpu")).optimizers["SEG"].param_groups[0]
        assert (group["lr"], group["betas"][0]) == expected
    synthesis = SynthesisStage(networks, tuned, torch.device("cpu"))
    assert {g["lr"] for o in synthesis.optimizers.values() for g in o.param_groups} == {demo.lr}
    assert (paper.segmentation_lr, paper.segmentation_beta1) == (None, None)
    with pytest.raises(ValueError, match="segmentation_lr"):
        dataclasses.replace(demo, segmentation_lr=0.0)
    with pytest.raises(ValueError, match="segmentation_beta1"):
        dataclasses.replace(demo, segmentation_beta1=1.0)
