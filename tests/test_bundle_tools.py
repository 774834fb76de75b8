"""The tools train on a fresh bundle with no glue code (issue 14): nnU-Net v2, MONAI and TorchIO, each run
as docs/bundles.md shows it.

The code is the page's: every fenced block whose info string names a snippet (```` ```python monai ````)
is run as written: bash blocks in a subprocess, in a folder of their own, with the running Python's
scripts (``mrisynth``, ``nnUNetv2_*``) first on PATH; python blocks in this process, in the folder of the
bundle they read, their globals kept for the asserts. The bundles come from the page's ``bundle`` block,
the committed demo artifacts on the CPU.
"""

import json
import os
import pickle
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pytest
import torch

from mrisynth.brats.read import read_nifti

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "bundles.md"

SNIPPETS = {"bundle", "nnunet_smoke.py", "nnunet", "monai", "torchio"}
"""Every snippet the page holds; each is run below."""

LAYOUT_FLAG = "--layout brats "
"""The ``bundle`` snippet's layout, which the tests swap for the layout they need."""

CASES = 5
SIZE = 96
"""The demo artifacts' slices are SIZE x SIZE."""

ET = {"brats": 4, "brats2023": 3}
"""Each brats layout's enhancing-tumor value."""

FILE_KEYS = {
    "brats": ("_", ("t1", "t1ce", "t2", "flair", "seg")),
    "brats2023": ("-", ("t1n", "t1c", "t2w", "t2f", "seg")),
}
"""Each brats layout's case files: ``<case><separator><key>.nii.gz``, modalities in channel order."""

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class Snippet(NamedTuple):
    language: str
    code: str


def snippets() -> dict[str, Snippet]:
    """The page's named code blocks: name -> (language, code)."""
    found: dict[str, Snippet] = {}
    pattern = r"^```(bash|python) (\S+)\n(.*?)^```$"
    for language, name, code in re.findall(pattern, DOC.read_text(), flags=re.M | re.S):
        assert name not in found, f"{DOC.name} names two snippets {name!r}"
        found[name] = Snippet(language, code)
    return found


def run_bash(code: str, cwd: Path, timeout: float = 300) -> str:
    """Run a bash snippet (-euo pipefail) in ``cwd``; its stdout, or the test fails with its output."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("nnUNet_")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", code],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if done.returncode != 0:
        pytest.fail(
            f"snippet exited {done.returncode}:\n{code}\n--- stdout\n{done.stdout[-4000:]}\n"
            f"--- stderr\n{done.stderr[-4000:]}"
        )
    return done.stdout


def run_python(name: str, cwd: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Run a python snippet in this process with ``cwd`` as the working folder; its globals."""
    snippet = snippets()[name]
    assert snippet.language == "python"
    monkeypatch.chdir(cwd)
    namespace: dict[str, Any] = {"__name__": "__main__"}
    exec(compile(snippet.code, f"{DOC}:{name}", "exec"), namespace)
    return namespace


def load(path: Path | str) -> np.ndarray:
    """A NIfTI file's voxels as stored."""
    return read_nifti(Path(path))[0]


def box(mask: np.ndarray) -> list[list[int]]:
    """[[start, stop], ...] of the True voxels along each axis."""
    spans = []
    for axis in range(mask.ndim):
        hit = np.flatnonzero(mask.any(axis=tuple(other for other in range(mask.ndim) if other != axis)))
        spans.append([int(hit[0]), int(hit[-1]) + 1])
    return spans


def check_brats_bundle(bundle: Path, layout: str) -> None:
    """The layout the tools rely on: five files per case folder, extras beside them, datalist.json, and
    images exactly 0 outside the brain mask and nonzero inside."""
    separator, keys = FILE_KEYS[layout]
    cases = sorted(p.name for p in bundle.iterdir() if p.is_dir() and p.name != "extras")
    assert len(cases) == CASES
    assert sorted(p.name for p in bundle.iterdir() if p.is_file()) == [
        "datalist.json",
        "manifest.json",
        "montage.png",
    ]
    datalist = json.loads((bundle / "datalist.json").read_text())["training"]
    assert [entry["fold"] for entry in datalist] == list(range(CASES))
    for case, entry in zip(cases, datalist, strict=True):
        files = [f"{case}{separator}{key}.nii.gz" for key in keys]
        assert sorted(p.name for p in (bundle / case).iterdir()) == sorted(files)
        assert entry["image"] == [f"{case}/{name}" for name in files[:4]]
        assert entry["label"] == f"{case}/{files[4]}"
        brain = load(bundle / "extras" / f"{case}_brainmask.nii.gz")[..., 0] > 0
        images = np.stack([load(bundle / path)[..., 0] for path in entry["image"]])
        affine = read_nifti(bundle / entry["label"])[1]
        assert np.allclose(affine, np.diag([-2.5, -2.5, 1.0, 1.0])), affine
        assert images.shape == (4, SIZE, SIZE)
        assert (images[:, ~brain] == 0).all() and (images[:, brain] != 0).all()
        assert (load(bundle / entry["label"])[..., 0][~brain] == 0).all()
    extras = {f"{case}_{extra}.nii.gz" for case in cases for extra in ("brainmask", "structure")}
    assert {p.name for p in (bundle / "extras").iterdir()} == extras


