"""The bundle: a synthesized dataset as one zip file, streamed to disk one sample at a time (issue 4).

The files and their names follow the bundle's layout (`worker.bundle_layout`); beside them are
``manifest.json`` (written last: provenance, label convention, per-case files and scores, counts), the
brats layouts' ``datalist.json``, and on request ``previews/<case>.png`` and ``montage.png``
(`worker.previews`). Images are as BraTS ships them: exactly 0 outside the sample's brain mask, the
networks' per-image standardized values inside (`mrisynth.conventions.standardize`).

The same samples, options, request, seed and artifacts give the same bytes: members carry a fixed date,
JSON has sorted keys (``dataset.json`` keeps nnU-Net's order: its regions pair with
``regions_class_order`` by position) and NIfTI comes from `mrisynth.brats.write.nifti_gz_bytes`.
"""

import contextlib
import gzip
import json
import logging
import os
import re
import zipfile
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import nibabel as nib
import numpy as np
from pydantic import BaseModel

from mrisynth.brats.layouts import LABEL_KEY
from mrisynth.brats.write import encode_labels, nifti_gz_bytes
from mrisynth.conventions import LABEL_NAMES, LABELS
from worker import nnunet
from worker.bundle_layout import (
    DATALIST_NAME,
    EXTRAS,
    LABEL_CONVENTIONS,
    BundleLayout,
    BundleOptions,
    BundleSample,
    case_files,
    case_id,
    datalist,
)
from worker.previews import preview_png, preview_row

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
"""Version of the bundle layout and manifest written by this code."""

MANIFEST_NAME = "manifest.json"
MONTAGE_NAME = "montage.png"
PREVIEWS_FOLDER = "previews"

ZIP_DATE_TIME = (1980, 1, 1, 0, 0, 0)
"""Date of every zip member (the earliest a zip can hold), so that bundles carry no creation time."""

