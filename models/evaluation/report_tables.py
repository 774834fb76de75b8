"""The report's sections on the held-out set: Table 2 with repeats and intervals, paired fidelity, MMD and
the translation table, and their ``results.csv`` lines (see :mod:`models.evaluation.report`)."""

from collections.abc import Iterator

from models.evaluation.findings import empty_prediction_dice
from models.evaluation.markdown import mean_sd, number, table
from models.evaluation.mmd import FEATURES
from models.evaluation.paper import amount
from models.evaluation.run import EvaluationResults
from models.evaluation.stats import Interval
from mrisynth.conventions import MODALITIES

Line = tuple[str, str, str, float | int | str | None, float | str | None]
"""A CSV line: section, item, metric, ours, paper."""

FIGURES: dict[str, str] = {"table2": "table2.png", "curves": "curves.png"}


def held_out_lines(results: EvaluationResults) -> list[str]:
    """The held-out set and how it was split off."""
    held = results.held_out
    cases = held.split.cases
    if held.separate:
        how = (
            f"every case of `{held.source}`, a folder of its own: held out by subject from the "
            f"{len(results.train.cases)} training cases of `{results.config.data}` (checked by the slices' "
            "bytes, since a phantom numbers its cases from 0 whatever its seed)"
        )
    else:
        how = "the artifacts' test split (the split they were trained with)"
    leak = f" **Leaked: {', '.join(results.leaked)}.**" if results.leaked else ""
    return [
        f"- Held-out set (Table 2, paired fidelity, translation, contrast, classifier, MMD, registration and "
        f"realism references): {len(held)} slices of {len(cases)} cases ({', '.join(cases)}), {how}.{leak}",
    ]


def _interval(interval: Interval, digits: int = 3) -> str:
    return f"{interval.estimate:+.{digits}f} [{interval.low:+.{digits}f}, {interval.high:+.{digits}f}]"


def table2_lines(results: EvaluationResults) -> list[str]:
    """Table 2: best run, mean +- sd over runs, per-modality Dice, and the paired comparisons."""
    rows = []
    for result in results.table2:
        row = result.row
        mean, sd = result.mean_sd()
        by_modality = result.modality_mean_sd()
        rows.append(
            [
                row.number,
                amount(row.real),
                amount(row.synthetic),
                amount(row.enhanced),
                row.mixing,
                " / ".join(str(result.counts[k]) for k in ("real", "synthetic", "enhanced")),
                ", ".join(f"{names} {steps}" for names, steps in result.phases),
                number(result.mse),
                number(result.dice),
                mean_sd(mean, sd),
                " / ".join(f"{by_modality[m][0]:.2f}" for m in MODALITIES),
                row.mse,
                row.dice,
                ", ".join(f"{d:.3f}" for d in result.run_dice),
            ]
        )
    headers = [
        "NO.",
        "real data",
        "synthetic data",
        "enhanced data",
        "mixing modes",
        "slices (real / syn. / enh.)",
        "steps",
        "MSE (best)",
        "Dice (best)",
        "Dice (mean +- sd)",
        "mean Dice t1 / t1ce / t2 / flair",
        "MSE (paper)",
        "Dice (paper)",
        "Dice of each run",
    ]
    config = results.config.table2
    held = results.held_out
    return [
        "## Table 2. Synthetic data availability",
        "",
        f"Fresh segmentors trained on each row's data for {config.steps} steps, {config.repeats} times from "
        "different seeds (run r of every row from the same initial weights), and scored on the "
        f"{len(held)} held-out slices of {len(held.split.cases)} cases (Sec. 3.6). Sequential rows split "
        "the steps in proportion to the amounts. Best: the best run, as the paper keeps the best of 4; "
        "mean +- sd over the runs. A segmentor that finds no lesion at all scores Dice "
        f"{empty_prediction_dice(held.split.labels):.3f} (the share of lesion-free held-out slices).",
        "",
        table(headers, rows),
        "",
        *comparison_lines(results),
        "",
        f"![Table 2: our Dice beside the paper's]({FIGURES['table2']})",
        "",
        f"![Training loss and test Dice of every row (best run)]({FIGURES['curves']})",
    ]


def comparison_lines(results: EvaluationResults) -> list[str]:
    """The paired comparisons with their bootstrap intervals."""
    if not results.comparisons:
        return []
    by_number = {r.row.number: r for r in results.table2}
    rows = [
        [
            f"NO.{c.row} vs NO.{c.reference}",
            f"{by_number[c.row].row.label} vs {by_number[c.reference].row.label}",
            _interval(c.interval),
            " / ".join(_interval(c.by_modality[m], 2) for m in MODALITIES),
            f"{c.paper:+.3f}",
            f"**{c.verdict}**",
        ]
        for c in results.comparisons
    ]
    first = results.comparisons[0].interval
    return [
        f"Paired comparisons: the mean Dice difference over runs and held-out cases with its "
        f"{first.confidence:.0%} bootstrap interval (resampling the {first.runs} runs and the "
        f"{first.cases} cases, {results.config.bootstrap} resamples; models/evaluation/stats.py). The "
        "verdict reads the interval: above 0 helps, below 0 hurts, across 0 cannot tell.",
        "",
        table(
            ["comparison", "rows", "Dice difference [95% CI]", "t1 / t1ce / t2 / flair", "paper", "verdict"],
            rows,
        ),
    ]