@pytest.fixture(scope="module")
def brats_bundle(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """layout -> the folder in which the page's ``bundle`` snippet made ``bundle.zip`` and ``bundle/``."""
    made: dict[str, Path] = {}

    def make(layout: str) -> Path:
        if layout not in made:
            code = snippets()["bundle"].code
            assert LAYOUT_FLAG in code
            folder = tmp_path_factory.mktemp(layout)
            run_bash(code.replace(LAYOUT_FLAG, f"--layout {layout} "), folder)
            check_brats_bundle(folder / "bundle", layout)
            made[layout] = folder
        return made[layout]

    return make


def test_the_page_runs_every_snippet_it_shows() -> None:
    found = snippets()
    assert set(found) == SNIPPETS
    assert {name: snippet.language for name, snippet in found.items()} == {
        "bundle": "bash",
        "nnunet_smoke.py": "python",
        "nnunet": "bash",
        "monai": "python",
        "torchio": "python",
    }


def test_nnunet_plans_preprocesses_and_trains_2d_on_an_nnunet_bundle(tmp_path: Path) -> None:
    page = snippets()
    (tmp_path / "nnunet_smoke.py").write_text(page["nnunet_smoke.py"].code)
    out = run_bash(page["nnunet"].code, tmp_path, timeout=480)

    raw = tmp_path / "nnUNet_raw" / "Dataset902_BundleTools"
    assert sorted(p.name for p in raw.iterdir()) == ["dataset.json", "extras", "imagesTr", "labelsTr"]
    cases = [f"BraTSSyn_{i:05d}" for i in range(CASES)]
    assert sorted(p.name for p in (raw / "imagesTr").iterdir()) == [
        f"{case}_{channel:04d}.nii.gz" for case in cases for channel in range(4)
    ]
    assert sorted(p.name for p in (raw / "labelsTr").iterdir()) == [f"{case}.nii.gz" for case in cases]
    assert "verify_dataset_integrity Done" in out

    preprocessed = tmp_path / "nnUNet_preprocessed" / "Dataset902_BundleTools"
    plans = json.loads((preprocessed / "nnUNetPlans.json").read_text())
    assert list(plans["configurations"]) == ["2d"], "2D NIfTI slices plan a 2d configuration only"
    assert plans["original_median_spacing_after_transp"] == [999 * 2.5, 2.5, 2.5]
    config = plans["configurations"]["2d"]
    assert config["spacing"] == [2.5, 2.5]
    median, patch = config["median_image_size_in_voxels"], config["patch_size"]
    # Background 0: nnU-Net crops every case to its brain, and z-scores inside it.
    assert all(m < SIZE for m in median), median
    assert all(m <= p <= SIZE and p % 16 == 0 for m, p in zip(median, patch, strict=True)), (median, patch)
    assert config["use_mask_for_norm"] == [True] * 4
    assert config["normalization_schemes"] == ["ZScoreNormalization"] * 4

    folder = preprocessed / config["data_identifier"]
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        f"{case}{suffix}" for case in cases for suffix in (".b2nd", "_seg.b2nd", ".pkl")
    )
    for case in cases:
        properties = pickle.loads((folder / f"{case}.pkl").read_bytes())
        rows, columns = box(load(raw / "extras" / f"{case}_brainmask.nii.gz") > 0)
        # SimpleITK's array axes are the NIfTI's reversed: (slice, column, row) here.
        assert properties["bbox_used_for_cropping"] == [[0, 1], columns, rows]

    assert re.search(r"^regions \[\(1, 2, 3\), \(2, 3\), \(3,\)\]$", out, re.M), out[-2000:]
    loss = re.search(r"^train loss (\S+)$", out, re.M)
    assert loss is not None, out[-2000:]
    assert np.isfinite(float(loss.group(1)))


