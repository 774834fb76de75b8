"""``mrisynth export``: ONNX networks + manifest of a training run, and the worker's artifact checks."""

import dataclasses
import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import get_args

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import Tensor, nn

from cli.main import main
from models.export import RunInfo, export_run
from models.export_onnx import ExportSpec, ParityError, check_parity, export_network, worker_networks
from models.networks import LESION_VARIANTS, NetworkConfig, define_networks
from models.onnx_benchmark import PIPELINE_NETWORKS, torch_ratio_lines
from mrisynth.artifacts import (
    MANIFEST_NAME,
    NETWORK_IO,
    ArtifactError,
    LesionVariant,
    load_manifest,
    sha256_file,
    verify_artifacts,
)
from mrisynth.conventions import LABELS, MODALITIES
from worker.sessions import Synthesizer

SIZE = 32
NGF = 4


def make_run(directory: Path, write_run: Callable[..., Path], variant: str = "4SEG") -> nn.ModuleDict:
    """A training run directory with random-init networks at a tiny config (``write_run`` of conftest)."""
    torch.manual_seed(0)
    config = NetworkConfig(ngf=NGF, lesion_variant=variant)
    networks = define_networks(config)
    labels = np.random.default_rng(0).choice(np.array(LABELS, dtype=np.uint8), size=(5, SIZE, SIZE))
    write_run(directory, networks, config, SIZE, labels)
    return networks.eval()


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def exported(
    tmp_path_factory: pytest.TempPathFactory, write_run: Callable[..., Path]
) -> tuple[Path, nn.ModuleDict]:
    """A 4SEG run exported through the command line, and its torch networks."""
    root = tmp_path_factory.mktemp("export")
    networks = make_run(root / "run", write_run)
    main(["export", str(root / "run"), "--out", str(root / "artifacts")])
    return root / "artifacts", networks


def _parity(specs: list[ExportSpec], directory: Path, batches: tuple[int, ...]) -> None:
    for spec in specs:
        assert check_parity(spec, directory / f"{spec.name}.onnx", batches=batches, seed=1) < 1e-4


