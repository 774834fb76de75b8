"""Factories of every network of the paper, one weight init for all (pix2pix's ``define_G`` style).

Each ``define_*`` builds the network from a :class:`NetworkConfig` and initialises it with
:func:`~models.networks.blocks.init_net`. Image sizes must be multiples of 8 (240 in production).
"""

from dataclasses import dataclass

from torch import nn

from models.fusion import FUSION_CHANNELS
from models.networks.blocks import Decoder, Encoder, UNet, init_net
from models.networks.discriminators import (
    CodeDiscriminator,
    ModalityClassifier,
    ModalityDiscriminator,
    PatchDiscriminator,
)
from models.networks.generators import ModalityDecoder, StructureEncoder
from models.networks.lesion import LESION_VARIANTS, LesionGuidance


@dataclass(frozen=True)
class NetworkConfig:
    """Sizes shared by all networks.

    Attributes:
        ngf: base width of every network, > 0 (the authors used 64; tests use 8).
        dropout: dropout probability on the input layer of generators and encoders, in [0, 1)
            (paper Sec. 3.4: 0.1). Discriminators have none.
        semantic_channels: channels C of the semantic feature maps of EC and EC_r (input of DC and
            FD); 0 means 4 * ngf.
        structure_code_channels: channels of the structural code of EC_f / DC_f / FD_f, default 4
            (the authors' code is [H/4, W/4, 4]).
        structure_code_stride: how much smaller the structural code is than f, a power of 2 >= 4;
            default 4 (the authors' H/4). A coarser code (16) lets DC_f see the whole brain from every
            code pixel, so short trainings still draw closed brain outlines from noise. Images must
            be multiples of 2 * stride (FD_f halves the code once).
        lesion_variant: one of ``LESION_VARIANTS``, default ``"4SEG"`` (Sec. 2.7).
        init_gain: standard deviation of the normal weight init, > 0, default 0.02.
    """

    ngf: int = 64
    dropout: float = 0.1
    semantic_channels: int = 0
    structure_code_channels: int = 4
    structure_code_stride: int = 4
    lesion_variant: str = "4SEG"
    init_gain: float = 0.02

    def __post_init__(self) -> None:
        if self.ngf <= 0:
            raise ValueError(f"ngf must be > 0, got {self.ngf}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.semantic_channels < 0 or self.structure_code_channels <= 0:
            raise ValueError("semantic_channels must be >= 0 (0: 4 * ngf) and structure_code_channels > 0")
        if self.structure_code_stride < 4 or self.structure_code_stride & (self.structure_code_stride - 1):
            raise ValueError(
                f"structure_code_stride must be a power of 2 >= 4, got {self.structure_code_stride}"
            )
        if self.lesion_variant not in LESION_VARIANTS:
            raise ValueError(f"lesion_variant must be one of {LESION_VARIANTS}, got {self.lesion_variant!r}")
        if self.init_gain <= 0:
            raise ValueError(f"init_gain must be > 0, got {self.init_gain}")

    @property
    def structure_code_halvings(self) -> int:
        """log2 of ``structure_code_stride``: stride-2 layers of EC_f, upsamplings of DC_f."""
        return self.structure_code_stride.bit_length() - 1

    @property
    def code_channels(self) -> int:
        """C, channels of the semantic feature maps (``semantic_channels`` or 4 * ngf)."""
        return self.semantic_channels or 4 * self.ngf


def define_ec_f(config: NetworkConfig) -> StructureEncoder:
    """EC_f, Sec. 2.3: f (B, 1, H, W) -> (code_f_mean, code_f_logvar), each (B, 4, H/s, W/s).

    s is ``config.structure_code_stride`` (4 as the authors'), 4 the ``structure_code_channels``.
    """
    net = StructureEncoder(
        config.ngf, config.dropout, config.structure_code_channels, config.structure_code_halvings
    )
    return init_net(net, config.init_gain)


def define_dc_f(config: NetworkConfig) -> Decoder:
    """DC_f, Sec. 2.3: code (B, 4, H/s, W/s) -> structural feature map f in [0, 1], (B, 1, H, W)."""
    net = Decoder(
        config.structure_code_channels,
        1,
        config.ngf,
        config.dropout,
        activation="sigmoid",
        n_up=config.structure_code_halvings,
    )
    return init_net(net, config.init_gain)


def define_mg(config: NetworkConfig) -> UNet:
    """MG, the mask generator, Sec. 2.3: f (B, 1, H, W) -> brain mask in [0, 1], (B, 1, H, W).

    MG is meant to predict the brain mask of our convention (1 inside the brain); the paper's mask
    (1 outside) is then ``1 - MG(f)``, which is what :func:`models.losses.loss_reconstruction_mask`
    takes.
    """
    return init_net(UNet(1, 1, config.ngf, config.dropout, activation="sigmoid"), config.init_gain)


def define_d_f(config: NetworkConfig) -> PatchDiscriminator:
    """D_f, Sec. 2.3: f (B, 1, H, W) -> real/fake map (B, 1, H/8, W/8)."""
    return init_net(PatchDiscriminator(1, config.ngf), config.init_gain)


def define_fd_f(config: NetworkConfig) -> CodeDiscriminator:
    """FD_f, Sec. 2.3: code (B, 4, H/4, W/4) -> real/fake map (B, 1, H/8, W/8)."""
    return init_net(CodeDiscriminator(config.structure_code_channels, config.ngf), config.init_gain)


def define_ec(config: NetworkConfig) -> Encoder:
    """EC, the MRI encoder, Sec. 2.4: x (B, 1, H, W) -> semantic feature map (B, C, H/4, W/4)."""
    return init_net(Encoder(1, config.code_channels, config.ngf, config.dropout), config.init_gain)


def define_dc(config: NetworkConfig) -> ModalityDecoder:
    """DC, the MRI decoder, Sec. 2.4: code (B, C, H/4, W/4), condition (B, 4, H/4, W/4) -> x (B, 1, H, W)."""
    return init_net(ModalityDecoder(config.code_channels, config.ngf, config.dropout), config.init_gain)


def define_d(config: NetworkConfig) -> ModalityDiscriminator:
    """D, Sec. 2.4: x (B, 1, H, W) -> (d (B, 1, H/8, W/8), c (B, 4, H/8, W/8) modality probabilities)."""
    return init_net(ModalityDiscriminator(config.ngf), config.init_gain)


def define_cl(config: NetworkConfig) -> ModalityClassifier:
    """CL, the modality classifier (a deviation, :mod:`models.presets`): x (B, 1, H, W) -> logits (B, 4)."""
    return init_net(ModalityClassifier(config.ngf), config.init_gain)


def define_fd(config: NetworkConfig) -> CodeDiscriminator:
    """FD, Sec. 2.4: semantic feature map (B, C, H/4, W/4) -> real/fake map (B, 1, H/8, W/8)."""
    return init_net(CodeDiscriminator(config.code_channels, config.ngf), config.init_gain)


def define_ec_r(config: NetworkConfig) -> Encoder:
    """EC_r, the fusion map encoder, Sec. 2.6: fusion map (B, 4, H, W) -> (B, C, H/4, W/4), as EC.

    The fusion map is :func:`models.fusion.fuse` of a structural feature map and a lesion label.
    """
    return init_net(
        Encoder(FUSION_CHANNELS, config.code_channels, config.ngf, config.dropout), config.init_gain
    )


def define_lesion_guidance(config: NetworkConfig) -> LesionGuidance:
    """Lesion label generation components, Sec. 2.7, variant ``config.lesion_variant``."""
    return init_net(LesionGuidance(config.lesion_variant, config.ngf, config.dropout), config.init_gain)


def define_networks(config: NetworkConfig) -> nn.ModuleDict:
    """Every network of Fig. 1 keyed by its paper name.

    Keys: ``EC_f``, ``DC_f``, ``MG``, ``D_f``, ``FD_f`` (Sec. 2.3); ``EC``, ``DC``, ``D``, ``FD``
    (Sec. 2.4); ``EC_r`` (Sec. 2.6); ``lesion`` (Sec. 2.7, a :class:`LesionGuidance`); ``CL``, the
    modality classifier of the registered objective (:mod:`models.presets`).
    """
    return nn.ModuleDict(
        {
            "EC_f": define_ec_f(config),
            "DC_f": define_dc_f(config),
            "MG": define_mg(config),
            "D_f": define_d_f(config),
            "FD_f": define_fd_f(config),
            "EC": define_ec(config),
            "DC": define_dc(config),
            "D": define_d(config),
            "FD": define_fd(config),
            "EC_r": define_ec_r(config),
            "lesion": define_lesion_guidance(config),
            "CL": define_cl(config),
        }
    )
