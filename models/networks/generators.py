"""Generator-side networks with more than a body: EC_f (VAE encoder, Sec. 2.3) and DC (Sec. 2.4).

The plain ones come straight from :mod:`models.networks.blocks`: EC and EC_r are an
:class:`~models.networks.blocks.Encoder`, DC_f a sigmoid :class:`~models.networks.blocks.Decoder`,
MG a sigmoid :class:`~models.networks.blocks.UNet` (see :mod:`models.networks.factory`).
"""

import torch
from torch import Tensor, nn

from models.networks.blocks import Encoder
from mrisynth.conventions import MODALITIES


class StructureEncoder(nn.Module):
    """EC_f, the VAE encoder of structural feature maps, Sec. 2.3 and Fig. 2.

    An :class:`~models.networks.blocks.Encoder` with ``2 * code_channels`` outputs split into the
    mean and the log-variance of the code.

    Args:
        ngf: base width (the authors used 64).
        dropout: dropout probability on the input layer (paper Sec. 3.4: 0.1).
        code_channels: channels of the code, default 4 (the authors' code is [H/4, W/4, 4]).
        n_down: halvings from f to the code, default 2 (H/4, as the authors').

    Shapes:
        f (B, 1, H, W) -> (code_f_mean, code_f_logvar), each (B, code_channels, H/s, W/s), s = 2**n_down.
    """

    def __init__(self, ngf: int, dropout: float, code_channels: int = 4, n_down: int = 2) -> None:
        super().__init__()
        self.code_channels = code_channels
        self.encoder = Encoder(1, 2 * code_channels, ngf, dropout, n_down=n_down)

    def forward(self, f: Tensor) -> tuple[Tensor, Tensor]:
        h = self.encoder(f)
        return h[:, : self.code_channels], h[:, self.code_channels :]


def reparameterize(code_mean: Tensor, code_logvar: Tensor, code_n: Tensor | None = None) -> Tensor:
    """code_f = code_f_mean + exp(0.5 * code_f_logvar) * code_n, Sec. 2.3.

    Args:
        code_mean: code_f_mean, (B, C, h, w).
        code_logvar: code_f_logvar, same shape.
        code_n: noise drawn from N(0, 1), same shape; drawn with ``torch.randn_like`` when None.

    Returns:
        code_f, same shape as ``code_mean``.
    """
    if code_n is None:
        code_n = torch.randn_like(code_mean)
    return code_mean + torch.exp(0.5 * code_logvar) * code_n


def condition_planes(modality: int, like: Tensor) -> Tensor:
    """One-hot conditional matrix of a modality for DC, Sec. 2.4: (B, 4, h, w) constant planes.

    Args:
        modality: index into ``MODALITIES`` (0 t1, 1 t1ce, 2 t2, 3 flair).
        like: a semantic feature map (B, C, h, w) whose batch size, size, dtype and device are copied.

    Returns:
        (B, 4, h, w) tensor, 1 in channel ``modality`` and 0 elsewhere.
    """
    if not 0 <= modality < len(MODALITIES):
        raise ValueError(f"modality must be in [0, {len(MODALITIES)}), got {modality}")
    b, _, h, w = like.shape
    planes = like.new_zeros((b, len(MODALITIES), h, w))
    planes[:, modality] = 1.0
    return planes


