"""Table 2, synthetic data availability (Sec. 3.6, 4.2): segmentors trained on mixtures, scored on real data.

Every row trains a fresh set of lesion segmentors, the ``lesion`` network of the preset's
:class:`~models.networks.NetworkConfig` (4SEG: one U-Net per modality, Sec. 2.7), with the
segmentation stage's step (:class:`models.segmentation_stage.SegmentationStage`: loss (19) with the
preset's ``lesion_loss``, Adam with the preset's lr and betas, input dropout) for the same number of
steps, and is scored on the real test split with :func:`~models.evaluation.metrics.segmentation_scores`.

Data of a row (amounts are fractions of the real training split's N slices, rounded, >= 1 if > 0):

* real xF: the first F * N slices of one seeded permutation of the training split (nested subsets);
* synthetic xF: the first F * N samples of the Table 2 synthetic set;
* enhanced xF: the first F * N slices of one classically augmented set (Sec. 3.3).

``random mixing`` (and single-source rows) draw every batch uniformly from the union of the row's
sources. ``synthetic first`` trains on the synthetic samples, then on the real slices, with the same
optimizer; as Sec. 3.6 says, the steps of each source are proportional to its amount (NO.25, x1 and
x1: half and half; NO.6, x10% real after x1 synthetic: 1/11 of the steps on real data). ``real
first`` is the reverse. Every row starts from the same initial weights (the seed), so rows differ by
their data only. Each row is trained ``repeats`` times (default 3) from different seeds; run r of
every row has the seed ``seed + 1000 r``, so run r of two rows shares its initial weights and the runs
of two rows are paired (:mod:`models.evaluation.stats`). The best run is reported as the paper does
("each experiment is trained four times to retain the best results", Sec. 3.4), with the mean and
standard deviation over runs beside it, and every run's Dice per test case and modality is kept for the
bootstrap intervals of :mod:`models.evaluation.comparisons`.

The segmentors' Adam settings default to the preset's segmentation settings (``Table2Config.lr`` /
``beta1`` None; the demo's lr 2e-4, beta1 0.5), with 400 steps per run. Measured on the 6-case held-out
phantom (issue 15, 2026-12-01): at lr 1e-3, beta1 0.9 and 200 steps, the three runs of the real-only
row NO.1 reached whole-tumor Dice 0.412, 0.080 and 0.219 (one run found almost no lesion); at the
preset's settings and 400 steps, 0.524, 0.317 and 0.406. (lr 1e-3, beta1 0.9 is what makes the
segmentors find lesions in every modality within 1200 steps, issue 12's ``demo-v6``; runs as short as
Table 2's are less stable with it.) The loss is the preset's
``lesion_loss`` (soft Dice + cross-entropy in the registered objective). The training curves are
scored along the way on ``curve_slices`` evenly spaced test slices; the final scores on all of them.
"""

import dataclasses
import logging
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from models.evaluation.metrics import segmentation_scores
from models.evaluation.paper import REAL_FIRST, SYNTHETIC_FIRST, Table2Row
from models.evaluation.stats import case_means, mean_sd
from models.networks import define_lesion_guidance
from models.presets import Preset
from models.segmentation_stage import SegmentationStage
from mrisynth.conventions import MODALITIES

logger = logging.getLogger(__name__)

PREDICT_BATCH = 32
"""Images per forward pass when scoring."""


@dataclass(frozen=True)
class Table2Config:
    """How the Table 2 rows are trained.

    Attributes:
        steps: optimizer steps of every row (the paper's "same number of iterations"), >= 2; default
            400: 7 rows x 3 repeats x 400 steps took 75 of the default run's 78 minutes on the 2-core
            CPU at two threads (about 2 steps/s), see docs/evaluation/README.md.
        repeats: trainings per row from different seeds (the paper: the best of 4), >= 1; default 3.
        evaluations: evaluations along each training for the curves, >= 1; default 3.
        curve_slices: test slices of those evaluations (evenly spaced), >= 1; default 64.
        lr: Adam learning rate of the segmentors; None (default): the preset's segmentation lr.
        beta1: Adam beta1; None (default): the preset's.
    """

    steps: int = 400
    repeats: int = 3
    evaluations: int = 3
    curve_slices: int = 64
    lr: float | None = None
    beta1: float | None = None

    def __post_init__(self) -> None:
        if self.steps < 2 or self.repeats < 1 or self.evaluations < 1 or self.curve_slices < 1:
            raise ValueError(f"need steps >= 2 and repeats, evaluations, curve_slices >= 1, got {self}")

    def segmentor_preset(self, preset: Preset) -> Preset:
        """The preset with the segmentation Adam settings of this config."""
        return dataclasses.replace(
            preset,
            segmentation_lr=preset.segmentation_lr if self.lr is None else self.lr,
            segmentation_beta1=preset.segmentation_beta1 if self.beta1 is None else self.beta1,
        )


