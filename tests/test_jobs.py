"""Dataset jobs on a real redis-server and real RQ workers, with the committed demo artifacts (issue 4)."""

import gzip
import json
import os
import signal
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from redis import Redis
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer

from cli.main import main
from mrisynth.conventions import LABELS, MODALITIES
from mrisynth.settings import DEMO_ARTIFACTS, Settings
from mrisynth.structure import structural_feature_map
from worker.bundle_layout import BundleOptions
from worker.jobs import DatasetSpec, bundle_path, cancel_dataset, chunk_job_id, dataset_queue, enqueue_dataset
from worker.request import AttemptBounds, RequestThresholds, SynthesisRequest

SEED = 3


@pytest.fixture(scope="module")
def settings(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """Settings shared by this process and the workers: fast heartbeats so a dead worker is noticed soon."""
    return Settings(
        redis_url=redis_url,
        artifacts_dir=DEMO_ARTIFACTS,
        data_dir=tmp_path_factory.mktemp("data"),
        queue="test-jobs",
        batch_size=4,
        job_monitoring_interval_s=1,
        heartbeat_grace_s=2,
        maintenance_interval_s=1,
    )


def _parent_pid(stat: Path) -> int | None:
    """The parent pid in a /proc/<pid>/stat file, None if the process is gone."""
    try:
        return int(stat.read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


class Workers:
    """Real ``mrisynth worker`` processes, each in its own process group (worker and work-horse)."""

    def __init__(self, settings: Settings) -> None:
        variables = {f"MRISYNTH_{k.upper()}": str(v) for k, v in settings.model_dump().items()}
        self.env = {**os.environ, **variables, "REDIS_URL": str(settings.redis_url)}
        self.processes: list[subprocess.Popen] = []

    def start(self) -> subprocess.Popen:
        process = subprocess.Popen(
            [sys.executable, "-m", "cli", "worker"], env=self.env, start_new_session=True
        )
        self.processes.append(process)
        return process

    def kill(self, process: subprocess.Popen) -> None:
        """kill -9 the worker and its work-horse (RQ puts the horse in a process group of its own), as
        when their host dies."""
        horses = [
            int(stat.parent.name)
            for stat in Path("/proc").glob("[0-9]*/stat")
            if _parent_pid(stat) == process.pid
        ]
        for pid in [process.pid, *horses]:
            os.kill(pid, signal.SIGKILL)
        process.wait()

    def stop_all(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
                process.wait(timeout=30)


@pytest.fixture(scope="module")
def workers(settings: Settings) -> Iterator[Workers]:
    pool = Workers(settings)
    yield pool
    pool.stop_all()


def _request() -> SynthesisRequest:
    """The default request but for the lesion filter: the demo segmentors accept no demo lesion at 0.95
    (see the README), and these tests are about the jobs, not the models."""
    return SynthesisRequest(thresholds=RequestThresholds(dice=0.0))


def _submit(
    settings: Settings,
    dataset_id: str,
    n: int,
    seed: int,
    chunk_size: int,
    request: SynthesisRequest | None = None,
    allow_short: bool = False,
) -> Job:
    spec = DatasetSpec(
        dataset_id=dataset_id,
        n=n,
        seed=seed,
        request=request or _request(),
        bundle=BundleOptions(extras=True),
        chunk_size=chunk_size,
        allow_short=allow_short,
    )
    return enqueue_dataset(dataset_queue(Redis.from_url(settings.redis_url), settings), spec, settings)


def _end(job: Job, timeout_s: float = 300) -> JobStatus:
    deadline = time.monotonic() + timeout_s
    while (status := job.get_status(refresh=True)) not in (JobStatus.FINISHED, JobStatus.FAILED):
        assert time.monotonic() < deadline, f"{job.id} still {status} after {timeout_s} s"
        time.sleep(0.2)
    return status


def _finish(job: Job, timeout_s: float = 300) -> None:
    assert _end(job, timeout_s) == JobStatus.FINISHED, job.latest_result().exc_string


def _nifti(bundle: zipfile.ZipFile, name: str) -> np.ndarray:
    image = nib.Nifti1Image.from_bytes(gzip.decompress(bundle.read(name)))
    return np.asarray(image.dataobj)[:, :, 0]


def _read(path: Path) -> list[dict[str, np.ndarray]]:
    """Every case of a brats-layout bundle: its modalities, seg, structure and brainmask, (H, W) each."""
    with zipfile.ZipFile(path) as bundle:
        manifest = json.loads(bundle.read("manifest.json"))
        keys = (*MODALITIES, "seg", "structure", "brainmask")
        for case in manifest["cases"]:
            case_id = case["case_id"]
            assert [case["files"][key] for key in keys] == [
                *(f"{case_id}/{case_id}_{key}.nii.gz" for key in (*MODALITIES, "seg")),
                *(f"extras/{case_id}_{key}.nii.gz" for key in ("structure", "brainmask")),
            ]
        return [{key: _nifti(bundle, case["files"][key]) for key in keys} for case in manifest["cases"]]


@pytest.fixture(scope="module")
def dataset(settings: Settings, workers: Workers) -> list[dict[str, np.ndarray]]:
    """16 samples over 3 chunks (6, 6, 4), made by two workers."""
    workers.start()
    workers.start()
    job = _submit(settings, "sixteen", n=16, seed=SEED, chunk_size=6)
    _finish(job)
    return _read(bundle_path(settings, "sixteen"))


def test_the_manifest_records_one_voxel_size(
    settings: Settings, dataset: list[dict[str, np.ndarray]]
) -> None:
    """The request in the manifest carries the bundle's real voxel size, the artifacts', as the files do."""
    with zipfile.ZipFile(bundle_path(settings, "sixteen")) as bundle:
        manifest = json.loads(bundle.read("manifest.json"))
        name = manifest["cases"][0]["files"]["t1"]
        zooms = nib.Nifti1Image.from_bytes(gzip.decompress(bundle.read(name))).header.get_zooms()
    artifacts = json.loads((settings.artifacts_dir / "manifest.json").read_text())["voxel_size_mm"]
    assert manifest["request"]["bundle"]["voxel_size_mm"] == manifest["voxel_size_mm"] == artifacts
    assert [float(z) for z in zooms] == artifacts


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * float((a * b).sum()) / max(float(a.sum() + b.sum()), 1.0)


def test_bundle_opens_with_nibabel_with_labels_inside_the_brain(dataset: list[dict[str, np.ndarray]]) -> None:
    assert len(dataset) == 16
    for case in dataset:
        assert all(case[m].dtype == np.float32 for m in MODALITIES)
        assert case["seg"].dtype == np.uint8 and set(np.unique(case["seg"])) <= set(LABELS)
        assert case["seg"].any()
        assert not (case["seg"] > 0)[case["brainmask"] == 0].any()


def test_modalities_of_a_sample_are_registered(dataset: list[dict[str, np.ndarray]]) -> None:
    """Algorithm 1 maps of a sample's modalities agree with each other and with the sample's input map
    far better than with the next sample's: for every sample, and by a wide margin on average."""
    maps = [{m: structural_feature_map(case[m]) for m in MODALITIES} for case in dataset]
    pairs = [(m, n) for i, m in enumerate(MODALITIES) for n in MODALITIES[i + 1 :]]
    scores = []
    for s, sample in enumerate(maps):
        other = (s + 1) % len(maps)
        within = np.mean([_dice(sample[m], sample[n]) for m, n in pairs])
        across = np.mean([_dice(sample[m], maps[other][n]) for m in MODALITIES for n in MODALITIES])
        to_input = np.mean([_dice(sample[m], dataset[s]["structure"]) for m in MODALITIES])
        to_other_input = np.mean([_dice(sample[m], dataset[other]["structure"]) for m in MODALITIES])
        scores.append((within, across, to_input, to_other_input))
    within, across, to_input, to_other_input = np.array(scores).T
    assert (within > across).all() and within.mean() > across.mean() + 0.2, scores
    assert (to_input > to_other_input).all() and to_input.mean() > to_other_input.mean() + 0.1, scores


def test_same_seed_same_arrays_whatever_the_chunking(
    settings: Settings, dataset: list[dict[str, np.ndarray]]
) -> None:
    _finish(_submit(settings, "one-chunk", n=5, seed=SEED, chunk_size=5))
    again = _read(bundle_path(settings, "one-chunk"))
    for case, same in zip(again, dataset[:5], strict=True):
        assert all(np.array_equal(case[key], same[key]) for key in case)


def test_different_seed_different_samples(settings: Settings, dataset: list[dict[str, np.ndarray]]) -> None:
    _finish(_submit(settings, "other-seed", n=3, seed=SEED + 1, chunk_size=3))
    other = _read(bundle_path(settings, "other-seed"))
    for case, first in zip(other, dataset[:3], strict=True):
        assert not np.array_equal(case["t1"], first["t1"])
        assert not np.array_equal(case["structure"], first["structure"])


def test_worker_killed_mid_chunk_still_yields_a_complete_bundle(
    settings: Settings, workers: Workers, dataset: list[dict[str, np.ndarray]]
) -> None:
    workers.stop_all()
    victim = workers.start()
    job = _submit(settings, "killed", n=12, seed=SEED, chunk_size=12)
    connection = Redis.from_url(settings.redis_url)
    chunk = Job.fetch(chunk_job_id("killed", 0), connection=connection, serializer=JSONSerializer)
    deadline = time.monotonic() + 120
    while (
        chunk.get_status(refresh=True) != JobStatus.STARTED
        or not chunk.get_meta(refresh=True)["progress"]["candidates"]
    ):
        assert time.monotonic() < deadline, "the chunk never started"
        time.sleep(0.02)
    workers.kill(victim)
    assert chunk.get_status(refresh=True) == JobStatus.STARTED
    workers.start()
    _finish(job)
    chunk.refresh()
    assert chunk.retries_left == settings.chunk_retries - 1, "the abandoned chunk should have been retried"
    killed = _read(bundle_path(settings, "killed"))
    assert len(killed) == 12
    for case, same in zip(killed, dataset[:12], strict=True):
        assert all(np.array_equal(case[key], same[key]) for key in case)


def test_local_synthesis_makes_the_same_samples_as_the_jobs(
    dataset: list[dict[str, np.ndarray]], tmp_path: Path
) -> None:
    out = tmp_path / "local.zip"
    main(["synthesize", "--n", "3", "--seed", str(SEED), "--dice", "0", "--out", str(out)])
    for case, same in zip(_read(out), dataset[:3], strict=True):
        assert all(np.array_equal(case[key], same[key]) for key in case)


def test_progress_is_in_job_meta(settings: Settings, dataset: list[dict[str, np.ndarray]]) -> None:
    connection = Redis.from_url(settings.redis_url)
    progress = [
        Job.fetch(chunk_job_id("sixteen", c), connection=connection, serializer=JSONSerializer).meta[
            "progress"
        ]
        for c in range(3)
    ]
    assert [p["accepted"] for p in progress] == [6, 6, 4]
    assert sum(p["accepted"] for p in progress) == len(dataset)
    for p in progress:
        rejected = p["rejected_structure"] + p["rejected_lesion"] + p["rejected_dice"]
        assert p["candidates"] == p["accepted"] + rejected and p["samples_per_s"] > 0


def test_unreachable_threshold_fails_with_the_rate_and_the_threshold_to_relax(
    settings: Settings, dataset: list[dict[str, np.ndarray]]
) -> None:
    strict = SynthesisRequest(
        thresholds=RequestThresholds(dice=1.0), bounds=AttemptBounds(candidates_per_sample=8)
    )
    job = _submit(settings, "strict", n=2, seed=SEED, chunk_size=1, request=strict)
    assert _end(job) == JobStatus.FAILED
    message = job.latest_result().exc_string
    assert "acceptance rate 0.0%" in message and "relax thresholds.dice" in message
    assert not bundle_path(settings, "strict").exists()
    nothing = _submit(settings, "nothing", n=2, seed=SEED, chunk_size=1, request=strict, allow_short=True)
    assert _end(nothing) == JobStatus.FAILED and "relax thresholds.dice" in nothing.latest_result().exc_string
    # Dice 0.6: a few % of the demo's candidates pass, so one of the 4 samples is found in 8 candidates
    picky = SynthesisRequest(
        thresholds=RequestThresholds(dice=0.57), bounds=AttemptBounds(candidates_per_sample=8)
    )
    short = _submit(settings, "short", n=4, seed=SEED, chunk_size=4, request=picky, allow_short=True)
    _finish(short)
    assert short.latest_result().return_value == {
        "path": str(bundle_path(settings, "short")),
        "samples": 1,
        "short": True,
    }


def test_cancel_stops_the_chunks_and_removes_the_files(
    settings: Settings, workers: Workers, dataset: list[dict[str, np.ndarray]]
) -> None:
    workers.stop_all()
    workers.start()
    connection = Redis.from_url(settings.redis_url)
    job = _submit(settings, "cancelled", n=400, seed=SEED, chunk_size=100)
    first = Job.fetch(chunk_job_id("cancelled", 0), connection=connection, serializer=JSONSerializer)
    deadline = time.monotonic() + 60
    while first.get_status(refresh=True) != JobStatus.STARTED:
        assert time.monotonic() < deadline, "the first chunk never started"
        time.sleep(0.02)
    cancel_dataset(connection, "cancelled", settings)
    assert not any(Job.exists(chunk_job_id("cancelled", c), connection) for c in range(4)), (
        "the running chunk was stopped, and every chunk deleted"
    )
    assert not Job.exists(job.id, connection), "Redis keeps no job of a cancelled dataset"
    time.sleep(2)
    assert not (settings.data_dir / "datasets" / "cancelled").exists()
