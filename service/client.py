"""``mrisynth generate``: ask a mrisynth server for a dataset, follow its progress, download the zip.

The request is posted with an ``Idempotency-Key`` derived from the request and the output path, so the
same command run again (after a crash, a cut connection or Ctrl-C) follows the same dataset instead of
making a second one. With a scan (``--structure-from``), the scan set it uploaded before is found by
its files' sha256 (``GET /scan-sets``) and used again, so the request, and its key, stay the same. The zip
is written to ``<out>.part``; a download that is cut resumes from the
part's size (``Range: bytes=<size>-``), in the same run or the next one, and the whole file is checked
against the server's sha256 before it is renamed to ``<out>`` in one step.
"""

import hashlib
import json
import logging
import os
import time
from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
from tqdm import tqdm

from mrisynth.artifacts import sha256_file

log = logging.getLogger(__name__)

POLL_INTERVAL_S = 1.0
"""Time between two status requests while the dataset is made."""

DOWNLOAD_ATTEMPTS = 5
"""Downloads tried, each resuming where the previous one was cut, before giving up."""

UPLOAD_TIMEOUT_S = 300.0
"""Longest a scan set upload may take, sending and the server's check included."""


class GenerateError(RuntimeError):
    """The server refused the request, the dataset failed, or the server could not be reached."""