_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class BundleWriter:
    """Writes a bundle zip sample by sample; use it as a context manager.

    Example:
        >>> with BundleWriter(out, options, request=request, seed=seed, artifacts=shas) as bundle:
        ...     for sample in samples:
        ...         bundle.add(sample)

    Each sample's files go into ``<out>.partial`` as `add` is called, so memory stays bounded by one
    sample (plus the ``montage_samples`` kept for the montage and a few hundred bytes of manifest entry
    per sample). A clean exit writes ``montage.png``, ``dataset.json`` (nnunet) or ``datalist.json``
    (brats layouts) and ``manifest.json``,
    then renames the file to ``<out>``; an exception removes it, so no half-written bundle is left.
    """

    def __init__(
        self,
        out: Path,
        options: BundleOptions | None = None,
        *,
        request: Mapping[str, Any],
        seed: int,
        artifacts: Mapping[str, str],
    ) -> None:
        """Open ``<out>.partial`` for writing.

        Args:
            out: the bundle file to create, e.g. ``runs/job-17/bundle.zip``; its folder is created.
            options: layout and contents; default `BundleOptions()`.
            request: the request that produced the samples, JSON-serializable, copied into the manifest.
            seed: the seed the samples were drawn with.
            artifacts: name -> sha256 (lowercase hex) of the model artifacts used.

        Raises:
            FileExistsError: ``out`` exists; bundles are never overwritten.
            ValueError: ``request`` is not JSON-serializable or an artifact hash is not a sha256.
        """
        self.out = Path(out)
        self.options = options or BundleOptions()
        bad = {name: sha for name, sha in artifacts.items() if not _SHA256.match(str(sha))}
        if bad:
            raise ValueError(f"artifact hashes must be lowercase hex sha256, got {bad}")
        self._provenance = {
            "request": _json_copy(request, "request"),
            "seed": int(seed),
            "artifacts": dict(artifacts),
        }
        if self.out.exists():
            raise FileExistsError(f"{self.out} already exists; bundles are never overwritten")
        self._partial = self.out.with_name(self.out.name + ".partial")
        self.out.parent.mkdir(parents=True, exist_ok=True)
        if self._partial.exists():
            logger.warning("replacing %s, left by an interrupted bundle", self._partial)
        self._zip: zipfile.ZipFile | None = zipfile.ZipFile(self._partial, "w")
        self._cases: list[dict[str, Any]] = []
        self._shape: tuple[int, ...] | None = None
        self._label_voxels = np.zeros(max(LABELS) + 1, np.int64)
        self._montage_rows: list[list[np.ndarray]] = []
        self._members = 0
        logger.info("writing %s bundle %s", self.options.layout, self._partial)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def __len__(self) -> int:
        """Number of samples added."""
        return len(self._cases)

    def add(self, sample: BundleSample) -> str:
        """Write one sample's files into the zip now.

        Args:
            sample: the sample (`BundleSample`); its arrays are (H, W), the same for every sample.

        Returns:
            The sample's case id.

        Raises:
            ValueError: a written modality is missing, shapes disagree, an image is not finite, the label
                holds values outside {0, 1, 2, 4}, the scores are not JSON-serializable (NaN included),
                the bundle holds `MAX_SAMPLES` samples already, or it is closed. Nothing of the sample
                was written and the bundle stays usable. A failure while writing (e.g. a full disk)
                aborts the bundle instead (`abort`).
        """
        zf = self._open_zip()
        case = case_id(self.options, len(self._cases))
        arrays = self._arrays(sample, case)
        scores = (
            sample.scores.model_dump(mode="json") if isinstance(sample.scores, BaseModel) else sample.scores
        )
        scores = _json_copy(scores, f"scores of case {case}")
        names = case_files(self.options, case)
        members = {names[key]: nifti_gz_bytes(data, self.options.affine) for key, data in arrays.items()}
        files = {key: names[key] for key in arrays}
        if self.options.previews or len(self._montage_rows) < self.options.montage_samples:
            row = preview_row(sample, self.options.written_modalities)
            if self.options.previews:
                files["preview"] = f"{PREVIEWS_FOLDER}/{case}.png"
                members[files["preview"]] = preview_png([row], self.options.written_modalities)
            if len(self._montage_rows) < self.options.montage_samples:
                self._montage_rows.append(row)
        try:
            for name, data in members.items():
                self._write(zf, name, data)
        except BaseException:
            self.abort()
            raise
        self._label_voxels += np.bincount(
            np.asarray(sample.label, np.uint8).ravel(), minlength=max(LABELS) + 1
        )
        self._cases.append({"case_id": case, "files": files, "scores": scores})
        logger.debug("bundle %s: wrote case %s", self._partial, case)
        return case

    def close(self) -> Path:
        """Finish the bundle: write the montage, ``dataset.json`` or ``datalist.json`` and the manifest,
        rename to ``out``.

        Returns:
            ``out``.

        Raises:
            ValueError: no sample was added, or the bundle is closed already.
            FileExistsError: ``out`` appeared while writing.
        """
        zf = self._open_zip()
        try:
            if not self._cases:
                raise ValueError("a bundle needs at least one sample")
            if self.options.layout == BundleLayout.NNUNET:
                content = nnunet.dataset_json(self.options.nnunet, self.options.written_modalities, len(self))
                self._write(zf, f"{self.options.nnunet.folder}/dataset.json", json_bytes(content, sort=False))
            else:
                files = [case["files"] for case in self._cases]
                listed = datalist(self.options.layout, self.options.written_modalities, files)
                self._write(zf, DATALIST_NAME, json_bytes(listed))
            if self._montage_rows:
                names = [case["case_id"] for case in self._cases[: len(self._montage_rows)]]
                montage = preview_png(self._montage_rows, self.options.written_modalities, names)
                self._write(zf, MONTAGE_NAME, montage)
            self._write(zf, MANIFEST_NAME, json_bytes(self._manifest()))
            zf.close()
            if self.out.exists():
                raise FileExistsError(f"{self.out} appeared while the bundle was written; not overwritten")
            os.replace(self._partial, self.out)
        except BaseException:
            self.abort()
            raise
        self._zip = None
        logger.info(
            "wrote bundle %s: %d samples, %d files, %.1f MB",
            self.out,
            len(self),
            self._members,
            self.out.stat().st_size / 1e6,
        )
        return self.out

    def abort(self) -> None:
        """Stop writing and remove ``<out>.partial``; no bundle is created. Does nothing once closed."""
        if self._zip is None:
            return
        with contextlib.suppress(OSError, ValueError):  # the zip may be what failed
            self._zip.close()
        self._zip = None
        self._partial.unlink(missing_ok=True)
        logger.warning("aborted bundle %s after %d samples; removed %s", self.out, len(self), self._partial)

    def _open_zip(self) -> zipfile.ZipFile:
        if self._zip is None:
            raise ValueError(f"bundle {self.out} is closed")
        return self._zip

    def _arrays(self, sample: BundleSample, case: str) -> dict[str, np.ndarray]:
        """The sample's arrays to write, checked, keyed as `case_files`, shaped for the layout."""
        modalities = self.options.written_modalities
        missing = [m for m in modalities if m not in sample.images]
        if missing:
            raise ValueError(
                f"case {case}: sample lacks modalities {missing}; the bundle writes {modalities}"
            )
        masks = {"structure": np.asarray(sample.f), "brainmask": np.asarray(sample.brain_mask)}
        arrays = {m: np.asarray(sample.images[m], np.float32) for m in modalities}
        label = np.asarray(sample.label)
        shapes = {key: a.shape for key, a in (arrays | masks).items()} | {LABEL_KEY: label.shape}
        expected = self._shape or label.shape
        if len(expected) != 2 or any(shape != expected for shape in shapes.values()):
            raise ValueError(f"case {case}: expected 2D arrays of shape {expected}, got {shapes}")
        not_finite = [key for key, array in arrays.items() if not np.isfinite(array).all()]
        if not_finite:
            raise ValueError(f"case {case}: {not_finite} hold NaN or infinite values")
        not_binary = [key for key, mask in masks.items() if not ((mask == 0) | (mask == 1)).all()]
        if not_binary:
            raise ValueError(f"case {case}: {not_binary} must hold only 0 and 1")
        written = {m: np.where(masks["brainmask"] > 0, arrays[m], np.float32(0)) for m in modalities}
        written[LABEL_KEY] = encode_labels(label, self.options.label_map, f"case {case}")
        if self.options.extras:
            written |= {extra: masks[extra].astype(np.uint8) for extra in EXTRAS}
        self._shape = expected
        if self.options.layout == BundleLayout.NNUNET:
            return written
        return {key: array[:, :, np.newaxis] for key, array in written.items()}

    def _write(self, zf: zipfile.ZipFile, name: str, data: bytes) -> None:
        write_member(zf, name, data)
        self._members += 1

    def _manifest(self) -> dict[str, Any]:
        assert self._shape is not None  # at least one sample was added
        options = self.options
        manifest: dict[str, Any] = {
            "format_version": FORMAT_VERSION,
            "layout": options.layout.value,
            "modalities": list(options.written_modalities),
            "image_size": list(self._shape),
            "voxel_size_mm": list(options.voxel_size_mm),
            "label_values": {LABEL_NAMES[ours]: value for value, ours in options.label_map.items()},
            "label_convention": LABEL_CONVENTIONS[options.layout],
            "case_prefix": options.prefix,
            "extras": options.extras,
            "previews": options.previews,
            "montage": MONTAGE_NAME if self._montage_rows else None,
            **self._provenance,
            "counts": {
                "samples": len(self),
                "files": self._members + 1,  # and the manifest
                "label_voxels": {LABEL_NAMES[v]: int(self._label_voxels[v]) for v in LABELS},
            },
            "cases": self._cases,
        }
        if options.layout == BundleLayout.NNUNET:
            manifest["nnunet"] = {
                "dataset": options.nnunet.folder,
                "dataset_json": f"{options.nnunet.folder}/dataset.json",
            }
        else:
            manifest["datalist"] = DATALIST_NAME
        return manifest


