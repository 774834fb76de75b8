"""``mrisynth export``: a training run directory -> the model artifacts directory of ``docs/artifacts.md``.

The run directory (written by ``mrisynth train``) holds ``run.json`` (:class:`RunInfo`),
``checkpoint.pt`` (``{"networks": state_dict of define_networks(config), ...}``) and
``lesion_library.npz``. The artifacts are written into a hidden sibling of ``--out`` and renamed
into place only once every network has passed its parity check, so a failed export leaves nothing.
"""

import json
import logging
import os
import pickle
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator
from torch import nn

from models.calibration import calibrate_dice
from models.export_onnx import PARITY_TOLERANCE, check_parity, export_network, worker_networks
from models.fusion import FUSION_LABEL_WEIGHT, FUSION_STRUCTURE_WEIGHT
from models.networks import LesionGuidance, NetworkConfig, define_networks
from mrisynth.artifacts import (
    DEFAULT_DICE_THRESHOLD,
    DEFAULT_PROBABILITY_THRESHOLD,
    FORMAT_VERSION,
    LESION_LIBRARY_NAME,
    MANIFEST_NAME,
    FileEntry,
    FusionWeights,
    LesionLibraryEntry,
    LesionVariant,
    Manifest,
    Thresholds,
    Training,
    segmentor_name,
    sha256_file,
    verify_artifacts,
)
from mrisynth.conventions import LABELS, MODALITIES
from mrisynth.structure import DEFAULT_BETA, DEFAULT_MAE_THRESHOLD

log = logging.getLogger(__name__)

RUN_INFO_NAME = "run.json"
CHECKPOINT_NAME = "checkpoint.pt"


