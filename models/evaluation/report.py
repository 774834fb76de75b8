"""The evaluation report: ``report.md`` (the paper's tables with our numbers beside), ``results.csv``, PNGs.

``results.csv`` holds every number of the report, one per line: ``section, item, metric, ours, paper``
(``paper`` empty where the paper has none). The report records the command, every seed, the thread
count, the wall time, the held-out cases and the sha256 of the artifacts' manifest at the start and at
the end of the run, so that it can be reproduced, and says when the artifacts changed during the run.
The sections on the held-out set (Table 2 with its intervals, paired fidelity, MMD, translation) are
in :mod:`models.evaluation.report_tables`.
"""

import csv
import logging
from collections.abc import Iterator
from pathlib import Path

from models.evaluation.findings import closing_note
from models.evaluation.markdown import ABSENT, number, table
from models.evaluation.modalities import MIN_REGION_PIXELS, REGIONS
from models.evaluation.plots import plot_curves, plot_examples, plot_table2
from models.evaluation.report_tables import (
    Line,
    fidelity_lines,
    held_out_csv,
    held_out_lines,
    mmd_lines,
    seed_lines,
    table2_lines,
    translation_lines,
)
from models.evaluation.run import EvaluationResults, seeds
from models.evaluation.swd import pyramid_levels
from models.evaluation.synthetic import SyntheticSet
from models.evaluation.table1 import FILTER_THRESHOLDS
from models.presets import get_preset
from mrisynth.conventions import MODALITIES

logger = logging.getLogger(__name__)

__all__ = ["ABSENT", "csv_lines", "report_markdown", "write_report"]

FIGURES: dict[str, str] = {
    "table2": "table2.png",
    "curves": "curves.png",
    "examples": "examples.png",
}
"""Figure files of the report directory."""

_table, _f = table, number


def _dice_threshold(results: EvaluationResults, synthetic: SyntheticSet) -> float:
    asked = synthetic.request.thresholds.dice
    return results.manifest.thresholds.dice if asked is None else asked


def _structure_threshold(results: EvaluationResults, synthetic: SyntheticSet) -> float:
    asked = synthetic.request.thresholds.structure_mae
    return results.manifest.thresholds.structure_mae if asked is None else asked


def _header(results: EvaluationResults) -> list[str]:
    config, manifest = results.config, results.manifest
    preset = get_preset(config.preset)
    segmentors = config.table2.segmentor_preset(preset)
    start, end = results.manifest_sha256
    changed = "" if start == end else f" **The manifest changed during the run (now `{end}`): rerun.**"
    leak = (
        f" **Test cases {', '.join(results.leaked)} are among the artifacts' training cases: Table 1's "
        "real row is not held out.**"
        if results.leaked
        else ""
    )
    return [
        f"# Evaluation of `{config.artifacts}` on `{config.data}`",
        "",
        "The experiments of Qu et al., *Synthesis of Registered Brain Multimodal MRI with Lesions*, Tables 1 "
        "and 2 (Sec. 3.5, 3.6), with our numbers beside the paper's, and the registration, realism and "
        "diversity of the synthetic data. Written by `mrisynth evaluate`; every number is in "
        "`results.csv`.",
        "",
        f"- Command: `{config.command}`",
        f"- Main seed {config.seed}; torch {results.environment.get('torch')} on "
        f"{results.environment.get('device')} with {results.environment.get('threads')} thread(s); wall "
        f"time {results.wall_s / 60:.1f} min (load average {results.environment.get('load')}: the machine "
        "is shared, so the time depends on what else runs).",
        f"- Artifacts: preset `{manifest.training.preset}`, lesion guidance `{manifest.lesion_guidance}`, "
        f"{manifest.image_size[0]} x {manifest.image_size[1]}, `manifest.json` sha256 `{start}`.{changed}",
        f"- Real data: {len(results.train)} training slices of {len(results.train.cases)} cases, "
        f"{len(results.test)} test slices of {len(results.test.cases)} case(s) "
        f"({', '.join(results.test.cases)}), the split the artifacts were trained with.{leak}",
        *held_out_lines(results),
        f"- Table 2 segmentors: the `{preset.network.lesion_variant}` lesion network of preset "
        f"`{preset.name}` (ngf {preset.network.ngf}, input dropout {preset.network.dropout:g}), batch size "
        f"{preset.batch_size}, Adam lr {segmentors.segmentation_lr or preset.lr:g} beta1 "
        f"{segmentors.beta1 if segmentors.segmentation_beta1 is None else segmentors.segmentation_beta1:g}, "
        f"loss (19) as `{preset.lesion_loss}` (models/presets.py, models/evaluation/table2.py); budget "
        f"{config.table2.steps} steps and {config.table2.repeats} run(s) per row "
        f"({config.table2.steps * config.table2.repeats * len(results.table2)} steps in all).",
        *seed_lines(results, seeds(config)),
        "",
        "Dice is the whole-tumor Dice (lesion = label > 0) of each 2D image, 1 when both are empty; MSE is "
        "the squared error of loss (19) between the one-hot label and the softmax; both averaged over the "
        "images and the four modalities (Sec. 3.4).",
    ]