def dataset_request(
    n: int,
    modalities: Sequence[str],
    lesion_source: str = "library",
    structure_source: str = "noise",
    seed: int | None = None,
    layout: str | None = None,
    dice: float | None = None,
    structure_mae: float | None = None,
    bundle: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The JSON body of ``POST /datasets``; options left None are left to the server's defaults.

    Args:
        n: samples to make (the server checks the limits).
        modalities: modalities to synthesize, e.g. ``["t1", "flair"]``.
        lesion_source: ``"library"``, ``"none"`` or the id of an uploaded lesion set.
        structure_source: ``"noise"`` or the id of an uploaded scan set (:func:`scan_set`).
        seed: the dataset's seed; None: the server picks one.
        layout: ``"brats"``, ``"brats2023"`` or ``"nnunet"``; None: the server's default.
        dice: lesion-filter Dice threshold in [0, 1]; None: the artifacts' default.
        structure_mae: Algorithm 3 MAE threshold in [0, 1]; None: the artifacts' default.
        bundle: bundle naming fields (``case_prefix``, ``nnunet_dataset_id``, ``nnunet_dataset_name``);
            those None are left out.

    Returns:
        The request body.
    """
    request: dict[str, Any] = {"n": n, "modalities": list(modalities), "lesion_source": lesion_source}
    if structure_source != "noise":
        request["structure_source"] = structure_source
    if seed is not None:
        request["seed"] = seed
    if layout is not None:
        request["layout"] = layout
    request |= {name: value for name, value in (bundle or {}).items() if value is not None}
    thresholds = {
        name: value for name, value in (("dice", dice), ("structure_mae", structure_mae)) if value is not None
    }
    if thresholds:
        request["thresholds"] = thresholds
    return request


def idempotency_key(request: dict[str, Any], out: Path) -> str:
    """Hex sha256 of the request and the absolute output path: the same command, the same dataset."""
    payload = json.dumps({"request": request, "out": str(out.resolve())}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()


def open_client(server: str, key: str | None) -> httpx.Client:
    """An HTTP client for ``server``, sending ``Authorization: Bearer <key>`` when a key is given."""
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.Client(base_url=server, headers=headers, timeout=httpx.Timeout(30.0))


def error_detail(response: httpx.Response) -> str:
    """The server's ``detail`` of an error response, FastAPI's validation errors as ``field: message``."""
    try:
        detail = response.json()["detail"]
    except (ValueError, KeyError, TypeError):
        return response.text.strip() or response.reason_phrase
    if isinstance(detail, list):
        return "; ".join(
            f"{'.'.join(str(part) for part in error.get('loc', [])[1:])}: {error.get('msg')}"
            if isinstance(error, dict)
            else str(error)
            for error in detail
        )
    return str(detail)


def _check(response: httpx.Response) -> None:
    """Raise :class:`GenerateError` with the server's detail for an error status."""
    if response.is_error:
        response.read()
        hint = " (pass --key or set MRISYNTH_API_KEY)" if response.status_code == 401 else ""
        raise GenerateError(
            f"{response.request.method} {response.request.url.path}: HTTP {response.status_code}: "
            f"{error_detail(response)}{hint}"
        )


def scan_set(client: httpx.Client, files: Mapping[str, Path]) -> str:
    """The id of a scan set of the caller's holding these files: one uploaded before (same sha256 of
    every file), else a new one (``POST /scan-sets``, multipart fields named by the keys).

    Args:
        client: client of the server (:func:`open_client`).
        files: file key (``t1``, ``t1ce``, ``t2``, ``flair``, ``seg``) -> NIfTI file of one case.

    Raises:
        GenerateError: the server refused the files (its detail says which and why) or could not be
            reached.
    """
    digests = {key: sha256_file(path) for key, path in files.items()}
    try:
        listed = client.get("/scan-sets")
        _check(listed)
        known = next((s for s in listed.json()["scan_sets"] if s["sha256"] == digests), None)
        if known is not None:
            log.info("scan set %s: uploaded before", known["id"])
            return str(known["id"])
        with ExitStack() as stack:
            parts = {key: (path.name, stack.enter_context(path.open("rb"))) for key, path in files.items()}
            response = client.post("/scan-sets", files=parts, timeout=UPLOAD_TIMEOUT_S)
    except httpx.TransportError as error:
        raise GenerateError(
            f"cannot reach the server at {client.base_url} ({error}); is `mrisynth serve` running there?"
        ) from error
    _check(response)
    uploaded: dict[str, Any] = response.json()
    log.info("scan set %s: %s of shape %s", uploaded["id"], sorted(files), uploaded["shape"])
    return str(uploaded["id"])


def _create(client: httpx.Client, request: dict[str, Any], key: str) -> dict[str, Any]:
    response = client.post("/datasets", json=request, headers={"Idempotency-Key": key})
    _check(response)
    dataset: dict[str, Any] = response.json()
    log.info("dataset %s: %s", dataset["id"], dataset["status_url"])
    return dataset


def _follow(client: httpx.Client, dataset: dict[str, Any], poll_interval_s: float) -> dict[str, Any]:
    """Poll the dataset's status until it is finished, with a progress bar of accepted samples, or for a
    dataset on a scan (volumes, made a batch of slices at a time) of slices made, volumes in the postfix.

    Raises:
        GenerateError: the dataset failed (with the server's error) or was cancelled.
    """
    with tqdm(desc=f"dataset {dataset['id']}", unit="sample") as bar:
        while True:
            response = client.get(dataset["status_url"])
            _check(response)
            status: dict[str, Any] = response.json()
            progress = status["progress"]
            if progress.get("slices_total") is not None:
                bar.unit, bar.total, done = "slice", progress["slices_total"], progress["slices_done"]
                bar.set_postfix(volumes=f"{progress['accepted']}/{progress['target']}", refresh=False)
            else:
                bar.total, done = progress["target"], progress["accepted"]
                bar.set_postfix(progress["rejected"], refresh=False)
            bar.update(done - bar.n)
            if status["state"] == "finished":
                return status
            if status["state"] == "failed":
                raise GenerateError(f"dataset {status['id']} failed: {status['error']}")
            if status["state"] == "cancelled":
                raise GenerateError(f"dataset {status['id']} was cancelled")
            time.sleep(poll_interval_s)


def _fetch(client: httpx.Client, url: str, part: Path) -> int:
    """Download ``url`` into ``part``, from the part's size on when the server accepts the range.

    Returns:
        The byte offset the download started at (0: the whole file).
    """
    offset = part.stat().st_size if part.exists() else 0
    headers = {"Range": f"bytes={offset}-"} if offset else {}
    with client.stream("GET", url, headers=headers) as response:
        if response.status_code == httpx.codes.REQUESTED_RANGE_NOT_SATISFIABLE:
            return offset
        _check(response)
        if response.status_code != httpx.codes.PARTIAL_CONTENT:
            offset = 0
        if offset:
            log.info("resuming the download of %s at %d bytes", part, offset)
        length = response.headers.get("Content-Length")
        total = offset + int(length) if length is not None else None
        with (
            part.open("ab" if offset else "wb") as file,
            tqdm(desc="download", total=total, initial=offset, unit="B", unit_scale=True) as bar,
        ):
            for chunk in response.iter_bytes():
                file.write(chunk)
                bar.update(len(chunk))
    return offset


def download(client: httpx.Client, url: str, sha256: str, part: Path) -> None:
    """Download ``url`` into ``part`` until it is whole and has ``sha256``, resuming after a cut.

    A part that does not end up with the expected hash after resuming (one left by another dataset) is
    removed and downloaded again from the start.

    Raises:
        GenerateError: the whole file does not have ``sha256``.
        httpx.TransportError: the download was cut ``DOWNLOAD_ATTEMPTS`` times.
    """
    for attempt in range(1, DOWNLOAD_ATTEMPTS + 1):
        try:
            offset = _fetch(client, url, part)
        except httpx.TransportError as error:
            if attempt == DOWNLOAD_ATTEMPTS:
                raise
            log.warning("download cut (%s); resuming", error)
            continue
        actual = sha256_file(part)
        if actual == sha256:
            return
        part.unlink()
        if not offset:
            raise GenerateError(f"the download's sha256 is {actual}, the server announced {sha256}")
        log.warning("the resumed download does not match the server's sha256; downloading it again")
    raise GenerateError(f"no download matched the server's sha256 in {DOWNLOAD_ATTEMPTS} attempts")


def generate(
    client: httpx.Client, request: dict[str, Any], out: Path, poll_interval_s: float = POLL_INTERVAL_S
) -> str:
    """Make a dataset on the server and download its zip to ``out``.

    Args:
        client: client of the server (:func:`open_client`).
        request: body of ``POST /datasets`` (:func:`dataset_request`).
        out: zip to write; ``<out>.part`` holds the download until it is verified.
        poll_interval_s: time between status requests.

    Returns:
        The zip's sha256 (hex).

    Raises:
        GenerateError: the server refused the request (its detail), the dataset failed (its error), the
            server could not be reached, or the download did not match the announced sha256.
    """
    part = out.with_name(out.name + ".part")
    try:
        status = _follow(client, _create(client, request, idempotency_key(request, out)), poll_interval_s)
        download(client, status["download_url"], status["sha256"], part)
    except httpx.TransportError as error:
        raise GenerateError(
            f"cannot reach the server at {client.base_url} ({error}); is `mrisynth serve` running there?"
        ) from error
    os.replace(part, out)
    log.info("wrote %s (%d bytes, sha256 %s)", out, out.stat().st_size, status["sha256"])
    return str(status["sha256"])