class PresetInfo(BaseModel):
    """The part of ``run.json``'s preset the export needs: its name and Algorithm 1's beta."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    name: str
    beta: float = DEFAULT_BETA


class DataInfo(BaseModel):
    """The part of ``run.json``'s data description the export needs.

    Attributes:
        structure_density: mean of the real structural feature maps f (fraction of edge pixels).
    """

    model_config = ConfigDict(extra="allow", frozen=True)

    structure_density: float = Field(gt=0, lt=1)


class RunInfo(BaseModel):
    """``run.json`` of a training run, as ``models.trainer`` writes it; keys the export does not use are
    ignored.

    Attributes:
        preset: the training preset (its name and beta are used).
        network_config: the :class:`~models.networks.NetworkConfig` fields (``dataclasses.asdict``).
        image_size: (H, W) of the training slices, multiples of 8.
        voxel_size_mm: (x, y, z) voxel size of the training slices.
        data: description of the training data.
        command: the command line that started the run.
        seed: the run's random seed.
        steps: steps by stage.
        final_losses: last logged value of each loss, by stage.
    """

    model_config = ConfigDict(extra="ignore", frozen=True)

    preset: PresetInfo
    network_config: dict[str, Any]
    image_size: tuple[int, int]
    voxel_size_mm: tuple[float, float, float]
    data: DataInfo
    command: str
    seed: int
    steps: dict[str, int]
    final_losses: dict[str, dict[str, float]]

    @field_validator("image_size")
    @classmethod
    def _multiple_of_8(cls, size: tuple[int, int]) -> tuple[int, int]:
        if any(n <= 0 or n % 8 for n in size):
            raise ValueError(f"image_size must be positive multiples of 8, got {size}")
        return size


@dataclass(frozen=True)
class TrainingRun:
    """A loaded training run: its description, network config and trained networks (eval mode)."""

    directory: Path
    info: RunInfo
    config: NetworkConfig
    networks: nn.ModuleDict


def load_run(directory: Path) -> TrainingRun:
    """Read ``run.json`` and ``checkpoint.pt`` of a training run.

    Args:
        directory: the run directory of ``mrisynth train --out``.

    Returns:
        The run, with ``define_networks(config)`` loaded from the checkpoint and put in eval mode.

    Raises:
        ValueError: naming the file, if ``run.json`` or the checkpoint is invalid.
        FileNotFoundError: if one of them is missing.
    """
    directory = Path(directory)
    info_path = directory / RUN_INFO_NAME
    try:
        info = RunInfo.model_validate(json.loads(info_path.read_text(encoding="utf-8")))
        config = NetworkConfig(**info.network_config)
    except (TypeError, ValueError) as error:  # ValidationError and JSONDecodeError are ValueErrors
        raise ValueError(f"{info_path}: invalid run description: {error}") from error
    networks = define_networks(config)
    checkpoint_path = directory / CHECKPOINT_NAME
    try:
        checkpoint = torch.load(checkpoint_path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise ValueError(f"{checkpoint_path}: not a weights-only checkpoint: {error}") from error
    try:
        networks.load_state_dict(checkpoint["networks"])
    except (KeyError, TypeError, RuntimeError) as error:
        raise ValueError(
            f"{checkpoint_path}: no networks matching {info_path}'s network config: {error}"
        ) from error
    return TrainingRun(directory, info, config, networks.eval())


def lesion_library_count(path: Path, image_size: tuple[int, int]) -> int:
    """Check a lesion library file and return its number of labels N.

    Args:
        path: ``.npz`` file holding ``labels``, uint8 (N, H, W) with values in ``LABELS``.
        image_size: the expected (H, W).

    Raises:
        ValueError: naming the file, if ``labels`` is missing or has the wrong dtype, shape or values.
    """
    with np.load(path, allow_pickle=False) as library:
        if "labels" not in library:
            raise ValueError(f"{path}: no 'labels' array")
        labels = library["labels"]
    if labels.dtype != np.uint8 or labels.ndim != 3 or labels.shape[1:] != image_size or not len(labels):
        raise ValueError(
            f"{path}: labels must be uint8 (N >= 1, {image_size[0]}, {image_size[1]}), "
            f"got {labels.dtype} {labels.shape}"
        )
    if not np.isin(labels, LABELS).all():
        raise ValueError(f"{path}: label values must be in {LABELS}")
    return len(labels)


def _check_destination(run_directory: Path, out: Path, force: bool) -> None:
    run, target = run_directory.resolve(), out.resolve()
    if target == run or target in run.parents:
        raise ValueError(f"--out {out} would replace the training run {run_directory}")
    occupied = out.is_symlink() or (out.exists() and (not out.is_dir() or any(out.iterdir())))
    if occupied and not force:
        raise FileExistsError(f"{out} exists and is not an empty directory; pass --force to replace it")


def _replace(partial: Path, out: Path) -> None:
    """Rename the finished directory ``partial`` to ``out``, replacing whatever ``out`` is."""
    if out.is_dir() and not out.is_symlink():
        old = out.with_name(f".{out.name}.old-{uuid.uuid4().hex[:8]}")
        out.rename(old)
        partial.rename(out)
        shutil.rmtree(old)
        return
    if out.exists() or out.is_symlink():
        out.unlink()
    partial.rename(out)


def _export_networks(run: TrainingRun, directory: Path, tolerance: float) -> dict[str, FileEntry]:
    """Export every worker network into ``directory``, checking each against torch."""
    entries: dict[str, FileEntry] = {}
    written: dict[int, Path] = {}
    for spec in worker_networks(run.networks, run.config, run.info.image_size):
        start = time.perf_counter()
        path = directory / f"{spec.name}.onnx"
        if id(spec.module) in written:  # 1SEG: one segmentor for every modality
            shutil.copyfile(written[id(spec.module)], path)
        else:
            export_network(spec, path)
            written[id(spec.module)] = path
        difference = check_parity(spec, path, tolerance)
        log.info(
            "%s: %.2f MB, parity %.2g (max abs, batches 1 and 3), %.1f s",
            path.name,
            path.stat().st_size / 1e6,
            difference,
            time.perf_counter() - start,
        )
        entries[spec.name] = FileEntry(file=path.name, sha256=sha256_file(path))
    return entries


CALIBRATION_CODES = 256
"""Codes drawn from N(0, 1) to calibrate the binarization level of DC_f's maps."""


