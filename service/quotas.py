"""Per-key quotas: what one owner may store, so that one key filling its share locks out no other.

An owner's bytes are its datasets' folders under ``data_dir/datasets/<id>`` (walked) and its lesion
sets (their records' ``size_bytes``); its stored datasets are those with a folder or queued or running;
its lesion sets those of its index (:meth:`service.store.Store.lesion_sets`). At a quota new datasets
and lesion sets of that owner are refused with 409 naming the setting; other owners are not concerned.
"""

import os
from dataclasses import dataclass
from pathlib import Path

from fastapi import HTTPException, status

from service.context import ServiceContext
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
        bytes: its datasets' folders and its lesion sets, in bytes.
        datasets: its datasets with a folder, or queued or running.
        lesion_sets: its lesion sets.
    """

    bytes: int
    datasets: int
    lesion_sets: int


def usage(context: ServiceContext, owner: str) -> Usage:
    """What the owner stores now."""
    settings, store = context.settings, context.store
    folders = {dataset_id: dataset_dir(settings, dataset_id) for dataset_id in store.dataset_ids(owner)}
    stored = {dataset_id for dataset_id, folder in folders.items() if folder.is_dir()}
    lesion_sets = store.lesion_sets(owner)
    return Usage(
        bytes=sum(disk_usage(folders[dataset_id]) for dataset_id in stored)
        + sum(record.size_bytes for record in lesion_sets),
        datasets=len(stored | store.active_ids(owner)),
        lesion_sets=len(lesion_sets),
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


def lesion_sets_full(count: int) -> HTTPException:
    """The 409 for an owner holding ``count`` lesion sets, at ``max_lesion_sets_per_owner``."""
    return _full(
        f"this key stores {count} lesion sets, the most it may (the service's max_lesion_sets_per_owner)"
    )


def check_lesion_set_quota(context: ServiceContext, owner: str, adding: int = 0) -> None:
    """Refuse a new lesion set of an owner (of ``adding`` bytes, once known) at its quotas.

    Raises:
        HTTPException: 409 naming ``max_lesion_sets_per_owner`` or ``owner_disk_quota_bytes``.
    """
    used = usage(context, owner)
    if used.lesion_sets >= context.settings.max_lesion_sets_per_owner:
        raise lesion_sets_full(used.lesion_sets)
    _check_bytes(context, used.bytes, adding)
