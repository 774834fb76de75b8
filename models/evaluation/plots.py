"""The report's figures: Table 2 training curves and scores (matplotlib), example images (OpenCV montage)."""

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from models.evaluation.table2 import RowResult
from mrisynth.conventions import MODALITIES
from mrisynth.montage import grid, overlay_label, save_png, to_gray
from mrisynth.structure import structural_feature_map


def plot_curves(results: list[RowResult], path: Path) -> None:
    """Loss (19) and test Dice over the steps of every Table 2 row, one line per row."""
    figure = Figure(figsize=(11, 4.2), layout="constrained")
    loss_axes, dice_axes = figure.subplots(1, 2)
    for result in results:
        name = f"NO.{result.row.number} {result.row.label}"
        loss_axes.plot(result.curve.loss_steps, result.curve.loss, label=name, linewidth=1)
        dice_axes.plot(result.curve.eval_steps, result.curve.test_dice, marker="o", markersize=3, label=name)
    loss_axes.set(xlabel="step", ylabel="loss (19), training batch", yscale="log", title="Training loss")
    dice_axes.set(xlabel="step", ylabel="whole-tumor Dice, real test split", title="Test Dice")
    dice_axes.legend(fontsize=7, loc="lower right")
    figure.savefig(path, dpi=100)


def plot_table2(results: list[RowResult], path: Path) -> None:
    """Our Dice of every Table 2 row beside the paper's."""
    figure = Figure(figsize=(8, 0.5 * len(results) + 1.5), layout="constrained")
    axes = figure.subplots()
    positions = np.arange(len(results))
    axes.barh(positions - 0.2, [r.dice for r in results], height=0.4, label="ours")
    axes.barh(positions + 0.2, [r.row.dice for r in results], height=0.4, label="paper")
    axes.set_yticks(positions, [f"NO.{r.row.number} {r.row.label}" for r in results], fontsize=8)
    axes.invert_yaxis()
    axes.set(xlabel="whole-tumor Dice on the real test split", xlim=(0, 1), title="Table 2")
    axes.legend(loc="best")
    figure.savefig(path, dpi=100)


def _row(images: np.ndarray, label: np.ndarray, structure: np.ndarray) -> list[np.ndarray]:
    grays = [to_gray(image) for image in images]
    return [
        *grays,
        overlay_label(grays[MODALITIES.index("flair")], label),
        (structure > 0).astype(np.uint8) * 255,
    ]


def plot_examples(
    real: tuple[np.ndarray, np.ndarray],
    synthetic: tuple[np.ndarray, np.ndarray, np.ndarray],
    beta: float,
    path: Path,
) -> None:
    """Real test slices, then synthetic samples: four modalities, the label over FLAIR, the structure map f.

    Args:
        real: (float32 (R, 4, H, W), uint8 (R, H, W)) real slices; their structure map is Algorithm 1
            of T1 (beta ``beta``).
        synthetic: (images (S, 4, H, W), labels (S, H, W), input maps f (S, H, W)).
        beta: Algorithm 1 threshold.
        path: the PNG to write.
    """
    rows = [
        _row(images, label, structural_feature_map(images[0], beta))
        for images, label in zip(*real, strict=True)
    ]
    rows += [_row(images, label, f) for images, label, f in zip(*synthetic, strict=True)]
    names = [f"real {k}" for k in range(len(real[1]))] + [f"synthetic {k}" for k in range(len(synthetic[1]))]
    save_png(path, grid(rows, [*MODALITIES, "label", "f"], names))
