"""The zip of a job on an uploaded scan: volumes on the scan's own grid, in a bundle layout.

Translations (``POST /translations``) and syntheses on a scan's structure (``structure_source``) write
volumes, not the 2D samples of :class:`worker.bundle.BundleWriter`: every file has the uploaded files'
shape and affine, so it lies on the input's grid (registered). File names follow the layout
(:func:`worker.bundle_layout.case_files`: ``brats``, ``brats2023`` or ``nnunet``); labels are encoded as
the layout's. ``manifest.json`` says what was given, what was made, how (``method``), and the resampling:
the networks run on axial slices at the artifacts' size and their outputs are resized back to the grid
(``resampled``). Cases with a label are listed in the layout's ``datalist.json`` / ``dataset.json``.
Images are 0 outside the scan's brain, the networks' per-slice standardized values inside, as every
bundle's.
"""

import logging
import os
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mrisynth.brats.layouts import LABEL_KEY
from mrisynth.brats.write import encode_labels, nifti_gz_bytes
from worker import nnunet
from worker.bundle import DATALIST_NAME, FORMAT_VERSION, MANIFEST_NAME, json_bytes, write_member
from worker.bundle_layout import BundleLayout, BundleOptions, case_files, case_id, datalist
from worker.scans import Scan

log = logging.getLogger(__name__)


def write_scan_bundle(
    out: Path,
    options: BundleOptions,
    scan: Scan,
    cases: Sequence[Mapping[str, np.ndarray]],
    about: Mapping[str, Any],
) -> Path:
    """Write volumes on the scan's grid as the zip ``out`` (atomically: ``<out>.partial``, renamed).

    Args:
        out: the zip; never overwritten.
        options: the layout; ``options.modalities`` are the modalities the cases hold.
        scan: the uploaded scan: its grid, affine and uploaded shape.
        cases: per case, modality -> float32 (X, Y, Z) and optionally ``seg`` -> uint8 (X, Y, Z).
        about: JSON-ready manifest entries (request, method, resampling, scores, artifacts).

    Returns:
        ``out``.
    """
    if out.exists():
        raise FileExistsError(f"{out} already exists; bundles are never overwritten")
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial")
    listed: list[dict[str, str]] = []
    try:
        with zipfile.ZipFile(partial, "w") as zf:
            for index, volumes in enumerate(cases):
                case = case_id(options, index)
                names = case_files(options, case)
                files = {key: names[key] for key in volumes}
                for key, volume in volumes.items():
                    if key == LABEL_KEY:
                        volume = encode_labels(volume, options.label_map, f"case {case}")
                    write_member(zf, names[key], nifti_gz_bytes(scan.restore(volume), scan.affine))
                listed.append(files)
            labelled = bool(listed) and all(LABEL_KEY in files for files in listed)
            modalities = options.written_modalities
            if labelled and options.layout == BundleLayout.NNUNET:
                content = nnunet.dataset_json(options.nnunet, modalities, len(listed))
                write_member(zf, f"{options.nnunet.folder}/dataset.json", json_bytes(content, sort=False))
            elif labelled:
                write_member(zf, DATALIST_NAME, json_bytes(datalist(options.layout, modalities, listed)))
            manifest = {
                "format_version": FORMAT_VERSION,
                "layout": options.layout.value,
                "modalities": list(modalities),
                "shape": list(scan.shape),
                "affine": np.asarray(scan.affine).tolist(),
                "cases": [{"case_id": case_id(options, k), "files": f} for k, f in enumerate(listed)],
                **about,
            }
            write_member(zf, MANIFEST_NAME, json_bytes(manifest))
        os.replace(partial, out)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    log.info("wrote %d cases on a %s grid to %s", len(listed), scan.shape, out)
    return out