@pytest.mark.parametrize("layout", ["brats", "brats2023"])
def test_monai_brats_tutorial_chain_trains_on_a_bundle(
    layout: str, brats_bundle: Callable[[str], Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    from monai.transforms import (
        Compose,
        ConvertToMultiChannelBasedOnBratsClasses,
        CropForegroundd,
        NormalizeIntensityd,
    )
    from monai.transforms.utils import generate_spatial_bounding_box

    folder = brats_bundle(layout)
    run = run_python("monai", folder, monkeypatch)
    assert torch.isfinite(run["loss"]) and run["loss"].item() > 0
    assert run["et_label"] == ET[layout], "the manifest's label_values name the et_label"

    files = run["files"]
    bundle = (folder / "bundle").resolve()
    assert [(folder / f["label"]).resolve().parent.parent for f in files] == [bundle] * CASES
    assert [f["fold"] for f in run["val_files"]] == [0] and len(run["train_files"]) == CASES - 1

    transforms = run["train_transform"].transforms
    crop = next(i for i, t in enumerate(transforms) if isinstance(t, CropForegroundd))
    loaded = Compose(transforms[:crop])  # load, channel first, label -> TC, WT, ET
    normalize = next(t for t in transforms if isinstance(t, NormalizeIntensityd))
    et_cases = 0
    for entry in files:
        seg = load(entry["label"])
        brain = load(bundle / "extras" / f"{Path(entry['label']).parent.name}_brainmask.nii.gz") > 0
        data = loaded(entry)
        image, label = data["image"], data["label"]
        assert image.shape == (4, SIZE, SIZE, 1) and label.shape == (3, SIZE, SIZE, 1)
        tc, wt, et = (channel.numpy() for channel in label)
        assert (et == (seg == ET[layout])).all() and (wt == (seg > 0)).all()
        assert (tc == ((seg == 1) | (seg == ET[layout]))).all()
        if (seg == ET[layout]).any():
            et_cases += 1
            assert et.any()
        if layout == "brats2023" and (seg == 3).any():
            default = ConvertToMultiChannelBasedOnBratsClasses()(seg)  # et_label 4: BraTS 2018-2021
            assert not default[2].any() and default[1].sum() < (seg > 0).sum()

        # The tutorial's crop keeps the whole brain and its lesion; its foreground box lies in the brain's.
        cropped = transforms[crop](data)
        assert (cropped["image"] != 0).sum() == (image != 0).sum() == 4 * brain.sum()
        assert cropped["label"].sum() == label.sum()
        start, end = generate_spatial_bounding_box(image)
        brain_box = box(brain)
        assert all(b0 <= s and e <= b1 for s, e, (b0, b1) in zip(start, end, brain_box, strict=True))
        assert all(end[i] - start[i] < SIZE for i in range(2))

        # NormalizeIntensityd(nonzero=True) standardizes the brain and leaves the background at 0.
        normalized = np.asarray(normalize({"image": image.clone()})["image"])
        inside = normalized[:, brain]
        assert np.allclose(inside.mean(axis=1), 0, atol=1e-4)
        assert np.allclose(inside.std(axis=1), 1, atol=1e-3)
        assert (normalized[:, ~brain] == 0).all()
    assert et_cases >= 1

    batch = next(iter(run["loader"]))
    assert batch["image"].shape == (2, 4, 64, 64) and batch["label"].shape == (2, 3, 64, 64)


def test_torchio_trains_on_a_bundle(
    brats_bundle: Callable[[str], Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    import torchio as tio

    folder = brats_bundle("brats")
    run = run_python("torchio", folder, monkeypatch)
    assert torch.isfinite(run["loss"]) and run["loss"].item() > 0

    subjects = run["subjects"]
    assert [s["case"] for s in subjects] == [f"BraTSSyn_{i:05d}" for i in range(CASES)]
    modalities = run["modalities"]
    for index, subject in enumerate(subjects):
        subject.check_consistent_space()
        brain = subject["brain"].data.bool()
        assert subject["t1"].shape == (1, SIZE, SIZE, 1)
        assert all((subject[m].data[~brain] == 0).all() for m in modalities)
        seg = subject["seg"].data
        assert (seg[~brain] == 0).all() and set(seg.unique().tolist()) <= {0, 1, 2, 4}

        transformed = run["dataset"][index]
        brain = transformed["brain"].data.bool()
        for m in modalities:
            inside = transformed[m].data[brain]
            assert abs(inside.mean().item()) < 1e-4 and abs(inside.std().item() - 1) < 1e-3
        classes = set(transformed["seg"].data.unique().tolist())
        assert classes <= {0, 1, 2, 3} and (3 in classes) == bool((seg == 4).any())

    batch = next(iter(run["loader"]))
    assert batch["t1"][tio.DATA].shape == (2, 1, SIZE, SIZE, 1)