class ModalityNorm(nn.Module):
    """Instance norm whose scale and shift come from the modality (conditional instance norm, FiLM).

    ``IN(h) * (1 + gamma(m)) + beta(m)``, gamma and beta linear in the one-hot modality m. A plain affine
    instance norm after the condition would let DC forget it; this one re-applies it at every layer.

    Args:
        channels: channels of the feature map.

    Shapes:
        h (B, channels, h, w), m (B, 4) -> (B, channels, h, w).
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = nn.InstanceNorm2d(channels, affine=False)
        self.scale = nn.Linear(len(MODALITIES), channels)
        self.shift = nn.Linear(len(MODALITIES), channels)
        for linear in (self.scale, self.shift):
            nn.init.zeros_(linear.weight)
            nn.init.zeros_(linear.bias)

    def forward(self, h: Tensor, m: Tensor) -> Tensor:
        return self.norm(h) * (1 + self.scale(m)[:, :, None, None]) + self.shift(m)[:, :, None, None]


class ConditionalUnit(nn.Module):
    """Optional nearest 2x upsampling, 3x3 conv, :class:`ModalityNorm`, ReLU.

    Shapes:
        h (B, in_channels, h, w), m (B, 4) -> (B, out_channels, h, w), or (2h, 2w) with ``upsample``.
    """

    def __init__(self, in_channels: int, out_channels: int, upsample: bool = False) -> None:
        super().__init__()
        self.up = nn.Upsample(scale_factor=2, mode="nearest") if upsample else nn.Identity()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1)
        self.norm = ModalityNorm(out_channels)

    def forward(self, h: Tensor, m: Tensor) -> Tensor:
        return torch.relu(self.norm(self.conv(self.up(h)), m))


class ConditionalResidualBlock(nn.Module):
    """Two 3x3 conv + :class:`ModalityNorm` layers with an identity shortcut, (B, C, h, w), m -> same."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.first = ConditionalUnit(channels, channels)
        self.conv = nn.Conv2d(channels, channels, kernel_size=3, padding=1)
        self.norm = ModalityNorm(channels)

    def forward(self, h: Tensor, m: Tensor) -> Tensor:
        return h + self.norm(self.conv(self.first(h, m)), m)


class ModalityDecoder(nn.Module):
    """DC, the MRI decoder conditioned on a one-hot modality matrix, Sec. 2.4 and Fig. 3.

    The paper concatenates the condition to the code. Constant condition planes through a convolution
    are a constant per channel, which an instance norm right after it subtracts, so the concatenation
    first goes through a 3x3 convolution and a ReLU *without* normalization (the condition becomes a
    bias that gates features). That alone was not enough (issue 12: an all-zero condition moved the
    output as much as switching modality), so every later normalization is a :class:`ModalityNorm`
    whose scale and shift come from the modality, read off the planes as their spatial mean: the
    interface (code, planes) of the paper and of the exported ``DC.onnx`` is unchanged. Dropout is
    applied to the semantic feature map only, so the condition is never scaled. The output is linear
    because the MRI are per-image standardized (Sec. 3.1). Body: as
    :class:`~models.networks.blocks.Decoder` (a unit to 4 ngf, 2 residual blocks, 2 upsampling units
    4 ngf -> 2 ngf -> ngf, a 3x3 conv to 1 channel).

    Args:
        code_channels: channels C of the semantic feature map (that of EC and EC_r).
        ngf: base width (the authors used 64).
        dropout: dropout probability on the input layer (paper Sec. 3.4: 0.1).

    Shapes:
        code (B, C, H/4, W/4) and condition (B, 4, H/4, W/4) (see :func:`condition_planes`)
        -> x (B, 1, H, W).
    """

    def __init__(self, code_channels: int, ngf: int, dropout: float) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        in_channels = code_channels + len(MODALITIES)
        self.condition = nn.Sequential(
            nn.Conv2d(in_channels, 4 * ngf, kernel_size=3, padding=1), nn.ReLU(inplace=True)
        )
        self.layers = nn.ModuleList(
            [
                ConditionalUnit(4 * ngf, 4 * ngf),
                ConditionalResidualBlock(4 * ngf),
                ConditionalResidualBlock(4 * ngf),
                ConditionalUnit(4 * ngf, 2 * ngf, upsample=True),
                ConditionalUnit(2 * ngf, ngf, upsample=True),
            ]
        )
        self.out = nn.Conv2d(ngf, 1, kernel_size=3, padding=1)

    def forward(self, code: Tensor, condition: Tensor) -> Tensor:
        m = condition.mean(dim=(2, 3))
        h = self.condition(torch.cat([self.dropout(code), condition], dim=1))
        for layer in self.layers:
            h = layer(h, m)
        return self.out(h)