def test_cli_export_writes_a_valid_manifest(exported: tuple[Path, nn.ModuleDict]) -> None:
    directory, _ = exported
    manifest = verify_artifacts(directory)
    assert manifest == load_manifest(directory / MANIFEST_NAME)
    assert set(manifest.networks) == set(NETWORK_IO)
    assert sorted(p.name for p in directory.iterdir()) == sorted([*manifest.files(), MANIFEST_NAME])
    for name, entry in manifest.files().items():
        assert sha256_file(directory / name) == entry.sha256
    assert manifest.image_size == (SIZE, SIZE)
    assert manifest.voxel_size_mm == (7.5, 7.5, 1.0)
    assert manifest.modalities == MODALITIES and manifest.labels == LABELS
    assert manifest.lesion_guidance == "4SEG"
    assert manifest.structure_code_shape == (4, SIZE // 4, SIZE // 4)
    assert manifest.semantic_code_channels == 4 * NGF
    assert (manifest.fusion.label_weight, manifest.fusion.structure_weight) == (0.2, 0.8)
    assert manifest.thresholds.dice == 0.95 and manifest.thresholds.probability == 0.5
    assert manifest.segmentors == {m: f"SEG_{m}" for m in MODALITIES}
    assert manifest.lesion_library.count == 5
    assert manifest.training.preset == "test" and manifest.training.command == "pytest"
    assert manifest.training.data == {"source": "random init", "structure_density": 0.08}
    raw = json.loads((directory / MANIFEST_NAME).read_text())
    assert list(raw) == [
        "format_version", "image_size", "voxel_size_mm", "modalities", "labels", "lesion_guidance",
        "fusion", "structure_code_shape", "semantic_code_channels", "thresholds", "networks",
        "segmentors", "lesion_library", "training", "dice_calibration",
    ]  # fmt: skip
    assert manifest.dice_calibration is None  # the run has no slice cache: the paper's 0.95 is kept


def test_onnx_networks_match_torch_with_documented_names(exported: tuple[Path, nn.ModuleDict]) -> None:
    directory, networks = exported
    specs = worker_networks(networks, NetworkConfig(ngf=NGF), (SIZE, SIZE))
    assert {spec.name for spec in specs} == set(NETWORK_IO)
    _parity(specs, directory, batches=(1, 3, 5))  # 5: the batch axis is dynamic, not just 1..3
    for spec in specs:
        model = onnx.load(directory / f"{spec.name}.onnx")
        assert tuple(i.name for i in model.graph.input) == NETWORK_IO[spec.name][0]
        assert tuple(o.name for o in model.graph.output) == NETWORK_IO[spec.name][1]
        for value in [*model.graph.input, *model.graph.output]:
            assert value.type.tensor_type.shape.dim[0].dim_param  # symbolic batch
        assert all(not tensor.external_data for tensor in model.graph.initializer)
        assert "Dropout" not in {node.op_type for node in model.graph.node}


def test_onnx_benchmark_times_every_pipeline_network(
    exported: tuple[Path, nn.ModuleDict], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OMP_WAIT_POLICY", "PASSIVE")
    directory, _ = exported
    lines = torch_ratio_lines(Synthesizer.load(directory), directory.parent / "run", [1, 2], repeats=1)
    rows = [line.split() for line in lines[3:]]
    assert [row[:2] for row in rows] == [[name, str(b)] for name in PIPELINE_NETWORKS for b in (1, 2)]
    assert all(float(cell) >= 0 for row in rows for cell in row[2:])


def test_onnx_shapes_follow_the_contract(exported: tuple[Path, nn.ModuleDict]) -> None:
    directory, _ = exported
    q = SIZE // 4
    shapes = {
        "DC_f": ({"code": (2, 4, q, q)}, (2, 1, SIZE, SIZE)),
        "MG": ({"f": (2, 1, SIZE, SIZE)}, (2, 1, SIZE, SIZE)),
        "EC_r": ({"fusion": (2, 4, SIZE, SIZE)}, (2, 4 * NGF, q, q)),
        "DC": ({"code": (2, 4 * NGF, q, q), "condition": (2, 4, q, q)}, (2, 1, SIZE, SIZE)),
        "EC": ({"image": (2, 1, SIZE, SIZE)}, (2, 4 * NGF, q, q)),
        "SEG_t1": ({"image": (2, 1, SIZE, SIZE)}, (2, 4, SIZE, SIZE)),
    }
    for name, (inputs, output_shape) in shapes.items():
        session = ort.InferenceSession(str(directory / f"{name}.onnx"), providers=["CPUExecutionProvider"])
        feeds = {k: np.random.default_rng(0).random(s, dtype=np.float32) for k, s in inputs.items()}
        (output,) = session.run(None, feeds)
        assert output.shape == output_shape, name
        if name.startswith("SEG_"):
            np.testing.assert_allclose(output.sum(axis=1), 1.0, atol=1e-5)


def _reuse_exports(monkeypatch: pytest.MonkeyPatch, source: Path, names: set[str]) -> None:
    """Make ``export_run`` copy the files of ``names`` from ``source`` instead of exporting them again.

    Only valid for the same weights: ``make_run`` seeds the same non-lesion networks for every
    variant (``lesion`` is built last); the parity check of ``export_run`` would catch a mismatch.
    """

    def export_or_copy(spec: ExportSpec, path: Path) -> None:
        if spec.name in names:
            shutil.copyfile(source / path.name, path)
        else:
            export_network(spec, path)

    monkeypatch.setattr("models.export.export_network", export_or_copy)


@pytest.mark.parametrize("variant", ["1SEG", "1EC+4DC"])
def test_every_lesion_variant_exports_four_segmentors(
    variant: str,
    exported: tuple[Path, nn.ModuleDict],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    write_run: Callable[..., Path],
) -> None:
    networks = make_run(tmp_path / "run", write_run, variant)
    _reuse_exports(monkeypatch, exported[0], {"DC_f", "MG", "EC_r", "DC", "EC"})
    manifest = export_run(tmp_path / "run", tmp_path / "artifacts")
    assert manifest.lesion_guidance == variant
    assert {f"SEG_{m}" for m in MODALITIES} <= set(manifest.networks)
    specs = worker_networks(networks, NetworkConfig(ngf=NGF, lesion_variant=variant), (SIZE, SIZE))
    _parity([spec for spec in specs if spec.name.startswith("SEG_")], tmp_path / "artifacts", (1, 3))
    verify_artifacts(tmp_path / "artifacts")


def test_lesion_variants_agree_with_the_networks() -> None:
    assert get_args(LesionVariant) == LESION_VARIANTS


class _Shifted(nn.Module):
    """A one-input network whose output is off by ``shift``, to export in place of the real one."""

    def __init__(self, net: nn.Module, shift: float) -> None:
        super().__init__()
        self.net, self.shift = net, shift

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x) + self.shift


def test_parity_check_names_network_and_difference(exported: tuple[Path, nn.ModuleDict]) -> None:
    directory, networks = exported
    spec = worker_networks(networks, NetworkConfig(ngf=NGF), (SIZE, SIZE))[0]
    shifted = dataclasses.replace(spec, module=_Shifted(spec.module, 1e-3).eval())
    assert check_parity(shifted, directory / "DC_f.onnx", tolerance=2e-3) < 2e-3
    with pytest.raises(ParityError, match=r"DC_f: ONNX output 'f' differs from torch by 0\.001 .* batch 1"):
        check_parity(shifted, directory / "DC_f.onnx")


def test_export_refuses_training_mode(tmp_path: Path) -> None:
    networks = define_networks(NetworkConfig(ngf=NGF))
    spec = worker_networks(networks, NetworkConfig(ngf=NGF), (SIZE, SIZE))[0]
    with pytest.raises(ValueError, match="DC_f: export needs the module in eval mode"):
        export_network(dataclasses.replace(spec, module=spec.module.train()), tmp_path / "DC_f.onnx")


def test_parity_failure_fails_export_and_leaves_nothing(
    exported: tuple[Path, nn.ModuleDict],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    write_run: Callable[..., Path],
) -> None:
    run = tmp_path / "run"
    make_run(run, write_run)
    checkpoint = torch.load(run / "checkpoint.pt")
    checkpoint["networks"]["MG.head.0.bias"] += 0.01  # MG.onnx of the first export no longer matches
    torch.save(checkpoint, run / "checkpoint.pt")
    _reuse_exports(monkeypatch, exported[0], set(NETWORK_IO))
    with pytest.raises(ParityError, match=r"MG: ONNX output 'mask' differs from torch by 0\.002"):
        export_run(run, tmp_path / "artifacts")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]
    with pytest.raises(SystemExit) as exit_info:
        main(["export", str(run), "--out", str(tmp_path / "artifacts")])
    assert exit_info.value.code == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_export_refuses_to_overwrite_without_force(
    exported: tuple[Path, nn.ModuleDict], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    directory, _ = exported
    run = directory.parent / "run"
    out = tmp_path / "artifacts"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="--force"):
        export_run(run, out)
    assert (out / "keep.txt").read_text() == "mine"
    with pytest.raises(ValueError, match="would replace the training run"):
        export_run(run, run.parent, force=True)
    _reuse_exports(monkeypatch, directory, set(NETWORK_IO))  # --force replaces out; networks as before
    export_run(run, out, force=True)
    assert not (out / "keep.txt").exists()
    verify_artifacts(out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["artifacts"]


def test_verify_artifacts_names_corrupted_and_missing_files(
    exported: tuple[Path, nn.ModuleDict], tmp_path: Path
) -> None:
    directory = tmp_path / "artifacts"
    shutil.copytree(exported[0], directory)
    path = directory / "DC.onnx"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match=r"DC\.onnx: corrupted file"):
        verify_artifacts(directory)
    (directory / "lesion_library.npz").unlink()
    shutil.copyfile(exported[0] / "DC.onnx", path)
    with pytest.raises(ArtifactError, match=r"lesion_library\.npz: file listed in the manifest is missing"):
        verify_artifacts(directory)
    (directory / MANIFEST_NAME).write_text("{}")
    with pytest.raises(ArtifactError, match="invalid manifest"):
        verify_artifacts(directory)
    (directory / MANIFEST_NAME).unlink()
    with pytest.raises(ArtifactError, match="manifest not found"):
        verify_artifacts(directory)


