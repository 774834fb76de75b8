"""ONNX export of the networks the worker runs, each with a dynamic batch axis, and its parity check.

Exporter: ``torch.onnx.export(..., dynamo=True)`` with ``dynamic_shapes`` (``torch.export.Dim``) on
axis 0 of every input; the TorchScript exporter's ``dynamic_axes`` only warns under dynamo. The
input and output names are those of :data:`mrisynth.artifacts.NETWORK_IO`. Every exported file is
run with onnxruntime on random inputs and compared with its torch twin (:func:`check_parity`).
"""

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import numpy as np
import onnxruntime as ort
import torch
from torch import Tensor, nn

from models.fusion import fuse
from models.networks import LesionGuidance, NetworkConfig
from mrisynth.artifacts import NETWORK_IO, segmentor_name
from mrisynth.conventions import LABELS, MODALITIES

PARITY_TOLERANCE: float = 1e-4
"""Largest max-abs difference allowed between an ONNX network and its torch twin."""

PARITY_BATCHES: tuple[int, ...] = (1, 3)
"""Batch sizes at which parity is checked; the export itself traces batch 2."""

InputMaker = Callable[[int, torch.Generator], tuple[Tensor, ...]]
"""(batch size, generator) -> one random float32 tensor per network input."""


class ParityError(ValueError):
    """An exported ONNX network does not reproduce its torch twin."""


@dataclass(frozen=True)
class ExportSpec:
    """A network to export: its artifact name, its torch module and how to draw valid inputs.

    Attributes:
        name: network name, a key of :data:`mrisynth.artifacts.NETWORK_IO` (the file is ``<name>.onnx``).
        module: the torch module, in eval mode.
        make_inputs: draws random inputs of the documented shapes and value ranges.
    """

    name: str
    module: nn.Module
    make_inputs: InputMaker

    @property
    def input_names(self) -> tuple[str, ...]:
        """Input names of the ONNX graph, in the order of the module's ``forward`` arguments."""
        return NETWORK_IO[self.name][0]

    @property
    def output_names(self) -> tuple[str, ...]:
        """Output names of the ONNX graph."""
        return NETWORK_IO[self.name][1]


def _gaussian(*shape: int) -> InputMaker:
    def make(batch: int, generator: torch.Generator) -> tuple[Tensor, ...]:
        return (torch.randn(batch, *shape, generator=generator),)

    return make


def _binary(*shape: int) -> InputMaker:
    def make(batch: int, generator: torch.Generator) -> tuple[Tensor, ...]:
        return ((torch.rand(batch, *shape, generator=generator) > 0.5).float(),)

    return make


def _fusion(height: int, width: int) -> InputMaker:
    def make(batch: int, generator: torch.Generator) -> tuple[Tensor, ...]:
        f = (torch.rand(batch, 1, height, width, generator=generator) > 0.5).float()
        label = torch.tensor(LABELS)[torch.randint(len(LABELS), (batch, height, width), generator=generator)]
        return (fuse(f, label),)

    return make


def _code_and_condition(channels: int, height: int, width: int) -> InputMaker:
    def make(batch: int, generator: torch.Generator) -> tuple[Tensor, ...]:
        code = torch.randn(batch, channels, height, width, generator=generator)
        modality = torch.randint(len(MODALITIES), (batch,), generator=generator)
        onehot = nn.functional.one_hot(modality, len(MODALITIES)).float()
        return code, onehot[:, :, None, None].expand(-1, -1, height, width).contiguous()

    return make


