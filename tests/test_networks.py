"""Shapes, ranges and ONNX export of the networks of Sec. 2.3-2.7, and the fusion map of Sec. 2.5."""

from pathlib import Path

import pytest
import torch
from torch import nn

from models.fusion import FUSION_CHANNELS, FUSION_LABEL_WEIGHT, FUSION_STRUCTURE_WEIGHT, fuse, label_to_onehot
from models.networks import (
    LESION_VARIANTS,
    LesionGuidance,
    NetworkConfig,
    condition_planes,
    define_d,
    define_d_f,
    define_dc,
    define_dc_f,
    define_ec,
    define_ec_f,
    define_ec_r,
    define_fd,
    define_fd_f,
    define_lesion_guidance,
    define_mg,
    define_networks,
    init_net,
    reparameterize,
)
from mrisynth.conventions import LABELS, MODALITIES

NGF = 8
CONFIG = NetworkConfig(ngf=NGF)
C = 4 * NGF  # semantic channels: 4 * ngf by default


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.mark.parametrize(("batch", "size"), [(2, 32), (3, 32), (2, 64)])
def test_structure_stage_shapes_and_ranges(batch: int, size: int) -> None:
    f = (torch.rand(batch, 1, size, size) > 0.7).float()
    code_mean, code_logvar = define_ec_f(CONFIG)(f)
    assert code_mean.shape == code_logvar.shape == (batch, 4, size // 4, size // 4)
    f_r = define_dc_f(CONFIG)(reparameterize(code_mean, code_logvar))
    assert f_r.shape == (batch, 1, size, size)
    assert f_r.min() >= 0.0 and f_r.max() <= 1.0
    mask = define_mg(CONFIG)(f)
    assert mask.shape == (batch, 1, size, size)
    assert mask.min() >= 0.0 and mask.max() <= 1.0
    assert define_d_f(CONFIG)(f).shape == (batch, 1, size // 8, size // 8)
    assert define_fd_f(CONFIG)(code_mean).shape == (batch, 1, size // 8, size // 8)


@pytest.mark.parametrize(("batch", "size"), [(2, 32), (3, 32), (2, 64)])
def test_translation_stage_shapes_and_ranges(batch: int, size: int) -> None:
    x = torch.randn(batch, 1, size, size)
    code = define_ec(CONFIG)(x)
    assert code.shape == (batch, C, size // 4, size // 4)
    x_t = define_dc(CONFIG)(code, condition_planes(2, code))
    assert x_t.shape == (batch, 1, size, size)
    d, c = define_d(CONFIG)(x_t)
    assert d.shape == (batch, 1, size // 8, size // 8)
    assert c.shape == (batch, len(MODALITIES), size // 8, size // 8)
    torch.testing.assert_close(c.sum(dim=1), torch.ones(batch, size // 8, size // 8))
    assert define_fd(CONFIG)(code).shape == (batch, 1, size // 8, size // 8)


@pytest.mark.parametrize("batch", [2, 3])
def test_synthesis_stage_shapes(batch: int) -> None:
    f = (torch.rand(batch, 1, 32, 32) > 0.7).float()
    label = torch.tensor(LABELS)[torch.randint(0, 4, (batch, 32, 32))]
    code_g = define_ec_r(CONFIG)(fuse(f, label))
    assert code_g.shape == (batch, C, 8, 8)
    dc = define_dc(CONFIG)
    x_g = [dc(code_g, condition_planes(i, code_g)) for i in range(len(MODALITIES))]
    assert all(x.shape == (batch, 1, 32, 32) for x in x_g)


def test_condition_planes_are_one_hot_of_the_modality() -> None:
    code = torch.randn(3, C, 8, 8)
    planes = condition_planes(1, code)
    assert planes.shape == (3, 4, 8, 8)
    assert torch.equal(planes[:, 1], torch.ones(3, 8, 8))
    assert planes.sum().item() == 3 * 8 * 8
    with pytest.raises(ValueError, match="modality"):
        condition_planes(4, code)


def test_reparameterize_uses_mean_and_standard_deviation() -> None:
    mean = torch.full((1, 4, 2, 2), 2.0)
    logvar = torch.full((1, 4, 2, 2), 2.0 * torch.log(torch.tensor(3.0)).item())  # std = 3
    noise = torch.full((1, 4, 2, 2), -1.0)
    torch.testing.assert_close(reparameterize(mean, logvar, noise), torch.full((1, 4, 2, 2), -1.0))


def test_decoder_changes_output_with_the_modality_condition() -> None:
    dc = define_dc(CONFIG).eval()
    code = torch.randn(2, C, 8, 8)
    assert not torch.allclose(dc(code, condition_planes(0, code)), dc(code, condition_planes(3, code)))


def test_input_dropout_is_active_in_training_and_off_in_eval() -> None:
    x = torch.randn(2, 1, 32, 32)
    ec = define_ec(CONFIG)
    assert not torch.equal(ec.train()(x), ec(x))
    assert torch.equal(ec.eval()(x), ec(x))
    still = define_ec(NetworkConfig(ngf=NGF, dropout=0.0)).train()
    assert torch.equal(still(x), still(x))


@pytest.mark.parametrize(("variant", "n_subnetworks"), [("1SEG", 1), ("1EC+4DC", 5), ("4SEG", 4)])
def test_lesion_guidance_variants(variant: str, n_subnetworks: int) -> None:
    guidance = LesionGuidance(variant, ngf=NGF).eval()
    assert len(guidance.subnetworks()) == n_subnetworks
    x = torch.randn(3, len(MODALITIES), 32, 32)
    probs = guidance(x)
    assert probs.shape == (3, len(MODALITIES), len(LABELS), 32, 32)
    torch.testing.assert_close(probs.sum(dim=2), torch.ones(3, len(MODALITIES), 32, 32))
    for i in range(len(MODALITIES)):
        torch.testing.assert_close(guidance.segment(x[:, i : i + 1], i), probs[:, i])
    n_params = sum(p.numel() for p in guidance.parameters())
    assert n_params == sum(p.numel() for net in guidance.subnetworks().values() for p in net.parameters())


def test_lesion_guidance_sharing() -> None:
    one = LesionGuidance("1SEG", ngf=NGF)
    assert all(one.segmentor(i) is one.segmentor(0) for i in range(len(MODALITIES)))
    four = LesionGuidance("4SEG", ngf=NGF)
    assert len({id(four.segmentor(i)) for i in range(len(MODALITIES))}) == len(MODALITIES)
    split = LesionGuidance("1EC+4DC", ngf=NGF)
    encoder = split.subnetworks()["EC_l"]
    parts = [split.segmentor(i) for i in range(len(MODALITIES))]
    assert all(isinstance(seg, nn.Sequential) and seg[0] is encoder for seg in parts)
    assert len({id(seg[1]) for seg in parts if isinstance(seg, nn.Sequential)}) == len(MODALITIES)
    with pytest.raises(ValueError, match="variant"):
        LesionGuidance("2SEG", ngf=NGF)


def test_define_networks_holds_every_network_of_fig_1() -> None:
    nets = define_networks(CONFIG)
    assert set(nets) == {"EC_f", "DC_f", "MG", "D_f", "FD_f", "EC", "DC", "D", "FD", "EC_r", "lesion", "CL"}
    assert all(sum(p.numel() for p in net.parameters()) > 0 for net in nets.values())
    assert set(LESION_VARIANTS) == {"1SEG", "1EC+4DC", "4SEG"}
    assert len(define_lesion_guidance(NetworkConfig(ngf=NGF, lesion_variant="1SEG")).subnetworks()) == 1


def test_init_net_draws_normal_weights_and_zero_biases() -> None:
    conv, norm = nn.Conv2d(16, 64, 3), nn.InstanceNorm2d(64, affine=True)
    init_net(nn.Sequential(conv, norm), gain=0.02)
    assert abs(conv.weight.std().item() - 0.02) < 0.002
    assert conv.bias is not None and torch.equal(conv.bias, torch.zeros(64))
    assert abs(norm.weight.mean().item() - 1.0) < 0.01


@pytest.mark.parametrize(
    "kwargs", [{"ngf": 0}, {"dropout": 1.0}, {"lesion_variant": "2SEG"}, {"init_gain": 0.0}]
)
def test_network_config_rejects_bad_values(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        NetworkConfig(**kwargs)  # type: ignore[arg-type]


def test_fusion_map_is_the_hand_computed_weighted_sum() -> None:
    label = torch.tensor([[[0, 1], [2, 4]]])
    f = torch.tensor([[[[1.0, 0.0], [0.0, 1.0]]]])
    fused = fuse(f, label)
    assert fused.shape == (1, FUSION_CHANNELS, 2, 2)
    assert (FUSION_LABEL_WEIGHT, FUSION_STRUCTURE_WEIGHT) == (0.2, 0.8)
    # channel c = 0.2 * [label == LABELS[c]] + 0.8 * f, LABELS = (0, 1, 2, 4)
    expected = torch.tensor(
        [
            [[1.0, 0.0], [0.0, 0.8]],  # label 0 at (0, 0), where f = 1
            [[0.8, 0.2], [0.0, 0.8]],  # label 1 at (0, 1), where f = 0
            [[0.8, 0.0], [0.2, 0.8]],  # label 2 at (1, 0), where f = 0
            [[0.8, 0.0], [0.0, 1.0]],  # label 4 at (1, 1), where f = 1
        ]
    )
    torch.testing.assert_close(fused[0], expected)


def test_label_to_onehot_and_its_errors() -> None:
    onehot = label_to_onehot(torch.tensor([[[4, 0, 2, 1]]]))
    assert onehot[0, :, 0, :].tolist() == [[0, 1, 0, 0], [0, 0, 0, 1], [0, 0, 1, 0], [1, 0, 0, 0]]
    with pytest.raises(ValueError, match="label values"):
        label_to_onehot(torch.tensor([[[3, 0]]]))
    with pytest.raises(ValueError, match="f must be"):
        fuse(torch.zeros(1, 1, 2, 3), torch.zeros(1, 2, 2, dtype=torch.long))


def _export_cases() -> dict[str, tuple[nn.Module, tuple[torch.Tensor, ...]]]:
    code = torch.randn(2, C, 8, 8)
    return {
        "DC_f": (define_dc_f(CONFIG), (torch.randn(2, 4, 8, 8),)),
        "MG": (define_mg(CONFIG), (torch.rand(2, 1, 32, 32),)),
        "EC_r": (define_ec_r(CONFIG), (torch.rand(2, FUSION_CHANNELS, 32, 32),)),
        "DC": (define_dc(CONFIG), (code, condition_planes(1, code))),
        "SEG": (LesionGuidance("1EC+4DC", ngf=NGF).segmentor(2), (torch.randn(2, 1, 32, 32),)),
    }


@pytest.mark.parametrize("name", ["DC_f", "MG", "EC_r", "DC", "SEG"])
def test_onnx_export_with_dynamic_batch_matches_torch(name: str, tmp_path: Path) -> None:
    pytest.importorskip("onnx")
    pytest.importorskip("onnxscript")
    ort = pytest.importorskip("onnxruntime")
    net, example = _export_cases()[name]
    net.eval()
    input_names = [f"input{k}" for k in range(len(example))]
    batch = torch.export.Dim("batch", min=1, max=64)
    path = tmp_path / f"{name}.onnx"
    torch.onnx.export(
        net,
        example,
        path,
        input_names=input_names,
        dynamic_shapes=tuple({0: batch} for _ in example),
        external_data=False,
    )
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for b in (1, 3):
        inputs = tuple(torch.cat([t[:1]] * b) + 0.1 * torch.randn(b, *t.shape[1:]) for t in example)
        with torch.no_grad():
            expected = net(*inputs).numpy()
        got = session.run(None, {n: t.numpy() for n, t in zip(input_names, inputs, strict=True)})[0]
        assert got.shape == expected.shape
        assert abs(got - expected).max() < 1e-4


@pytest.mark.parametrize("stride", [4, 16])
def test_structure_code_stride_sets_the_code_grid(stride: int) -> None:
    config = NetworkConfig(ngf=4, structure_code_stride=stride, structure_code_channels=8)
    f = torch.rand(2, 1, 64, 64)
    mean, logvar = define_ec_f(config)(f)
    assert mean.shape == logvar.shape == (2, 8, 64 // stride, 64 // stride)
    assert define_dc_f(config)(mean).shape == (2, 1, 64, 64)
    assert define_fd_f(config)(mean).shape == (2, 1, 32 // stride, 32 // stride)


@pytest.mark.parametrize("stride", [2, 6, 12])
def test_structure_code_stride_must_be_a_power_of_two_from_4(stride: int) -> None:
    with pytest.raises(ValueError, match="structure_code_stride"):
        NetworkConfig(structure_code_stride=stride)
