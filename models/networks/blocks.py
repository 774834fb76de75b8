"""Building blocks shared by every network: conv units, encoder/decoder bodies, a U-Net, weight init.

Only ONNX-friendly ops are used (Conv2d, InstanceNorm2d, ReLU/LeakyReLU, nearest Upsample, cat,
Sigmoid/Softmax, Dropout which exports as identity in eval mode) and no forward depends on data, so
every network exports with ``torch.onnx.export`` and a dynamic batch axis.
"""

from typing import Literal, TypeVar

import torch
from torch import Tensor, nn

OutputActivation = Literal["linear", "sigmoid", "softmax"]
"""Last activation of a generator: linear (standardized MRI), sigmoid (maps in [0, 1]) or softmax
over the channel axis (label probabilities)."""

ModuleT = TypeVar("ModuleT", bound=nn.Module)


def conv_unit(in_channels: int, out_channels: int, stride: int = 1) -> nn.Sequential:
    """3x3 convolution, instance norm and ReLU; ``stride=2`` halves H and W (even sizes)."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=stride, padding=1),
        nn.InstanceNorm2d(out_channels, affine=True),
        nn.ReLU(inplace=True),
    )


def up_unit(in_channels: int, out_channels: int) -> nn.Sequential:
    """Nearest 2x upsampling then :func:`conv_unit` (no checkerboard, unlike ConvTranspose2d)."""
    return nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), conv_unit(in_channels, out_channels))


def output_activation(name: OutputActivation) -> nn.Module:
    """Module for an :data:`OutputActivation`; softmax is taken over the channel axis (dim 1)."""
    if name == "linear":
        return nn.Identity()
    if name == "sigmoid":
        return nn.Sigmoid()
    if name == "softmax":
        return nn.Softmax(dim=1)
    raise ValueError(f"output activation must be 'linear', 'sigmoid' or 'softmax', got {name!r}")


class ResidualBlock(nn.Module):
    """Two 3x3 conv + instance norm layers with an identity shortcut, (B, C, h, w) -> (B, C, h, w)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            conv_unit(channels, channels),
            nn.Conv2d(channels, channels, kernel_size=3, padding=1),
            nn.InstanceNorm2d(channels, affine=True),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