def _synthesis(results: EvaluationResults) -> list[str]:
    sets = [("unfiltered (Table 1, registration, realism)", results.unfiltered)]
    if results.table2_set is not None:
        sets.append(("Table 2", results.table2_set))
    rows = []
    for name, synthetic in sets:
        progress = synthetic.progress
        rows.append(
            [
                name,
                len(synthetic),
                progress.accepted,
                _f(_structure_threshold(results, synthetic), 2),
                _f(_dice_threshold(results, synthetic), 2),
                progress.candidates,
                f"{progress.acceptance_rate:.0%}",
                f"{progress.rejected_structure} / {progress.rejected_lesion} / {progress.rejected_dice}",
                _f(float(synthetic.mean_dice.mean())),
            ]
        )
    headers = [
        "set",
        "samples used",
        "samples made",
        "Algorithm 3 MAE",
        "lesion filter Dice",
        "candidates",
        "acceptance",
        "rejected (Alg. 3 / fit / filter)",
        "mean filter Dice",
    ]
    notes = [f"*{s.note}.*" for _, s in sets if s.note]
    return [
        "## Synthetic data",
        "",
        f"Made by the worker's ONNX pipeline (Fig. 7), seed {results.config.seed}: samples 0 .. n - 1 of "
        "one request, of which a set uses the first; the counts are those of the whole request.",
        "",
        _table(headers, rows),
        "",
        *notes,
    ]


def _table1(results: EvaluationResults) -> list[str]:
    rows = [
        [row.scheme, row.dataset, row.images or "", _f(row.mse), _f(row.dice), row.paper_mse, row.paper_dice]
        for row in results.table1
    ]
    per_modality = [
        f"{row.dataset}: " + ", ".join(f"{m} {d:.3f}" for m, d in row.dice_by_modality.items())
        for row in results.table1
        if row.dice_by_modality
    ]
    headers = [
        "segmentation schemes",
        "testing dataset",
        "images",
        "MSE",
        "Dice",
        "MSE (paper)",
        "Dice (paper)",
    ]
    return [
        "## Table 1. Lesion generation methods",
        "",
        "The artifacts' segmentors (trained on the real training split) on the real test split, on the "
        "held-out set when it is a folder of its own, and on the unfiltered synthetic set (Sec. 3.5).",
        "",
        _table(headers, rows),
        "",
        "Dice per modality: " + "; ".join(per_modality) + ".",
        "",
        *_filter_pass(results),
    ]


def _filter_pass(results: EvaluationResults) -> list[str]:
    rows = [
        [row.dataset, *(f"{row.filter_pass[t]:.1%}" for t in FILTER_THRESHOLDS)]
        for row in results.table1
        if row.filter_pass
    ]
    return [
        "Lesion filter pass rate (Sec. 2.8): share of the images with a lesion whose mean whole-tumor Dice "
        "over the four segmentors reaches the threshold. On the real test split it is the filter's "
        "ceiling: real slices the segmentors have not seen.",
        "",
        _table(["images", *(f"Dice >= {t:g}" for t in FILTER_THRESHOLDS)], rows),
    ]


