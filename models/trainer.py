"""The training run: stages in order, checkpoints, resume, progress, and the run directory.

The run directory (docs/artifacts.md) gets:

* ``run.json``: preset, NetworkConfig, image and voxel size, data description, command, seed, device,
  steps per stage; rewritten at the start and after each stage (with the stages completed and each
  stage's last logged losses);
* ``checkpoint.pt``: ``{"networks": define_networks(config).state_dict(), "optimizers": the running
  stage's optimizer states, "stage", "step", "completed", "rng", "preset", "seed"}``, written every
  ``preset.checkpoint_every`` steps and at the end of each stage, to a temporary file renamed over the
  old one (``os.replace``), so it is always whole;
* ``losses.csv``: a row every ``preset.log_every`` steps: stage, step, every loss of every stage
  (blank when not the row's stage), it/s;
* ``lesion_library.npz``: ``labels`` uint8 (N, S, S), the training labels with a lesion;
* ``cache/``: the slice cache.

Resume (``resume=True``) loads the checkpoint (weights, optimizers, step, the torch / CUDA / numpy
random states), drops the ``losses.csv`` rows written after it, and continues: a crash loses at most
one checkpoint interval, and on CPU the resumed run computes exactly what the uninterrupted one would.
"""

import csv
import json
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from models.data import load_training_data
from models.networks import define_networks
from models.presets import STAGES, Preset
from models.segmentation_stage import SegmentationStage
from models.stage import Stage
from models.structure_stage import StructureStage
from models.synthesis_stage import SynthesisStage

logger = logging.getLogger(__name__)

STAGE_CLASSES: dict[str, type[Stage]] = {
    cls.name: cls for cls in (StructureStage, SynthesisStage, SegmentationStage)
}
CSV_COLUMNS: tuple[str, ...] = (
    "stage",
    "step",
    *(name for stage in STAGES for name in STAGE_CLASSES[stage].loss_names),
    "it_s",
)


@dataclass(frozen=True)
class TrainOptions:
    """One ``mrisynth train`` invocation.

    Attributes:
        data: BraTS folder.
        out: run directory.
        preset: the training preset.
        stages: stages to train, run in ``STAGES`` order.
        resume: continue from ``out/checkpoint.pt`` (a fresh run refuses to overwrite one).
        seed: seed of torch and of the data sampling.
        command: the command line, recorded in ``run.json``.
        device: torch device; default CUDA when available, else CPU.
        threads: CPU threads of torch (``torch.set_num_threads``); 0 keeps torch's default (the core
            count). On a CPU shared with other busy processes 1 thread can be several times faster than
            2, as torch's OpenMP workers then wait on each other.
    """

    data: Path
    out: Path
    preset: Preset
    stages: tuple[str, ...] = STAGES
    resume: bool = False
    seed: int = 0
    command: str = ""
    device: str | None = None
    threads: int = 0


def _atomic_write(path: Path, write: Any) -> None:
    """Call ``write(tmp_path)`` then rename the temporary file over ``path``."""
    tmp = path.with_name(f".{path.name}.tmp")
    write(tmp)
    os.replace(tmp, path)


