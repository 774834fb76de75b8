"""``mrisynth evaluate`` on a held-out folder of its own, with repeats, intervals and the new sections.

Tiny random artifacts (``test_evaluation.py``'s ``artifacts`` fixture), the ``brats`` fixture's three
cases as the artifacts' data and three other hand-made cases as ``--test-data``; every Table 2 row is
trained twice for a few steps. The run must report the held-out cases, the seeds, mean +- sd and the
paired comparisons with intervals, paired fidelity, MMD and the translation table, and refuse a held-out
set below ``--min-test-cases``.
"""

import csv
from pathlib import Path

import pytest
from conftest import _write_case
from test_evaluation import artifacts  # noqa: F401  (the module fixture)

from cli.main import main

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def held_out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("held-out")
    for index in (10, 11, 12):
        _write_case(root, index)
    return root


def _args(brats: Path, artifacts_dir: Path, out: Path) -> list[str]:
    return [
        "evaluate",
        "--data",
        str(brats),
        "--artifacts",
        str(artifacts_dir),
        "--out",
        str(out),
        "--preset",
        "test",
        "--steps",
        "4",
        "--synthetic",
        "4",
        "--structure-mae",
        "1",
        "--candidates",
        "2",
        "--rows",
        "1",
        "2",
        "25",
        "--bootstrap",
        "50",
        "--evaluations",
        "2",
    ]


def test_evaluate_on_a_held_out_folder_reports_intervals_and_new_sections(
    brats: Path,
    artifacts: Path,  # noqa: F811
    held_out: Path,
    tmp_path: Path,
) -> None:
    out = tmp_path / "report"
    main(
        [
            *_args(brats, artifacts, out),
            "--test-data",
            str(held_out),
            "--min-test-cases",
            "3",
            "--repeats",
            "2",
        ]
    )
    report = (out / "report.md").read_text()
    assert "3 cases (BraTS2021_00010, BraTS2021_00011, BraTS2021_00012)" in report
    assert "a folder of its own" in report and "Leaked" not in report
    assert "Table 2 runs (weights; batches [seed, NO.]): 0, 1000" in report
    assert "Dice (mean +- sd)" in report and "| NO.25 vs NO.1 |" in report
    assert "1SEG | real held-out |" in report
    for title in ("## Paired fidelity", "## Translation (BraSyn)", "## Maximum mean discrepancy"):
        assert title in report
    assert "histogram matching" in report and "t1ce + t2 + flair" in report
    assert any(verdict in report for verdict in ("**helps**", "**hurts**", "**cannot tell**"))
    with (out / "results.csv").open(newline="") as stream:
        lines = list(csv.DictReader(stream))
    items = {(line["section"], line["item"], line["metric"]) for line in lines}
    assert ("comparison", "NO.25 vs NO.1", "ci_low") in items
    assert ("comparison", "NO.6 vs NO.1", "ci_low") not in items  # NO.6 was not trained
    assert ("held_out", str(held_out), "cases") in items
    for metric in ("dice_seed0", "dice_seed1000", "dice_mean", "dice_sd", "dice_t1_mean"):
        assert ("table2", "NO.1 real x1", metric) in items
    assert ("fidelity", "flair", "ssim_healthy") in items and ("mmd", "t2", "mmd2_synthetic") in items
    assert ("translation", "t2 from t1 (EC + DC)", "psnr_healthy") in items
    low, high = (
        float(next(line["ours"] for line in lines if line["item"] == "NO.25 vs NO.1" and line["metric"] == m))
        for m in ("ci_low", "ci_high")
    )
    assert low <= high


def test_evaluate_refuses_too_few_held_out_cases_and_names_leaks(
    brats: Path,
    artifacts: Path,  # noqa: F811
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit):
        main(_args(brats, artifacts, tmp_path / "refused"))
    assert "held-out set has 1 case(s)" in capsys.readouterr().err
    assert not (tmp_path / "refused").exists()
    out = tmp_path / "leaky"
    main(
        [*_args(brats, artifacts, out), "--test-data", str(brats), "--min-test-cases", "3", "--repeats", "1"]
    )
    assert "**Leaked: BraTS2021_00000, BraTS2021_00001" in (out / "report.md").read_text()