def write_member(zf: zipfile.ZipFile, name: str, data: bytes) -> None:
    """Add one member: stored if already compressed (``.nii.gz``), else deflated; fixed date, mode 644."""
    info = zipfile.ZipInfo(name, date_time=ZIP_DATE_TIME)
    info.create_system = 3  # unix, for the mode bits; the default depends on the platform
    info.external_attr = 0o644 << 16
    info.compress_type = zipfile.ZIP_STORED if name.endswith(".gz") else zipfile.ZIP_DEFLATED
    zf.writestr(info, data)


def read_manifest(bundle: zipfile.ZipFile) -> dict[str, Any]:
    """The manifest of an open bundle zip."""
    manifest: dict[str, Any] = json.loads(bundle.read(MANIFEST_NAME))
    return manifest


def read_nifti(bundle: zipfile.ZipFile, name: str) -> nib.Nifti1Image:
    """One NIfTI file of an open bundle zip, loaded in memory, e.g. ``read_nifti(zf, files["seg"])``."""
    return nib.Nifti1Image.from_bytes(gzip.decompress(bundle.read(name)))


def _json_copy(value: Any, what: str) -> Any:
    """A JSON round trip of ``value``: checks it early and keeps the manifest safe from later changes."""
    try:
        return json.loads(json.dumps(value, sort_keys=True, allow_nan=False))
    except (TypeError, ValueError) as error:
        raise ValueError(f"{what} must be JSON-serializable without NaN or infinity: {error}") from error


def json_bytes(value: Any, sort: bool = True) -> bytes:
    """JSON as the bundle writes it: indented, sorted keys unless ``sort`` is False, no NaN."""
    return (json.dumps(value, sort_keys=sort, indent=2, allow_nan=False) + "\n").encode()