def _rng_state(rng: np.random.Generator) -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "numpy": rng.bit_generator.state}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any], rng: np.random.Generator) -> None:
    torch.set_rng_state(state["torch"])
    rng.bit_generator.state = state["numpy"]
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class Trainer:
    """Runs the stages of a :class:`TrainOptions` and keeps the run directory (module docstring).

    Raises (from :meth:`run`):
        ValueError: a checkpoint exists and ``resume`` is False; the checkpoint was made with another
            preset or seed; unknown stage names; unusable data.
    """

    def __init__(self, options: TrainOptions) -> None:
        unknown = set(options.stages) - set(STAGES)
        if unknown or not options.stages:
            raise ValueError(f"stages must be among {STAGES}, got {list(options.stages)}")
        self.options = options
        self.preset = options.preset
        self.out = Path(options.out)
        self.checkpoint_path = self.out / "checkpoint.pt"
        self.csv_path = self.out / "losses.csv"
        self.device = torch.device(options.device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.completed: list[str] = []
        self.final_losses: dict[str, dict[str, float]] = {}

    def run(self) -> nn.ModuleDict:
        """Train the requested stages in order; returns the trained networks."""
        options, preset = self.options, self.preset
        checkpoint = self._load_checkpoint()
        self.out.mkdir(parents=True, exist_ok=True)
        if options.threads > 0:
            torch.set_num_threads(options.threads)
        torch.manual_seed(options.seed)
        self.rng = np.random.default_rng(options.seed)
        self.data = load_training_data(options.data, self.out / "cache", preset)
        _atomic_write(self.out / "lesion_library.npz", self._write_lesion_library)
        self.networks = define_networks(preset.network).to(self.device)
        if checkpoint is not None:
            self.networks.load_state_dict(checkpoint["networks"])
            self.completed = list(checkpoint["completed"])
            self.final_losses = dict(checkpoint["final_losses"])
            _set_rng_state(checkpoint["rng"], self.rng)
        self._start_csv(checkpoint)
        self._write_run_json()
        for name in (stage for stage in STAGES if stage in options.stages):
            if name in self.completed:
                logger.info("stage %s: already completed, skipped", name)
                continue
            resuming = checkpoint is not None and checkpoint["stage"] == name
            self._train_stage(name, checkpoint if resuming else None)
            self._write_run_json()
        return self.networks

    def _write_lesion_library(self, path: Path) -> None:
        with path.open("wb") as stream:
            np.savez_compressed(stream, labels=self.data.lesion_library)

    def _load_checkpoint(self) -> dict[str, Any] | None:
        if not self.checkpoint_path.is_file():
            if self.options.resume:
                logger.warning("no checkpoint in %s: starting a fresh run", self.out)
            return None
        if not self.options.resume:
            raise ValueError(f"{self.checkpoint_path} exists: pass --resume to continue it, or another --out")
        checkpoint: dict[str, Any] = torch.load(self.checkpoint_path, map_location="cpu", weights_only=False)
        if (checkpoint["preset"], checkpoint["seed"]) != (self.preset.name, self.options.seed):
            raise ValueError(
                f"{self.checkpoint_path} was made with preset {checkpoint['preset']!r} and seed "
                f"{checkpoint['seed']}, not {self.preset.name!r} and {self.options.seed}"
            )
        stage, step = checkpoint["stage"], checkpoint["step"]
        logger.info("resuming %s: stage %s, step %d", self.checkpoint_path, stage, step)
        return checkpoint

    def _train_stage(self, name: str, checkpoint: dict[str, Any] | None) -> None:
        cls, preset = STAGE_CLASSES[name], self.preset
        stage = cls(self.networks, preset, self.device)
        step, total = 0, preset.steps_for(name, len(self.data))
        if checkpoint is not None:
            stage.load_state_dict(checkpoint["optimizers"])
            step = checkpoint["step"]
        logger.info("stage %s: steps %d to %d of %d on %s", name, step, total, total, self.device)
        stage.train()
        progress = tqdm(total=total, initial=step, desc=name, unit="it", dynamic_ncols=True)
        window_start, window_steps = time.perf_counter(), 0
        while step < total:
            stage.set_input(self.data.batch(preset.batch_size, self.rng, self.device))
            stage.optimize_parameters()
            step += 1
            window_steps += 1
            progress.update(1)
            if step % preset.log_every == 0 or step == total:
                rate = window_steps / max(time.perf_counter() - window_start, 1e-9)
                self._log(name, step, stage.current_losses(), rate, progress)
                window_start, window_steps = time.perf_counter(), 0
            if step == total:
                self.completed.append(name)
            if step % preset.checkpoint_every == 0 or step == total:
                self._save_checkpoint(stage, step)
        progress.close()
        logger.info("stage %s: done, last losses %s", name, self.final_losses.get(name, {}))

    def _log(self, stage: str, step: int, values: dict[str, float], rate: float, progress: tqdm) -> None:
        self.final_losses[stage] = values
        progress.set_postfix({k: f"{v:.3g}" for k, v in values.items()}, refresh=False)
        row = {"stage": stage, "step": step, **values, "it_s": f"{rate:.3f}"}
        with self.csv_path.open("a", newline="") as stream:
            csv.DictWriter(stream, CSV_COLUMNS).writerow(row)

    def _save_checkpoint(self, stage: Stage, step: int) -> None:
        state = {
            "networks": self.networks.state_dict(),
            "optimizers": stage.state_dict(),
            "stage": stage.name,
            "step": step,
            "completed": list(self.completed),
            "final_losses": self.final_losses,
            "rng": _rng_state(self.rng),
            "preset": self.preset.name,
            "seed": self.options.seed,
        }
        _atomic_write(self.checkpoint_path, lambda tmp: torch.save(state, tmp))

    def _start_csv(self, checkpoint: dict[str, Any] | None) -> None:
        """Fresh run: header only. Resume: keep the rows up to the checkpoint, drop those after it."""
        rows: list[dict[str, str]] = []
        if checkpoint is not None and self.csv_path.is_file():
            with self.csv_path.open(newline="") as stream:
                rows = [
                    row
                    for row in csv.DictReader(stream)
                    if row["stage"] in checkpoint["completed"]
                    or (row["stage"] == checkpoint["stage"] and int(row["step"]) <= checkpoint["step"])
                ]

        def write(tmp: Path) -> None:
            with tmp.open("w", newline="") as stream:
                writer = csv.DictWriter(stream, CSV_COLUMNS)
                writer.writeheader()
                writer.writerows(rows)

        _atomic_write(self.csv_path, write)

    def _write_run_json(self) -> None:
        preset, data = self.preset, self.data
        record = {
            "preset": preset.to_dict(),
            "network_config": asdict(preset.network),
            "image_size": [preset.image_size, preset.image_size],
            "voxel_size_mm": list(data.voxel_size_mm),
            "data": data.describe(),
            "command": self.options.command,
            "seed": self.options.seed,
            "device": str(self.device),
            "threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "steps": {name: preset.steps_for(name, len(data)) for name in STAGES},
            "stages_requested": [name for name in STAGES if name in self.options.stages],
            "stages_completed": list(self.completed),
            "final_losses": self.final_losses,
        }
        _atomic_write(self.out / "run.json", lambda tmp: tmp.write_text(json.dumps(record, indent=2)))


def train(options: TrainOptions) -> nn.ModuleDict:
    """Train the stages of ``options`` (see :class:`Trainer`); returns the trained networks."""
    return Trainer(options).run()


def stage_names(stage: str) -> Sequence[str]:
    """The stages of a ``--stage`` value: one name, or ``all`` for every stage in order."""
    return STAGES if stage == "all" else (stage,)