def fidelity_lines(results: EvaluationResults) -> list[str]:
    """Paired fidelity (BraSyn's SSIM and PSNR) per modality, inside and outside the tumour."""
    means = results.fidelity.means()
    rows = [
        [
            m,
            number(means[m]["ssim_tumour"]),
            number(means[m]["ssim_healthy"]),
            number(means[m]["psnr_tumour"], 2),
            number(means[m]["psnr_healthy"], 2),
        ]
        for m in MODALITIES
    ]
    return [
        "## Paired fidelity",
        "",
        "Each held-out slice synthesized from its own structure map f (Algorithm 1 of T1, its lesion "
        "removed) and its own label (fusion, EC_r, DC: the worker's steps), scored against the real slice as "
        "BraSyn does: each image clipped at its 0.5 and 99.5 percentiles and scaled to [0, 1], then SSIM "
        "(Gaussian window 11, sigma 1.5) and PSNR (data range 1) of both images masked to the tumour (label "
        "> 0; slices with a tumour) and to the rest (models/evaluation/fidelity.py).",
        "",
        table(["modality", "SSIM tumour", "SSIM outside", "PSNR tumour (dB)", "PSNR outside (dB)"], rows),
    ]


def mmd_lines(results: EvaluationResults) -> list[str]:
    """MMD^2 of the synthetic and the held-out real images against the real training slices."""
    mmd = results.mmd
    rows = [
        [m, number(mmd.synthetic[m], 4), number(mmd.real[m], 4), number(mmd.sigma[m], 2)] for m in MODALITIES
    ]
    return [
        "## Maximum mean discrepancy",
        "",
        f"Unbiased MMD^2 (Gretton et al. 2012) against the real training slices, on {FEATURES} features per "
        "image (19 brain-intensity quantiles, the mean absolute value of 3 Laplacian-pyramid bands), "
        "standardized by the training slices; Gaussian kernel, sigma the median pairwise distance of the "
        "training features (models/evaluation/mmd.py). 0: the same distribution; the held-out real slices "
        "give the value of new real data.",
        "",
        table(["modality", "synthetic", "real held-out", "sigma"], rows),
    ]


def translation_lines(results: EvaluationResults) -> list[str]:
    """The translation table (issue 17)."""
    if not results.translation:
        return []
    rows = [
        [
            row.target,
            " + ".join(row.inputs),
            row.method,
            number(row.scores["ssim_tumour"]),
            number(row.scores["ssim_healthy"]),
            number(row.scores["psnr_tumour"], 2),
            number(row.scores["psnr_healthy"], 2),
        ]
        for row in results.translation
    ]
    return [
        "## Translation (BraSyn)",
        "",
        "Each modality of the held-out slices dropped in turn and synthesized with EC and DC (the mean of "
        "EC's codes of the inputs, worker/translation.py) from the other three and from T1 alone, beside a "
        "baseline without network: one input modality histogram-matched to the target's intensities over "
        "the training slices. Scored as paired fidelity is (BraSyn's SSIM and PSNR, inside and outside the "
        "tumour).",
        "",
        table(
            [
                "target",
                "inputs",
                "method",
                "SSIM tumour",
                "SSIM outside",
                "PSNR tumour (dB)",
                "PSNR outside (dB)",
            ],
            rows,
        ),
    ]


def seed_lines(results: EvaluationResults, seeds: dict[str, str]) -> list[str]:
    """Every seed of the run."""
    return ["- Seeds: " + "; ".join(f"{name}: {value}" for name, value in seeds.items()) + "."]


def held_out_csv(results: EvaluationResults) -> Iterator[Line]:
    """The CSV lines of this module's sections."""
    held = results.held_out
    yield ("held_out", str(held.source), "cases", len(held.split.cases), None)
    yield ("held_out", str(held.source), "slices", len(held), None)
    for result in results.table2:
        item = f"NO.{result.row.number} {result.row.label}"
        mean, sd = result.mean_sd()
        yield ("table2", item, "dice_mean", mean, None)
        yield ("table2", item, "dice_sd", sd, None)
        for modality, (m_mean, m_sd) in result.modality_mean_sd().items():
            yield ("table2", item, f"dice_{modality}_mean", m_mean, None)
            yield ("table2", item, f"dice_{modality}_sd", m_sd, None)
        for run in result.runs:
            yield ("table2", item, f"dice_seed{run.seed}", run.dice, None)
    for c in results.comparisons:
        item = f"NO.{c.row} vs NO.{c.reference}"
        yield ("comparison", item, "dice_difference", c.interval.estimate, round(c.paper, 3))
        yield ("comparison", item, "ci_low", c.interval.low, None)
        yield ("comparison", item, "ci_high", c.interval.high, None)
        yield ("comparison", item, "verdict", c.verdict, None)
        for modality, interval in c.by_modality.items():
            yield ("comparison", item, f"{modality}_ci", f"{interval.low:.4f} {interval.high:.4f}", None)
    for modality, scores in results.fidelity.means().items():
        for name, value in scores.items():
            yield ("fidelity", modality, name, value, None)
    for modality in MODALITIES:
        yield ("mmd", modality, "mmd2_synthetic", results.mmd.synthetic[modality], None)
        yield ("mmd", modality, "mmd2_real_held_out", results.mmd.real[modality], None)
        yield ("mmd", modality, "sigma", results.mmd.sigma[modality], None)
    for row in results.translation:
        item = f"{row.target} from {'+'.join(row.inputs)} ({row.method})"
        for name, value in row.scores.items():
            yield ("translation", item, name, value, None)