@dataclass(frozen=True, eq=False)
class Table2Data:
    """The sources of every row, as arrays at one image size S.

    Attributes:
        real: (float32 (N, 4, S, S), uint8 (N, S, S)), the training split in a seeded random order.
        synthetic: (images, labels) of the Table 2 synthetic set, possibly empty.
        enhanced: (images, labels) of the augmented real slices, possibly empty.
        test: (images, labels) of the real held-out slices.
        test_cases: int (N_test,), the case of each held-out slice, in ``range(cases)``; default all 0.
        cases: number of held-out cases; default 1.
    """

    real: tuple[np.ndarray, np.ndarray]
    synthetic: tuple[np.ndarray, np.ndarray]
    enhanced: tuple[np.ndarray, np.ndarray]
    test: tuple[np.ndarray, np.ndarray]
    test_cases: np.ndarray | None = None
    cases: int = 1

    def case_index(self) -> np.ndarray:
        """int (N_test,) case of each test slice."""
        return np.zeros(len(self.test[1]), np.int64) if self.test_cases is None else self.test_cases


@dataclass
class Curve:
    """One training's history: loss (19) every ``log_every`` steps and the test Dice at evaluations."""

    loss_steps: list[int] = field(default_factory=list)
    loss: list[float] = field(default_factory=list)
    eval_steps: list[int] = field(default_factory=list)
    test_dice: list[float] = field(default_factory=list)


@dataclass(frozen=True, eq=False)
class RunScores:
    """One training of a row, scored on the held-out slices.

    Attributes:
        seed: its seed (weights; batches from (seed, NO.)).
        dice: mean whole-tumor Dice over images and modalities.
        mse: mean MSE likewise.
        dice_by_modality: float64 (4,), mean Dice per modality (``MODALITIES`` order).
        case_dice: float64 (C, 4), mean Dice per held-out case and modality.
        curve: its history.
    """

    seed: int
    dice: float
    mse: float
    dice_by_modality: np.ndarray
    case_dice: np.ndarray
    curve: Curve


@dataclass(frozen=True, eq=False)
class RowResult:
    """Our result of a Table 2 row.

    Attributes:
        row: the paper's row (its numbers are ``row.mse`` and ``row.dice``).
        counts: slices of each source used, e.g. ``{"real": 550, "synthetic": 275, "enhanced": 0}``.
        phases: (source names, steps) of each training phase.
        dice: whole-tumor Dice on the held-out slices (mean over images and modalities), best run.
        mse: MSE of that run.
        dice_by_modality: mean Dice per modality of that run.
        run_dice: Dice of every run.
        curve: history of the best run.
        runs: every run's scores, in seed order.
    """

    row: Table2Row
    counts: dict[str, int]
    phases: list[tuple[str, int]]
    dice: float
    mse: float
    dice_by_modality: dict[str, float]
    run_dice: list[float]
    curve: Curve
    runs: list[RunScores] = field(default_factory=list)

    def mean_sd(self) -> tuple[float, float]:
        """Mean and standard deviation of the Dice over the runs."""
        return mean_sd(np.asarray(self.run_dice))

    def modality_mean_sd(self) -> dict[str, tuple[float, float]]:
        """Per modality, mean and standard deviation of the Dice over the runs."""
        by_run = np.stack([run.dice_by_modality for run in self.runs])
        return {m: mean_sd(by_run[:, i]) for i, m in enumerate(MODALITIES)}


def amount_count(fraction: float, n_real: int) -> int:
    """Slices of an amount ``fraction`` of a training split of ``n_real`` slices (>= 1 when > 0)."""
    return 0 if fraction <= 0 else max(1, round(fraction * n_real))


def required_samples(rows: list[Table2Row], n_real: int) -> tuple[int, int]:
    """(synthetic samples, enhanced slices) the rows need: the largest amount of each."""
    synthetic = max(amount_count(row.synthetic, n_real) for row in rows)
    enhanced = max(amount_count(row.enhanced, n_real) for row in rows)
    return synthetic, enhanced


def _sources(row: Table2Row, data: Table2Data) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    n_real = len(data.real[1])
    sources = {}
    for name, fraction, (images, labels) in (
        ("real", row.real, data.real),
        ("synthetic", row.synthetic, data.synthetic),
        ("enhanced", row.enhanced, data.enhanced),
    ):
        count = amount_count(fraction, n_real)
        if count > len(labels):
            raise ValueError(f"row NO.{row.number} needs {count} {name} slices, {len(labels)} were made")
        sources[name] = (images[:count], labels[:count])
    return sources


def phases(row: Table2Row, data: Table2Data, steps: int) -> list[tuple[str, int, np.ndarray, np.ndarray]]:
    """The training phases of a row: (source names, steps, images, labels) in training order."""
    sources = {name: pair for name, pair in _sources(row, data).items() if len(pair[1])}
    if row.mixing in (SYNTHETIC_FIRST, REAL_FIRST):
        order = ["synthetic", "real"] if row.mixing == SYNTHETIC_FIRST else ["real", "synthetic"]
        first = len(sources[order[0]][1]) / (len(sources["real"][1]) + len(sources["synthetic"][1]))
        first_steps = min(max(round(first * steps), 1), steps - 1)
        return [
            (order[0], first_steps, *sources[order[0]]),
            (order[1], steps - first_steps, *sources[order[1]]),
        ]
    images = np.concatenate([pair[0] for pair in sources.values()])
    labels = np.concatenate([pair[1] for pair in sources.values()])
    return [(" + ".join(sources), steps, images, labels)]


