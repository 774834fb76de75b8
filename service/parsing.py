"""Checking uploaded label files off the event loop: a pool of processes with its own bound and timeout.

A check decodes NIfTI files (decompressing them) and resizes their slices: CPU work that, on the event
loop or in AnyIO's thread pool, would starve every other request, ``/healthz`` included. It runs in one
of ``upload_parsers`` processes (spawned: no state of the server is inherited), each upload waiting for
one at most ``upload_parse_timeout_s`` with its check. The work of a check is bounded from the files'
headers before a voxel is read (:func:`worker.lesions.label_work`), so a check that outlives its
timeout ends soon after; what it leaves (the staging folder) is removed when it does.
"""

import asyncio
import logging
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import ParamSpec, TypeVar

from mrisynth.artifacts import sha256_file
from worker.lesions import LabelLimits, read_file_work, read_label_files, set_work
from worker.scans import read_scan

log = logging.getLogger(__name__)

P = ParamSpec("P")
T = TypeVar("T")


class UploadError(Exception):
    """An uploaded file that is not a usable label file; the message names it: ``files[i] (name): why``."""


def _hide(path: Path, text: str) -> str:
    """An error message without the staging path of the file it names."""
    return text.replace(f"{path}: ", "").replace(str(path), "the file")


def check_label_uploads(
    files: list[Path], names: list[str], image_size: tuple[int, int], limits: LabelLimits
) -> int:
    """Check staged uploads as the worker will read them; run in a parser process.

    Every file's header is checked first (:func:`worker.lesions.read_file_work`), then the set's total
    (:func:`worker.lesions.set_work`), and only then each file's voxels
    (:func:`worker.lesions.read_label_files`).

    Args:
        files: the staged files, in upload order.
        names: the client's name of each, for the messages.
        image_size: (H, W) of the artifacts.
        limits: what the set may cost.

    Returns:
        The set's label slices with a lesion.

    Raises:
        UploadError: naming the first bad file (``files[i] (name)``), or ``files`` for the set's total.
    """
    fields = [f"files[{index}] ({name})" for index, name in enumerate(names)]
    works = []
    for path, field in zip(files, fields, strict=True):
        try:
            works.append(read_file_work(path, limits)[1])
        except ValueError as error:
            raise UploadError(f"{field}: {_hide(path, str(error))}") from error
    try:
        set_work(works, limits)
    except ValueError as error:
        raise UploadError(f"files: {error}") from error
    slices = 0
    for path, field in zip(files, fields, strict=True):
        try:
            slices += len(read_label_files(path, image_size, limits))
        except ValueError as error:
            raise UploadError(f"{field}: {_hide(path, str(error))}") from error
    return slices


def check_scan_uploads(
    files: list[Path], keys: list[str], limits: LabelLimits
) -> tuple[tuple[int, ...], dict[str, str]]:
    """Check a staged scan as the worker will read it (:func:`worker.scans.read_scan`): the headers and
    their total first, then the voxels; run in a parser process.

    Args:
        files: the staged files.
        keys: the file key of each (``t1``, ``t1ce``, ``t2``, ``flair``, ``seg``).
        limits: what the scan may cost (the lesion sets' limits).

    Returns:
        The scan's shape as uploaded, and each file's sha256 (hex) by key.

    Raises:
        UploadError: ``<key>: why`` for a bad file (a modality or ``seg``), ``files: why`` for the set.
    """
    try:
        shape = read_scan(dict(zip(keys, files, strict=True)), limits).shape
        return shape, {key: sha256_file(path) for key, path in zip(keys, files, strict=True)}
    except ValueError as error:
        text = str(error)
        for path in files:
            text = _hide(path, text)
        raise UploadError(text) from error


PARENT_POLL_S = 1.0
"""How often a parser process looks whether the server that started it is still there."""


def _serve(parent: int) -> None:
    """Set up a parser process: a Ctrl-C (SIGINT to the terminal's process group) is left to the server,
    which stops its parsers; and the process ends within ``PARENT_POLL_S`` of the server's end, however
    that came (after a ``kill -9`` of the server its pool's pipes need not tell it: measured, parsers
    outlived it by more than 10 s)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threading.Thread(target=_exit_with, args=(parent,), daemon=True, name="parent-watch").start()


def _exit_with(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(PARENT_POLL_S)
    os._exit(0)


class ParsePool:
    """Processes that run upload checks, at most ``workers`` at once.

    Args:
        workers: processes (the service's ``upload_parsers``).
        timeout_s: longest a check may take, waiting for a process included (``upload_parse_timeout_s``).
    """

    def __init__(self, workers: int, timeout_s: float) -> None:
        self.workers, self.timeout_s = workers, timeout_s
        self._executor = self._start()

    def _start(self) -> ProcessPoolExecutor:
        """New processes, started now (in the background) rather than by the first uploads."""
        executor = ProcessPoolExecutor(
            self.workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_serve,
            initargs=(os.getpid(),),
        )
        for _ in range(self.workers):
            executor.submit(int)
        return executor

    async def run(
        self, cleanup: Callable[[], None], function: Callable[P, T], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """``function(*args, **kwargs)`` in a parser process.

        Args:
            cleanup: called if the call fails, times out or is cancelled, once the function no longer
                runs (a timed-out one runs on until it ends).
            function: a module-level function (it is pickled to the process), and its arguments.

        Raises:
            TimeoutError: if it did not end within ``timeout_s``.
            BrokenProcessPool: if a parser process died (the pool is replaced by a new one).
            Exception: what the function raised.
        """
        executor = self._executor
        try:
            future: Future[T] = executor.submit(function, *args, **kwargs)
        except BaseException as error:
            cleanup()
            self._replace(executor, error)
            raise
        try:
            return await asyncio.wait_for(asyncio.wrap_future(future), self.timeout_s)
        except BaseException as error:
            future.add_done_callback(lambda _: cleanup())
            self._replace(executor, error)
            raise

    def _replace(self, executor: ProcessPoolExecutor, error: BaseException) -> None:
        """Start new processes if ``error`` says that a process of ``executor`` died (once per pool)."""
        if isinstance(error, BrokenProcessPool) and self._executor is executor:
            log.error("a parser process died; starting new ones")
            executor.shutdown(wait=False, cancel_futures=True)
            self._executor = self._start()

    def close(self) -> None:
        """Stop the processes once their checks end (bounded: see the module docstring), before the
        server exits (with ``wait=False`` the processes outlived it); checks not started are cancelled."""
        self._executor.shutdown(wait=True, cancel_futures=True)