class Encoder(nn.Module):
    """Image to feature map at a quarter of the resolution, the body of EC, EC_r, EC_f and EC_l.

    Layers: input dropout, a 3x3 conv unit at full resolution, ``n_down`` stride-2 conv units
    (ngf -> 2 ngf -> 4 ngf, then 4 ngf), ``n_blocks`` residual blocks, a linear 3x3 conv to
    ``out_channels``.

    Args:
        in_channels: channels of the input image.
        out_channels: channels of the output feature map.
        ngf: base width (the authors used 64).
        dropout: dropout probability on the input layer (paper Sec. 3.4: 0.1).
        n_blocks: residual blocks at the lowest resolution, default 2.
        n_down: halvings of H and W, default 2 (a quarter of the resolution, as the paper's codes).

    Shapes:
        (B, in_channels, H, W) -> (B, out_channels, H/s, W/s), s = 2**n_down, H and W multiples of s.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        ngf: int,
        dropout: float,
        n_blocks: int = 2,
        n_down: int = 2,
    ) -> None:
        super().__init__()
        widths = [ngf * 2 ** min(level, 2) for level in range(n_down + 1)]
        self.net = nn.Sequential(
            nn.Dropout(dropout),
            conv_unit(in_channels, ngf),
            *[conv_unit(a, b, stride=2) for a, b in zip(widths, widths[1:], strict=False)],
            *[ResidualBlock(widths[-1]) for _ in range(n_blocks)],
            nn.Conv2d(widths[-1], out_channels, kernel_size=3, padding=1),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class Decoder(nn.Module):
    """Feature map at a quarter of the resolution back to an image, the body of DC, DC_f and DC_l,i.

    Layers: input dropout, a 3x3 conv unit to 4 ngf, ``n_blocks`` residual blocks, ``n_up`` nearest
    upsampling + conv units (4 ngf, then 4 ngf -> 2 ngf -> ngf), a 3x3 conv to ``out_channels``, the
    activation.

    Args:
        in_channels: channels of the input feature map.
        out_channels: channels of the output image.
        ngf: base width (the authors used 64).
        dropout: dropout probability on the input layer (paper Sec. 3.4: 0.1).
        activation: last activation, see :data:`OutputActivation`.
        n_blocks: residual blocks at the input resolution, default 2.
        n_up: doublings of H and W, default 2 (from the paper's quarter-resolution codes).

    Shapes:
        (B, in_channels, H/s, W/s) -> (B, out_channels, H, W), s = 2**n_up.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        ngf: int,
        dropout: float,
        activation: OutputActivation,
        n_blocks: int = 2,
        n_up: int = 2,
    ) -> None:
        super().__init__()
        widths = [ngf * 2 ** min(level, 2) for level in reversed(range(n_up + 1))]
        self.net = nn.Sequential(
            nn.Dropout(dropout),
            conv_unit(in_channels, widths[0]),
            *[ResidualBlock(widths[0]) for _ in range(n_blocks)],
            *[up_unit(a, b) for a, b in zip(widths, widths[1:], strict=False)],
            nn.Conv2d(ngf, out_channels, kernel_size=3, padding=1),
            output_activation(activation),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class UNet(nn.Module):
    """Small U-Net with three stride-2 levels, used by MG (Sec. 2.3) and the segmentors (Sec. 2.7).

    Widths ngf, 2 ngf, 4 ngf, 8 ngf from full to 1/8 resolution; nearest upsampling, skip concatenation.

    Args:
        in_channels: channels of the input image.
        out_channels: channels of the output map.
        ngf: base width (the authors used 64).
        dropout: dropout probability on the input layer (paper Sec. 3.4: 0.1).
        activation: last activation, see :data:`OutputActivation`.

    Shapes:
        (B, in_channels, H, W) -> (B, out_channels, H, W), H and W multiples of 8.
    """

    depth = 3

    def __init__(
        self, in_channels: int, out_channels: int, ngf: int, dropout: float, activation: OutputActivation
    ) -> None:
        super().__init__()
        widths = [ngf * 2**level for level in range(self.depth + 1)]
        self.stem = nn.Sequential(nn.Dropout(dropout), conv_unit(in_channels, ngf), conv_unit(ngf, ngf))
        self.down = nn.ModuleList(
            nn.Sequential(
                conv_unit(widths[k], widths[k + 1], stride=2), conv_unit(widths[k + 1], widths[k + 1])
            )
            for k in range(self.depth)
        )
        self.up = nn.ModuleList(up_unit(widths[k + 1], widths[k]) for k in reversed(range(self.depth)))
        self.merge = nn.ModuleList(conv_unit(2 * widths[k], widths[k]) for k in reversed(range(self.depth)))
        self.head = nn.Sequential(nn.Conv2d(ngf, out_channels, kernel_size=1), output_activation(activation))

    def forward(self, x: Tensor) -> Tensor:
        h = self.stem(x)
        skips = []
        for down in self.down:
            skips.append(h)
            h = down(h)
        for up, merge, skip in zip(self.up, self.merge, reversed(skips), strict=True):
            h = merge(torch.cat([up(h), skip], dim=1))
        return self.head(h)


def init_net(net: ModuleT, gain: float = 0.02) -> ModuleT:
    """Initialise weights in place as pix2pix's ``init_weights(init_type='normal')`` and return ``net``.

    Conv weights ~ N(0, gain^2), conv biases 0, norm scales ~ N(1, gain^2), norm shifts 0. Seed with
    ``torch.manual_seed`` beforehand for reproducible weights.

    Args:
        net: any module; every Conv2d and affine InstanceNorm2d in it is initialised.
        gain: standard deviation of the normal distributions, default 0.02.

    Returns:
        The same module.
    """
    if gain <= 0:
        raise ValueError(f"init gain must be > 0, got {gain}")
    for module in net.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.normal_(module.weight, 0.0, gain)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.InstanceNorm2d) and module.affine:
            nn.init.normal_(module.weight, 1.0, gain)
            nn.init.zeros_(module.bias)
    return net
