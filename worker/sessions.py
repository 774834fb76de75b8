"""The exported networks in onnxruntime, loaded once per worker process (``docs/artifacts.md``).

:meth:`Synthesizer.load` verifies every file's sha256 against the manifest, opens one
``InferenceSession`` per distinct network file (the four ``SEG_<modality>`` files of the ``1SEG``
variant are the same bytes, hence one session) and reads the lesion library. The CUDA provider is
asked for when onnxruntime offers it; :attr:`Synthesizer.provider` reports what the sessions actually
use (``InferenceSession.get_providers()``), CPU otherwise. The sessions' threads, scheduling, graph
optimization and memory arena are the ``onnx_*`` fields of :class:`mrisynth.settings.Settings`. No torch
here; onnxruntime is imported when sessions are opened, so the API, which imports the job functions to
queue them, runs without it.
"""

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from mrisynth.artifacts import NETWORK_IO, ArtifactError, Manifest, verify_artifacts
from mrisynth.conventions import LABELS
from mrisynth.settings import Settings, get_settings

if TYPE_CHECKING:
    import onnxruntime as ort

log = logging.getLogger(__name__)

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"


def _providers() -> list[str]:
    """CUDA first when this onnxruntime build has it, CPU always as the fallback."""
    import onnxruntime as ort

    return [CUDA, CPU] if CUDA in ort.get_available_providers() else [CPU]