def _registration(results: EvaluationResults) -> list[str]:
    registered = results.registration
    rows = [
        ["synthetic sample, between its 4 modalities", _f(registered.synthetic_between)],
        ["synthetic sample, each modality with its input map f", _f(registered.synthetic_with_input)],
        ["real held-out slice, between its 4 modalities (registered reference)", _f(registered.real_between)],
        [
            "modalities of different synthetic samples (unregistered reference)",
            _f(registered.unpaired_between),
        ],
    ]
    return [
        "## Registration",
        "",
        f"Dice between Algorithm 1 maps (beta {results.manifest.thresholds.beta:g}), mean over "
        f"{registered.samples} unfiltered synthetic samples and the 6 modality pairs.",
        "",
        _table(["maps compared", "Dice"], rows),
    ]


def _realism(results: EvaluationResults) -> list[str]:
    realism = results.realism
    size = results.manifest.image_size[0]
    levels = pyramid_levels(size, results.config.realism.swd.min_size)
    sides = [size >> level for level in range(levels)]
    swd_rows = [[m, "synthetic", *(_f(v, 1) for v in realism.swd_synthetic[m])] for m in MODALITIES] + [
        [m, "real held-out", *(_f(v, 1) for v in realism.swd_real[m])] for m in MODALITIES
    ]
    ssim_rows = [[m, _f(realism.ms_ssim_synthetic[m]), _f(realism.ms_ssim_real[m])] for m in MODALITIES]
    return [
        "## Realism and diversity",
        "",
        "Sliced Wasserstein distance (x1e3) between 7 x 7 Laplacian-pyramid patches of each set and of the "
        "real training slices (Karras et al.); the real held-out slices give the reference.",
        "",
        _table(["modality", "set", *(f"{side} px" for side in sides)], swd_rows),
        "",
        f"Mean MS-SSIM over {results.config.realism.pairs} random pairs within a set (lower: more diverse).",
        "",
        _table(["modality", "synthetic", "real training"], ssim_rows),
        "",
        f"Mean MS-SSIM between the four modalities of one sample (higher: the modalities differ less): "
        f"synthetic {realism.modalities_synthetic:.3f}, real held-out slices {realism.modalities_real:.3f}.",
        "",
        "## Examples",
        "",
        f"![Real test slices, then synthetic samples]({FIGURES['examples']})",
    ]


def _sign(value: float) -> str:
    return "n/a" if value != value else ("+" if value > 0 else "-")


def _modalities(results: EvaluationResults) -> list[str]:
    scores = results.modalities
    rows = []
    for modality in MODALITIES:
        for value, name in REGIONS.items():
            real, synthetic = (
                scores.contrast_real[modality][value],
                scores.contrast_synthetic[modality][value],
            )
            same = "yes" if _sign(real) == _sign(synthetic) else "**no**"
            rows.append([modality, name, _f(real, 2), _f(synthetic, 2), same])
    probe = [[m, _f(scores.probe_synthetic[m]), _f(scores.probe_real[m])] for m in MODALITIES]
    config = scores.probe
    return [
        "## Distinct modalities",
        "",
        "Lesion contrast: mean inside the region minus the healthy brain, in healthy-brain standard "
        f"deviations, over the slices holding >= {MIN_REGION_PIXELS} pixels of it (real held-out slices; "
        "unfiltered synthetic samples).",
        "",
        _table(["modality", "region", "real", "synthetic", "same sign"], rows),
        "",
        f"An independent modality probe (Encoder body ngf {config.ngf} + global mean, seed {config.seed}, "
        f"{config.steps} Adam steps of {config.batch_size} real training images; not the classifier CL "
        "that guided the training): the share of images it names by their modality.",
        "",
        _table(["modality", "synthetic", "real held-out"], probe),
    ]