def structure_probability(run: TrainingRun) -> float:
    """The level at which DC_f's maps of N(0, 1) codes have the real maps' edge density.

    DC_f is trained with the mean squared error (5) on sparse binary maps, so its outputs are edge
    probabilities that rarely reach 0.5 where the real maps are uncertain. The level is the
    ``1 - structure_density`` quantile of DC_f's output over ``CALIBRATION_CODES`` codes (seed 0).
    """
    generator = torch.Generator().manual_seed(0)
    height, width = run.info.image_size
    stride = run.config.structure_code_stride
    codes = torch.randn(
        CALIBRATION_CODES,
        run.config.structure_code_channels,
        height // stride,
        width // stride,
        generator=generator,
    )
    with torch.no_grad():
        maps = run.networks["DC_f"](codes)
    level = float(np.quantile(maps.numpy().ravel(), 1.0 - run.info.data.structure_density))
    return min(max(level, 1e-3), 1.0 - 1e-3)


def _manifest(run: TrainingRun, networks: dict[str, FileEntry], library: LesionLibraryEntry) -> Manifest:
    info, config = run.info, run.config
    height, width = info.image_size
    calibration = calibrate_dice(
        cast(LesionGuidance, run.networks["lesion"]), run.directory / "cache", height
    )
    return Manifest(
        format_version=FORMAT_VERSION,
        image_size=info.image_size,
        voxel_size_mm=info.voxel_size_mm,
        modalities=MODALITIES,
        labels=LABELS,
        lesion_guidance=cast(LesionVariant, config.lesion_variant),
        fusion=FusionWeights(label_weight=FUSION_LABEL_WEIGHT, structure_weight=FUSION_STRUCTURE_WEIGHT),
        structure_code_shape=(
            config.structure_code_channels,
            height // config.structure_code_stride,
            width // config.structure_code_stride,
        ),
        semantic_code_channels=config.code_channels,
        thresholds=Thresholds(
            beta=info.preset.beta,
            structure_mae=DEFAULT_MAE_THRESHOLD,
            dice=calibration.dice if calibration else DEFAULT_DICE_THRESHOLD,
            probability=DEFAULT_PROBABILITY_THRESHOLD,
            structure_probability=structure_probability(run),
        ),
        networks=networks,
        segmentors={m: segmentor_name(m) for m in MODALITIES},
        lesion_library=library,
        training=Training(
            preset=info.preset.name,
            command=info.command,
            seed=info.seed,
            data=info.data.model_dump(),
            steps=info.steps,
            final_losses=info.final_losses,
        ),
        dice_calibration=calibration,
    )


def export_run(
    run_directory: Path, out: Path, *, force: bool = False, tolerance: float = PARITY_TOLERANCE
) -> Manifest:
    """Export a training run to a model artifacts directory (``docs/artifacts.md``).

    Args:
        run_directory: the run directory of ``mrisynth train --out``.
        out: the artifacts directory to create; an existing empty directory is filled.
        force: replace ``out`` if it exists and is not empty (default False: refuse).
        tolerance: largest max-abs difference allowed between each ONNX network and its torch twin
            on random inputs at batch 1 and 3, default 1e-4.

    Returns:
        The manifest written to ``out/manifest.json``.

    Raises:
        FileExistsError: if ``out`` is occupied and ``force`` is False.
        ParityError: naming the network and the difference, if an ONNX file does not match torch;
            ``out`` is then left as it was.
        ValueError: if the run directory is invalid or ``out`` would replace it.
    """
    run_directory, out = Path(run_directory), Path(os.path.abspath(out))
    _check_destination(run_directory, out, force)
    run = load_run(run_directory)
    source_library = run_directory / LESION_LIBRARY_NAME
    count = lesion_library_count(source_library, run.info.image_size)
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(f".{out.name}.partial-{uuid.uuid4().hex[:8]}")
    partial.mkdir()
    try:
        networks = _export_networks(run, partial, tolerance)
        library_path = partial / LESION_LIBRARY_NAME
        shutil.copyfile(source_library, library_path)
        library = LesionLibraryEntry(file=LESION_LIBRARY_NAME, sha256=sha256_file(library_path), count=count)
        manifest = _manifest(run, networks, library)
        (partial / MANIFEST_NAME).write_text(manifest.model_dump_json(indent=2) + "\n", encoding="utf-8")
        verify_artifacts(partial)
        _replace(partial, out)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    log.info(
        "exported %s (%s, %d networks) to %s", run_directory, manifest.lesion_guidance, len(networks), out
    )
    return manifest
