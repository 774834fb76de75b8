"""The networks of Qu et al., Sec. 2.3-2.7, built by the factories of :mod:`models.networks.factory`."""

from models.networks.blocks import Decoder, Encoder, UNet, init_net
from models.networks.discriminators import (
    CodeDiscriminator,
    ModalityClassifier,
    ModalityDiscriminator,
    PatchDiscriminator,
)
from models.networks.factory import (
    NetworkConfig,
    define_cl,
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
)
from models.networks.generators import ModalityDecoder, StructureEncoder, condition_planes, reparameterize
from models.networks.lesion import LESION_VARIANTS, LesionGuidance, make_segmentor

__all__ = [
    "LESION_VARIANTS",
    "CodeDiscriminator",
    "Decoder",
    "Encoder",
    "LesionGuidance",
    "ModalityClassifier",
    "ModalityDecoder",
    "ModalityDiscriminator",
    "NetworkConfig",
    "PatchDiscriminator",
    "StructureEncoder",
    "UNet",
    "condition_planes",
    "define_cl",
    "define_d",
    "define_d_f",
    "define_dc",
    "define_dc_f",
    "define_ec",
    "define_ec_f",
    "define_ec_r",
    "define_fd",
    "define_fd_f",
    "define_lesion_guidance",
    "define_mg",
    "define_networks",
    "init_net",
    "make_segmentor",
    "reparameterize",
]