def worker_networks(
    networks: nn.ModuleDict, config: NetworkConfig, image_size: tuple[int, int]
) -> list[ExportSpec]:
    """The networks of ``docs/artifacts.md``: DC_f, MG, EC_r, DC, EC and SEG_<modality>.

    Args:
        networks: the output of :func:`models.networks.define_networks` for ``config``.
        config: the run's network config.
        image_size: (H, W), multiples of 8.

    Returns:
        One spec per network file, each module put in eval mode. With the ``1SEG`` variant the four
        segmentor specs hold the same module; with ``1EC+4DC`` each is EC_l followed by that
        modality's DC_l (a container that ``networks.eval()`` does not reach, hence the explicit eval).
    """
    height, width = image_size
    quarter = (height // 4, width // 4)
    structure_code = (height // config.structure_code_stride, width // config.structure_code_stride)
    image = _gaussian(1, height, width)
    specs = [
        ExportSpec("DC_f", networks["DC_f"], _gaussian(config.structure_code_channels, *structure_code)),
        ExportSpec("MG", networks["MG"], _binary(1, height, width)),
        ExportSpec("EC_r", networks["EC_r"], _fusion(height, width)),
        ExportSpec("DC", networks["DC"], _code_and_condition(config.code_channels, *quarter)),
        ExportSpec("EC", networks["EC"], image),
    ]
    lesion = cast(LesionGuidance, networks["lesion"])
    specs += [ExportSpec(segmentor_name(m), lesion.segmentor(i), image) for i, m in enumerate(MODALITIES)]
    for spec in specs:
        spec.module.eval()
    return specs


def export_network(spec: ExportSpec, path: Path) -> None:
    """Write one self-contained ONNX file (weights inside) with a dynamic batch axis.

    Args:
        spec: the network; its module must be in eval mode (dropout off).
        path: the ``.onnx`` file to write.

    Raises:
        ValueError: if the module is in training mode.
    """
    if any(module.training for module in spec.module.modules()):
        raise ValueError(f"{spec.name}: export needs the module in eval mode (dropout off)")
    example = spec.make_inputs(2, torch.Generator().manual_seed(0))
    batch = torch.export.Dim("batch", min=1)
    with torch.no_grad(), warnings.catch_warnings():
        # Noise: inputs sharing the batch Dim (DC's code and condition) make the exporter say so, and
        # torch.export uses a pytree API that torch itself deprecated.
        warnings.filterwarnings("ignore", message=r".*axis name: batch will not be used.*")
        warnings.filterwarnings(
            "ignore", message=r".*isinstance\(treespec, LeafSpec\).*", category=FutureWarning
        )
        torch.onnx.export(
            spec.module,
            example,
            path,
            input_names=list(spec.input_names),
            output_names=list(spec.output_names),
            dynamic_shapes=tuple({0: batch} for _ in example),
            external_data=False,
            dynamo=True,
            verbose=False,
        )


def check_parity(
    spec: ExportSpec,
    path: Path,
    tolerance: float = PARITY_TOLERANCE,
    batches: tuple[int, ...] = PARITY_BATCHES,
    seed: int = 0,
) -> float:
    """Run an ONNX file with onnxruntime and its torch twin on the same random inputs.

    Args:
        spec: the torch network the file was exported from.
        path: the ``.onnx`` file.
        tolerance: largest max-abs difference allowed, default :data:`PARITY_TOLERANCE` (1e-4).
        batches: batch sizes to try, default (1, 3).
        seed: seed of the random inputs.

    Returns:
        The max-abs difference over all batches and outputs.

    Raises:
        ParityError: naming the network, if the file's input or output names differ from
            ``docs/artifacts.md``, an output shape differs, or the difference exceeds ``tolerance``.
    """
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1  # no spinning thread pool competing with torch for the cores
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    names = (
        tuple(node.name for node in session.get_inputs()),
        tuple(node.name for node in session.get_outputs()),
    )
    if names != (spec.input_names, spec.output_names):
        raise ParityError(f"{spec.name}: ONNX inputs/outputs are {names}, expected {NETWORK_IO[spec.name]}")
    generator = torch.Generator().manual_seed(seed)
    worst = 0.0
    for batch in batches:
        inputs = spec.make_inputs(batch, generator)
        with torch.no_grad():
            expected = spec.module(*inputs)
        expected_outputs = (expected,) if isinstance(expected, Tensor) else tuple(expected)
        got_outputs = session.run(
            list(spec.output_names), {n: t.numpy() for n, t in zip(spec.input_names, inputs, strict=True)}
        )
        for output, want, got in zip(spec.output_names, expected_outputs, got_outputs, strict=True):
            if got.shape != tuple(want.shape):
                raise ParityError(
                    f"{spec.name}: ONNX output {output!r} has shape {got.shape} at batch {batch}, "
                    f"torch gives {tuple(want.shape)}"
                )
            difference = float(np.abs(got - want.numpy()).max())
            if not difference <= tolerance:  # also catches NaN
                raise ParityError(
                    f"{spec.name}: ONNX output {output!r} differs from torch by {difference:.3g} "
                    f"(max abs) at batch {batch}, over the tolerance {tolerance:g}"
                )
            worst = max(worst, difference)
    return worst