def predict(lesion: nn.Module, images: np.ndarray, device: torch.device) -> np.ndarray:
    """Label probabilities of every modality's segmentor, float32 (N, 4, 4, H, W), in eval mode."""
    lesion.eval()
    with torch.no_grad():
        batches = [
            lesion(torch.from_numpy(images[start : start + PREDICT_BATCH]).to(device)).float().cpu().numpy()
            for start in range(0, len(images), PREDICT_BATCH)
        ]
    return np.concatenate(batches)


def _score(
    lesion: nn.Module, test: tuple[np.ndarray, np.ndarray], device: torch.device
) -> tuple[np.ndarray, np.ndarray]:
    """(Dice, MSE), each (N, 4), of the segmentors on the test split."""
    return segmentation_scores(predict(lesion, test[0], device), test[1])


def curve_rows(n_test: int, count: int) -> np.ndarray:
    """Indices of ``count`` evenly spaced test slices (all of them when there are fewer)."""
    return np.unique(np.linspace(0, n_test - 1, min(count, n_test)).round().astype(np.int64))


def _train_once(
    row: Table2Row, data: Table2Data, preset: Preset, config: Table2Config, seed: int, device: torch.device
) -> RunScores:
    torch.manual_seed(seed)
    lesion = define_lesion_guidance(preset.network).to(device)
    stage = SegmentationStage(nn.ModuleDict({"lesion": lesion}), config.segmentor_preset(preset), device)
    rng = np.random.default_rng([seed, row.number])
    evaluate_at = set(
        np.linspace(config.steps / config.evaluations, config.steps, config.evaluations).round().astype(int)
    )
    picks = curve_rows(len(data.test[1]), config.curve_slices)
    curve_test = (data.test[0][picks], data.test[1][picks])
    curve = Curve()
    step = 0
    with tqdm(total=config.steps, desc=f"Table 2 NO.{row.number}", unit="it", dynamic_ncols=True) as bar:
        for _, phase_steps, images, labels in phases(row, data, config.steps):
            stage.train()
            for _ in range(phase_steps):
                rows = rng.integers(len(labels), size=preset.batch_size)
                batch = {
                    "x": torch.from_numpy(images[rows]),
                    "label_x": torch.from_numpy(labels[rows]).long(),
                }
                stage.set_input({key: value.to(device) for key, value in batch.items()})
                stage.optimize_parameters()
                step += 1
                bar.update(1)
                if step % preset.log_every == 0 or step == config.steps:
                    curve.loss_steps.append(step)
                    curve.loss.append(stage.current_losses()["segmentation"])
                if step in evaluate_at:
                    curve.eval_steps.append(step)
                    curve.test_dice.append(float(_score(lesion, curve_test, device)[0].mean()))
                    bar.set_postfix(test_dice=f"{curve.test_dice[-1]:.3f}", refresh=False)
                    stage.train()
    dice, mse = _score(lesion, data.test, device)
    return RunScores(
        seed=seed,
        dice=float(dice.mean()),
        mse=float(mse.mean()),
        dice_by_modality=dice.mean(axis=0),
        case_dice=case_means(dice, data.case_index(), data.cases),
        curve=curve,
    )


def run_seeds(seed: int, repeats: int) -> list[int]:
    """The seeds of a row's runs: ``seed + 1000 r`` for run r (the same for every row)."""
    return [seed + 1000 * r for r in range(repeats)]


def train_row(
    row: Table2Row, data: Table2Data, preset: Preset, config: Table2Config, seed: int, device: torch.device
) -> RowResult:
    """Train a row ``config.repeats`` times and keep the best run (module docstring).

    Args:
        row: the paper's row.
        data: the sources.
        preset: network config, batch size, optimizer and logging interval.
        config: steps, repeats and evaluations.
        seed: run r is seeded ``seed + 1000 * r`` (weights) and (that seed, NO.) (batches).
        device: where to train.
    """
    runs = [_train_once(row, data, preset, config, s, device) for s in run_seeds(seed, config.repeats)]
    best = max(runs, key=lambda run: run.dice)
    counts = {name: len(pair[1]) for name, pair in _sources(row, data).items()}
    logger.info(
        "Table 2 NO.%d %s: best Dice %.3f, MSE %.4f, runs %s (paper %.3f, %.3f)",
        row.number,
        row.label,
        best.dice,
        best.mse,
        ", ".join(f"{run.dice:.3f}" for run in runs),
        row.dice,
        row.mse,
    )
    return RowResult(
        row=row,
        counts=counts,
        phases=[(names, steps) for names, steps, _, _ in phases(row, data, config.steps)],
        dice=best.dice,
        mse=best.mse,
        dice_by_modality=dict(zip(MODALITIES, map(float, best.dice_by_modality), strict=True)),
        run_dice=[run.dice for run in runs],
        curve=best.curve,
        runs=runs,
    )
