"""The disk-usage cap: new datasets and lesion sets are refused while ``data_dir`` holds too much."""

import os
from pathlib import Path

from fastapi import HTTPException, status

from mrisynth.settings import Settings


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


def check_disk_cap(settings: Settings) -> None:
    """Raise 409 when ``data_dir`` holds ``disk_cap_bytes`` or more.

    Raises:
        HTTPException: 409 Conflict, with the usage and the cap.
    """
    used = disk_usage(settings.data_dir)
    if used >= settings.disk_cap_bytes:
        raise HTTPException(
            status.HTTP_409_CONFLICT,
            f"disk usage cap reached ({used} of {settings.disk_cap_bytes} bytes under the data directory); "
            "delete datasets or wait for expiry",
        )
