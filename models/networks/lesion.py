"""Lesion label generation components, Sec. 2.7 and Fig. 6, in the paper's three variants."""

import torch
from torch import Tensor, nn

from models.networks.blocks import Decoder, Encoder, UNet
from mrisynth.conventions import LABELS, MODALITIES

LESION_VARIANTS: tuple[str, ...] = ("1SEG", "1EC+4DC", "4SEG")
"""Names of the variants of Sec. 2.7: one shared segmentor SEG; one lesion encoder EC_l with one
lesion decoder DC_l,i per modality; one segmentor SEG_i per modality (the best in Table 1)."""


def make_segmentor(ngf: int, dropout: float) -> UNet:
    """SEG, a complete segmentor: U-Net from one MRI (B, 1, H, W) to label probabilities (B, 4, H, W).

    The 4 output channels are softmax probabilities of the labels in ``LABELS`` order (0, 1, 2, 4).
    """
    return UNet(1, len(LABELS), ngf, dropout, activation="softmax")


class LesionGuidance(nn.Module):
    """The lesion label generation components of Sec. 2.7, one per modality, in any variant.

    ``1SEG`` holds 1 sub-network (SEG), ``1EC+4DC`` holds 5 (EC_l and DC_l,i for each modality i),
    ``4SEG`` holds 4 (SEG_i), all in the ``networks`` ModuleDict (see :meth:`subnetworks`).
    Whatever the variant, :meth:`segmentor` returns, for a modality, a standalone module
    (B, 1, H, W) -> (B, 4, H, W) that exports to ONNX on its own.

    Args:
        variant: one of :data:`LESION_VARIANTS`, default ``"4SEG"``.
        ngf: base width (the authors used 64).
        dropout: dropout probability on the input layer (paper Sec. 3.4: 0.1).

    Shapes:
        x (B, 4, H, W), modalities in ``MODALITIES`` order -> label probabilities (B, 4, 4, H, W)
        indexed [batch, modality, label class, y, x]; H and W multiples of 8.
    """

    def __init__(self, variant: str = "4SEG", ngf: int = 64, dropout: float = 0.1) -> None:
        super().__init__()
        if variant not in LESION_VARIANTS:
            raise ValueError(f"lesion guidance variant must be one of {LESION_VARIANTS}, got {variant!r}")
        self.variant = variant
        n = len(MODALITIES)
        per_modality: list[nn.Module]
        if variant == "1SEG":
            shared = make_segmentor(ngf, dropout)
            self.networks = nn.ModuleDict({"SEG": shared})
            per_modality = [shared] * n
        elif variant == "4SEG":
            segmentors = [make_segmentor(ngf, dropout) for _ in range(n)]
            self.networks = nn.ModuleDict(
                {f"SEG_{name}": seg for name, seg in zip(MODALITIES, segmentors, strict=True)}
            )
            per_modality = list(segmentors)
        else:
            encoder = Encoder(1, 4 * ngf, ngf, dropout)
            decoders = [Decoder(4 * ngf, len(LABELS), ngf, 0.0, activation="softmax") for _ in range(n)]
            self.networks = nn.ModuleDict(
                {
                    "EC_l": encoder,
                    **{f"DC_l_{name}": dc for name, dc in zip(MODALITIES, decoders, strict=True)},
                }
            )
            per_modality = [nn.Sequential(encoder, dc) for dc in decoders]
        self._per_modality = tuple(per_modality)

    def segmentor(self, modality: int) -> nn.Module:
        """The segmentor of a modality, (B, 1, H, W) -> (B, 4, H, W); shares weights with this module.

        Args:
            modality: index into ``MODALITIES``.
        """
        if not 0 <= modality < len(MODALITIES):
            raise ValueError(f"modality must be in [0, {len(MODALITIES)}), got {modality}")
        return self._per_modality[modality]

    def subnetworks(self) -> dict[str, nn.Module]:
        """Sub-networks by name: SEG (1SEG); EC_l, DC_l_<modality> (1EC+4DC); SEG_<modality> (4SEG)."""
        return dict(self.networks.items())

    def segment(self, x: Tensor, modality: int) -> Tensor:
        """Label probabilities of one MRI: x (B, 1, H, W) of the given modality -> (B, 4, H, W)."""
        return self.segmentor(modality)(x)

    def forward(self, x: Tensor) -> Tensor:
        return torch.stack([seg(x[:, i : i + 1]) for i, seg in enumerate(self._per_modality)], dim=1)
