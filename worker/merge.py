"""One bundle from several (``mrisynth merge``): real and synthetic sets, or two synthetic ones, mixed.

The inputs must agree on layout, modalities, image size and voxel size, and their case ids must differ
(a real-slice bundle's prefix differs from a synthetic one's; give synthetic bundles their own
``case_prefix``). Every case file is copied unchanged; the index files are rewritten for all cases:
``datalist.json`` (brats layouts, folds renumbered), ``dataset.json`` (nnunet: the first input's with
``numTraining`` of the merged set; the inputs must name the same dataset) and ``manifest.json``, whose
``sources`` keep each input's provenance and whose cases say their source. Montages are left out.
"""

import contextlib
import json
import logging
import os
import zipfile
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from worker.bundle import (
    FORMAT_VERSION,
    MANIFEST_NAME,
    MONTAGE_NAME,
    json_bytes,
    read_manifest,
    write_member,
)
from worker.bundle_layout import DATALIST_NAME, BundleLayout, datalist

log = logging.getLogger(__name__)

SHARED = ("layout", "modalities", "image_size", "voxel_size_mm", "label_values", "label_convention")
"""Manifest fields every input must agree on."""

PROVENANCE = ("request", "seed", "artifacts", "case_prefix")
"""Manifest fields kept per input under ``sources``."""


def _check(manifests: Sequence[dict[str, Any]], inputs: Sequence[Path]) -> None:
    first = manifests[0]
    for path, manifest in zip(inputs[1:], manifests[1:], strict=True):
        differ = [key for key in SHARED if manifest.get(key) != first.get(key)]
        if differ:
            got = {key: (first.get(key), manifest.get(key)) for key in differ}
            raise ValueError(f"{path} differs from {inputs[0]} in {got}; bundles must agree to be merged")
        if manifest.get("nnunet") != first.get("nnunet"):
            raise ValueError(
                f"{path} holds nnU-Net dataset {manifest['nnunet']['dataset']}, {inputs[0]} "
                f"{first['nnunet']['dataset']}: ask both with the same nnunet_dataset_id and name"
            )
    counts = Counter(case["case_id"] for manifest in manifests for case in manifest["cases"])
    repeated = sorted(case for case, count in counts.items() if count > 1)
    if repeated:
        raise ValueError(
            f"case ids {repeated[:5]} appear in more than one bundle; give them other case_prefix"
        )


def _manifest(
    inputs: Sequence[Path], manifests: Sequence[dict[str, Any]], cases: list[dict[str, Any]], files: int
) -> dict[str, Any]:
    """The merged bundle's manifest: the shared fields, each input's provenance, all cases."""
    first = manifests[0]
    label_voxels = {
        name: sum(m["counts"]["label_voxels"][name] for m in manifests)
        for name in first["counts"]["label_voxels"]
    }
    sources = [
        {"bundle": path.name, **{key: m.get(key) for key in PROVENANCE}, "samples": len(m["cases"])}
        for path, m in zip(inputs, manifests, strict=True)
    ]
    return {
        "format_version": FORMAT_VERSION,
        **{key: first[key] for key in SHARED},
        **{key: first[key] for key in ("nnunet", "datalist") if key in first},
        "extras": all(m["extras"] for m in manifests),
        "previews": any(m["previews"] for m in manifests),
        "montage": None,
        "sources": sources,
        "counts": {"samples": len(cases), "files": files, "label_voxels": label_voxels},
        "cases": cases,
    }


def _write(merged: zipfile.ZipFile, sources: Sequence[zipfile.ZipFile], inputs: Sequence[Path]) -> int:
    """Copy every case file of ``sources`` into ``merged``, then the rewritten index files; the case count."""
    manifests = [read_manifest(source) for source in sources]
    _check(manifests, inputs)
    first = manifests[0]
    index_files = {MANIFEST_NAME, MONTAGE_NAME, DATALIST_NAME}
    if "nnunet" in first:
        index_files.add(first["nnunet"]["dataset_json"])
    cases = [{**case, "source": i} for i, manifest in enumerate(manifests) for case in manifest["cases"]]
    for source in sources:
        for name in source.namelist():
            if name not in index_files:
                write_member(merged, name, source.read(name))
    if "nnunet" in first:
        content = json.loads(sources[0].read(first["nnunet"]["dataset_json"]))
        content["numTraining"] = len(cases)
        write_member(merged, first["nnunet"]["dataset_json"], json_bytes(content, sort=False))
    else:
        files = [case["files"] for case in cases]
        write_member(
            merged,
            DATALIST_NAME,
            json_bytes(datalist(BundleLayout(first["layout"]), first["modalities"], files)),
        )
    manifest = _manifest(inputs, manifests, cases, files=len(merged.namelist()) + 1)
    write_member(merged, MANIFEST_NAME, json_bytes(manifest))
    return len(cases)


def merge_bundles(inputs: Sequence[Path], out: Path) -> Path:
    """Write ``out``, the bundle of every case of ``inputs`` (see the module docstring).

    Raises:
        ValueError: fewer than two inputs, inputs that disagree, or repeated case ids; nothing is written.
        FileExistsError: ``out`` exists.
    """
    if len(inputs) < 2:
        raise ValueError("merge needs at least two bundles")
    if out.exists():
        raise FileExistsError(f"{out} already exists; bundles are never overwritten")
    partial = out.with_name(out.name + ".partial")
    try:
        with contextlib.ExitStack() as stack:
            sources = [stack.enter_context(zipfile.ZipFile(path)) for path in inputs]
            with zipfile.ZipFile(partial, "w") as merged:
                count = _write(merged, sources, inputs)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    os.replace(partial, out)
    log.info("merged %d bundles, %d cases, into %s", len(inputs), count, out)
    return out