def test_artifacts_module_does_not_import_torch() -> None:
    code = "import sys, mrisynth.artifacts; assert 'torch' not in sys.modules and 'models' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[1])


def test_invalid_run_is_reported(tmp_path: Path, write_run: Callable[..., Path]) -> None:
    make_run(tmp_path / "run", write_run)
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    (tmp_path / "run" / "run.json").write_text(json.dumps({**info, "image_size": [30, 30]}))
    with pytest.raises(ValueError, match=r"(?s)run\.json: invalid run description.*multiples of 8"):
        export_run(tmp_path / "run", tmp_path / "artifacts")
    (tmp_path / "run" / "run.json").write_text(
        json.dumps({**info, "network_config": {**info["network_config"], "ngf": 8}})
    )
    with pytest.raises(ValueError, match=r"checkpoint\.pt: no networks matching"):
        export_run(tmp_path / "run", tmp_path / "artifacts")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_run_info_reads_what_the_trainer_writes() -> None:
    config = dataclasses.asdict(NetworkConfig(ngf=NGF))
    record = {
        "preset": {"name": "demo", "image_size": 96, "beta": 0.2},
        "network_config": config,
        "image_size": [96, 96],
        "voxel_size_mm": [2.5, 2.5, 1.0],
        "data": {"cases": 10, "structure_density": 0.08},
        "command": "mrisynth train --preset demo",
        "seed": 3,
        "device": "cpu",
        "steps": {"structure": 10, "synthesis": 20, "segmentation": 5},
        "final_losses": {"structure": {"d_f": 0.25, "normal": 0.5}, "segmentation": {}},
    }
    info = RunInfo.model_validate(record)
    assert (info.preset.name, info.preset.beta, info.network_config) == ("demo", 0.2, config)
    assert info.final_losses["structure"] == {"d_f": 0.25, "normal": 0.5}


def test_structure_probability_gives_generated_maps_the_real_edge_density(
    exported: tuple[Path, nn.ModuleDict],
) -> None:
    directory, _ = exported
    manifest = load_manifest(directory)
    session = ort.InferenceSession(str(directory / "DC_f.onnx"), providers=["CPUExecutionProvider"])
    codes = np.random.default_rng(1).standard_normal((64, *manifest.structure_code_shape)).astype(np.float32)
    maps = session.run(None, {"code": codes})[0]
    assert abs(float((maps > manifest.thresholds.structure_probability).mean()) - 0.08) < 0.02
