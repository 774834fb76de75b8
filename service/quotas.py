"""Per-key quotas: what one owner may store, so that one key filling its share locks out no other.

An owner's bytes are its datasets' folders under ``data_dir/datasets/<id>`` (walked) and its uploaded
lesion and scan sets (their records' ``size_bytes``); its stored datasets are those with a folder or
queued or running; its sets those of its indexes (:meth:`service.store.Store.uploads`), each kind held to
``max_lesion_sets_per_owner``. At a quota new datasets and sets of that owner are refused with 409 naming
the setting; other owners are not concerned.
"""

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import HTTPException, status

from service.context import ServiceContext
from service.store import UPLOAD_KINDS, UploadKind
from worker.jobs import dataset_dir

DATASETS = "max_datasets_per_owner"
"""The setting of the dataset quota, named in its 409."""


def disk_usage(directory: Path) -> int:
    """Bytes of the regular files under a directory (0 if it does not exist); files that vanish while
    it is walked are skipped."""
    total = 0
    for root, _, files in os.walk(directory):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except FileNotFoundError:
                continue
    return total


@dataclass(frozen=True)
class Usage:
    """What an owner stores.

    Attributes:
        bytes: its datasets' folders and its uploaded sets, in bytes.
        datasets: its datasets with a folder, or queued or running.
        uploads: its uploaded sets, by kind (:attr:`service.store.UploadKind.key`).
    """

    bytes: int
    datasets: int
    uploads: dict[str, int]


def usage(context: ServiceContext, owner: str) -> Usage:
    """What the owner stores now."""
    settings, store = context.settings, context.store
    folders = {dataset_id: dataset_dir(settings, dataset_id) for dataset_id in store.dataset_ids(owner)}
    stored = {dataset_id for dataset_id, folder in folders.items() if folder.is_dir()}
    uploads = {
        kind.key: [record.size_bytes for record in store.uploads(kind, owner)] for kind in UPLOAD_KINDS
    }
    return Usage(
        bytes=sum(disk_usage(folders[dataset_id]) for dataset_id in stored)
        + sum(sum(sizes) for sizes in uploads.values()),
        datasets=len(stored | store.active_ids(owner)),
        uploads={key: len(sizes) for key, sizes in uploads.items()},
    )


def _full(why: str) -> HTTPException:
    return HTTPException(status.HTTP_409_CONFLICT, f"quota: {why}; delete some or wait for them to expire")


def _check_bytes(context: ServiceContext, used: int, adding: int = 0) -> None:
    quota = context.settings.owner_disk_quota_bytes
    if used >= quota or used + adding > quota:
        adds = f", and these files would add {adding}" if adding else ""
        raise _full(
            f"this key stores {used} bytes{adds}, its quota is {quota} (the service's owner_disk_quota_bytes)"
        )


def check_dataset_quota(context: ServiceContext, owner: str) -> None:
    """Refuse a new dataset of an owner at its disk or dataset quota.

    Raises:
        HTTPException: 409 naming ``owner_disk_quota_bytes`` or ``max_datasets_per_owner``.
    """
    used, most = usage(context, owner), context.settings.max_datasets_per_owner
    _check_bytes(context, used.bytes)
    if used.datasets >= most:
        raise _full(f"this key stores {used.datasets} datasets, the most it may (the service's {DATASETS})")


def uploads_full(kind: UploadKind[Any], count: int) -> HTTPException:
    """The 409 for an owner holding ``count`` sets of a kind, at ``max_lesion_sets_per_owner``."""
    return _full(
        f"this key stores {count} {kind.noun}s, the most it may (the service's max_lesion_sets_per_owner)"
    )


def check_upload_quota(context: ServiceContext, owner: str, kind: UploadKind[Any], adding: int = 0) -> None:
    """Refuse a new set of a kind (of ``adding`` bytes, once known) of an owner at its quotas.

    Raises:
        HTTPException: 409 naming ``max_lesion_sets_per_owner`` or ``owner_disk_quota_bytes``.
    """
    used = usage(context, owner)
    if used.uploads[kind.key] >= context.settings.max_lesion_sets_per_owner:
        raise uploads_full(kind, used.uploads[kind.key])
    _check_bytes(context, used.bytes, adding)