def report_markdown(results: EvaluationResults) -> str:
    """The whole ``report.md``."""
    sections = [
        _header(results),
        _synthesis(results),
        _table1(results),
        table2_lines(results),
        fidelity_lines(results),
        translation_lines(results),
        _registration(results),
        _realism(results),
        mmd_lines(results),
        _modalities(results),
        ["## Closing note", "", *(f"- {note}" for note in closing_note(results))],
    ]
    return "\n".join(line for section in sections for line in [*section, ""])


def csv_lines(results: EvaluationResults) -> Iterator[Line]:
    """Every number of the report as (section, item, metric, ours, paper)."""
    for fidelity in results.table1:
        item = f"{fidelity.scheme} {fidelity.dataset}"
        yield ("table1", item, "mse", fidelity.mse, fidelity.paper_mse)
        yield ("table1", item, "dice", fidelity.dice, fidelity.paper_dice)
        for modality, value in fidelity.dice_by_modality.items():
            yield ("table1", item, f"dice_{modality}", value, None)
        for threshold, share in fidelity.filter_pass.items():
            yield ("table1", item, f"filter_pass_{threshold:g}", share, None)
    for result in results.table2:
        item = f"NO.{result.row.number} {result.row.label}"
        yield ("table2", item, "mse", result.mse, result.row.mse)
        yield ("table2", item, "dice", result.dice, result.row.dice)
        for modality, value in result.dice_by_modality.items():
            yield ("table2", item, f"dice_{modality}", value, None)
        for run, value in enumerate(result.run_dice):
            yield ("table2", item, f"dice_run{run}", value, None)
    for name, value in vars(results.registration).items():
        yield ("registration", name, "dice" if name != "samples" else "count", value, None)
    realism = results.realism
    for modality in MODALITIES:
        for level, value in enumerate(realism.swd_synthetic[modality]):
            yield ("realism", f"{modality} level {level}", "swd_x1e3_synthetic", value, None)
        for level, value in enumerate(realism.swd_real[modality]):
            yield ("realism", f"{modality} level {level}", "swd_x1e3_real_held_out", value, None)
        yield ("diversity", modality, "ms_ssim_synthetic", realism.ms_ssim_synthetic[modality], None)
        yield ("diversity", modality, "ms_ssim_real", realism.ms_ssim_real[modality], None)
    yield ("diversity", "between modalities", "ms_ssim_synthetic", realism.modalities_synthetic, None)
    yield ("diversity", "between modalities", "ms_ssim_real", realism.modalities_real, None)
    scores = results.modalities
    for modality in MODALITIES:
        for value, name in REGIONS.items():
            yield ("contrast", f"{modality} {name}", "real", scores.contrast_real[modality][value], None)
            yield (
                "contrast",
                f"{modality} {name}",
                "synthetic",
                scores.contrast_synthetic[modality][value],
                None,
            )
        yield ("probe", modality, "accuracy_synthetic", scores.probe_synthetic[modality], None)
        yield ("probe", modality, "accuracy_real_held_out", scores.probe_real[modality], None)
    yield from held_out_csv(results)
    yield ("run", "evaluation", "wall_s", round(results.wall_s, 1), None)


def write_report(results: EvaluationResults) -> Path:
    """Write report.md, results.csv and the figures into ``results.config.out``; returns report.md's path."""
    out = Path(results.config.out)
    out.mkdir(parents=True, exist_ok=True)
    if results.table2:
        plot_table2(results.table2, out / FIGURES["table2"])
        plot_curves(results.table2, out / FIGURES["curves"])
    count = results.config.examples
    test, synthetic = results.held_out.split, results.unfiltered
    real_count = max(count // 2, 1)
    picks = [int(len(test) * (k + 0.5) / real_count) for k in range(real_count)]
    plot_examples(
        (test.images[picks], test.labels[picks]),
        (synthetic.images[:count], synthetic.labels[:count], synthetic.f[:count]),
        results.manifest.thresholds.beta,
        out / FIGURES["examples"],
    )
    with (out / "results.csv").open("w", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(["section", "item", "metric", "ours", "paper"])
        writer.writerows(["" if cell is None else cell for cell in line] for line in csv_lines(results))
    path = out / "report.md"
    path.write_text(report_markdown(results))
    logger.info("wrote the evaluation report %s", path)
    return path