def _options(settings: Settings) -> "ort.SessionOptions":
    """onnxruntime session options from the ``onnx_*`` settings."""
    import onnxruntime as ort

    levels = {
        "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }
    modes = {"sequential": ort.ExecutionMode.ORT_SEQUENTIAL, "parallel": ort.ExecutionMode.ORT_PARALLEL}
    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only; onnxruntime warns about every unused initializer
    options.intra_op_num_threads = settings.onnx_intra_op_threads
    options.inter_op_num_threads = settings.onnx_inter_op_threads
    options.execution_mode = modes[settings.onnx_execution_mode]
    options.graph_optimization_level = levels[settings.onnx_graph_optimization]
    options.enable_cpu_mem_arena = settings.onnx_cpu_mem_arena
    spinning = str(int(settings.onnx_allow_spinning))
    options.add_session_config_entry("session.intra_op.allow_spinning", spinning)
    return options


def _open(path: Path, providers: Sequence[str], options: "ort.SessionOptions") -> "ort.InferenceSession":
    import onnxruntime as ort

    return ort.InferenceSession(str(path), sess_options=options, providers=list(providers))


def _read_library(path: Path, image_size: tuple[int, int]) -> np.ndarray:
    """The lesion library's labels that hold a lesion, uint8 (N, H, W)."""
    with np.load(path, allow_pickle=False) as library:
        labels = library.get("labels")
    if labels is None or labels.dtype != np.uint8 or labels.ndim != 3 or labels.shape[1:] != image_size:
        raise ArtifactError(f"{path}: 'labels' must be uint8 (N, {image_size[0]}, {image_size[1]})")
    if not np.isin(labels, LABELS).all():
        raise ArtifactError(f"{path}: label values must be in {LABELS}")
    return np.ascontiguousarray(labels[labels.reshape(len(labels), -1).any(axis=1)])


class Synthesizer:
    """The networks of an artifacts directory, ready to run, with the manifest and lesion library.

    Build it with :meth:`load`; it is meant to live as long as the worker process (sessions are costly
    to open). Its methods run one batched call per network; the algorithm is in :mod:`worker.pipeline`.

    Attributes:
        directory: the artifacts directory.
        manifest: its validated manifest.
        lesion_library: uint8 (N, H, W) library labels that hold a lesion (possibly N = 0).
        provider: the execution provider the sessions use, ``CUDAExecutionProvider`` or
            ``CPUExecutionProvider``.
    """

    def __init__(
        self,
        directory: Path,
        manifest: Manifest,
        sessions: dict[str, "ort.InferenceSession"],
        lesion_library: np.ndarray,
    ) -> None:
        self.directory = directory
        self.manifest = manifest
        self.lesion_library = lesion_library
        self._sessions = sessions
        used = {session.get_providers()[0] for session in sessions.values()}
        self.provider = CUDA if used == {CUDA} else CPU

    @classmethod
    def load(cls, directory: Path, settings: Settings | None = None) -> "Synthesizer":
        """Verify an artifacts directory (``verify_artifacts``) and open its networks.

        Args:
            directory: a directory written by ``mrisynth export``.
            settings: whose ``onnx_*`` fields configure the sessions; default :func:`get_settings`.

        Returns:
            The synthesizer.

        Raises:
            ArtifactError: naming the missing or corrupted file, or the invalid manifest.
        """
        directory = Path(directory)
        manifest = verify_artifacts(directory)
        providers = _providers()
        options = _options(settings or get_settings())
        by_digest: dict[str, ort.InferenceSession] = {}
        sessions: dict[str, ort.InferenceSession] = {}
        for name, entry in manifest.networks.items():
            if entry.sha256 not in by_digest:
                by_digest[entry.sha256] = _open(directory / entry.file, providers, options)
            sessions[name] = by_digest[entry.sha256]
        library = _read_library(directory / manifest.lesion_library.file, manifest.image_size)
        synthesizer = cls(directory, manifest, sessions, library)
        log.info(
            "loaded %s: %d networks in %d sessions on %s, %d library lesions, image size %s",
            directory,
            len(sessions),
            len(by_digest),
            synthesizer.provider,
            len(library),
            manifest.image_size,
        )
        return synthesizer

    @property
    def intra_op_threads(self) -> int:
        """The sessions' ``intra_op_num_threads``, 0 for onnxruntime's default (one per physical core)."""
        session = next(iter(self._sessions.values()))
        threads: int = session.get_session_options().intra_op_num_threads
        return threads

    @property
    def image_size(self) -> tuple[int, int]:
        """(H, W) of every image, label and map."""
        return self.manifest.image_size

    def run(self, network: str, **inputs: np.ndarray) -> np.ndarray:
        """One batched call of a network of ``docs/artifacts.md``.

        Args:
            network: network name, e.g. ``"DC_f"`` or ``"SEG_flair"``.
            **inputs: float32 arrays named as the network's inputs (:data:`NETWORK_IO`), batch first.

        Returns:
            The network's single output, float32, batch first.
        """
        names = NETWORK_IO[network]
        if tuple(inputs) != names[0]:
            raise ValueError(f"{network} takes inputs {names[0]}, got {tuple(inputs)}")
        feeds = {name: np.ascontiguousarray(value, dtype=np.float32) for name, value in inputs.items()}
        output: np.ndarray = self._sessions[network].run(list(names[1]), feeds)[0]
        return output

    def segment(self, images: np.ndarray, modalities: Sequence[str]) -> np.ndarray:
        """Lesion labels of synthetic images by each modality's segmentor SEG_i (Sec. 2.7), argmax.

        Modalities whose segmentor files are identical (the ``1SEG`` variant) share one call.

        Args:
            images: float32 (B, M, H, W), channel j of modality ``modalities[j]``.
            modalities: the M modalities, distinct.

        Returns:
            uint8 (B, M, H, W) label values in ``LABELS``.
        """
        batch, count, height, width = images.shape
        if count != len(modalities):
            raise ValueError(f"images have {count} modality channels for modalities {tuple(modalities)}")
        groups: dict[int, list[int]] = {}
        for j, modality in enumerate(modalities):
            groups.setdefault(id(self._sessions[self.manifest.segmentors[modality]]), []).append(j)
        labels = np.empty((batch, count, height, width), dtype=np.uint8)
        values = np.asarray(self.manifest.labels, dtype=np.uint8)
        for channels in groups.values():
            network = self.manifest.segmentors[modalities[channels[0]]]
            stacked = images[:, channels].reshape(-1, 1, height, width)
            probabilities = self.run(network, image=stacked)
            predicted = values[probabilities.argmax(axis=1)]
            labels[:, channels] = predicted.reshape(batch, len(channels), height, width)
        return labels
