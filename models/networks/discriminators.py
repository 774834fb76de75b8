"""Discriminators: D_f and FD_f (Sec. 2.3), D and FD (Sec. 2.4-2.6), and the modality classifier CL.

All are least-squares PatchGAN critics: linear real/fake maps trained towards 1 (positive) and 0
(negative) by the losses of :mod:`models.losses`. Images go down by 8, codes by 2, so an image
discriminator and a code discriminator both answer on a (H/8, W/8) grid.
"""

from torch import Tensor, nn

from mrisynth.conventions import MODALITIES


def _down(in_channels: int, out_channels: int, norm: bool = True) -> nn.Sequential:
    """4x4 stride-2 conv, optional instance norm, LeakyReLU(0.2): halves H and W (even sizes)."""
    layers: list[nn.Module] = [nn.Conv2d(in_channels, out_channels, kernel_size=4, stride=2, padding=1)]
    if norm:
        layers.append(nn.InstanceNorm2d(out_channels, affine=True))
    layers.append(nn.LeakyReLU(0.2, inplace=True))
    return nn.Sequential(*layers)


def _patch_trunk(in_channels: int, ngf: int) -> nn.Sequential:
    """pix2pix-style trunk: three stride-2 layers (ngf, 2 ngf, 4 ngf) and a 3x3 layer, to H/8."""
    return nn.Sequential(
        _down(in_channels, ngf, norm=False),
        _down(ngf, 2 * ngf),
        _down(2 * ngf, 4 * ngf),
        nn.Conv2d(4 * ngf, 4 * ngf, kernel_size=3, padding=1),
        nn.InstanceNorm2d(4 * ngf, affine=True),
        nn.LeakyReLU(0.2, inplace=True),
    )


class PatchDiscriminator(nn.Module):
    """D_f, the structural feature map discriminator, Sec. 2.3: a PatchGAN on images.

    Args:
        in_channels: channels of the image, 1 for structural feature maps.
        ngf: base width (the authors used 64).

    Shapes:
        (B, in_channels, H, W) -> real/fake map (B, 1, H/8, W/8), H and W multiples of 8.
    """

    def __init__(self, in_channels: int, ngf: int) -> None:
        super().__init__()
        self.trunk = _patch_trunk(in_channels, ngf)
        self.head = nn.Conv2d(4 * ngf, 1, kernel_size=3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.trunk(x))


class ModalityDiscriminator(nn.Module):
    """D, the MRI discriminator with a real/fake head and a modality category head, Sec. 2.4.

    The category head gives, for every patch, softmax probabilities over the 4 modalities (channel
    order ``MODALITIES``); the losses compare them with the one-hot of the expected modality.

    Args:
        ngf: base width (the authors used 64).

    Shapes:
        x (B, 1, H, W) -> (d (B, 1, H/8, W/8), c (B, 4, H/8, W/8)), H and W multiples of 8.
    """

    def __init__(self, ngf: int) -> None:
        super().__init__()
        self.trunk = _patch_trunk(1, ngf)
        self.real_head = nn.Conv2d(4 * ngf, 1, kernel_size=3, padding=1)
        self.category_head = nn.Sequential(
            nn.Conv2d(4 * ngf, len(MODALITIES), kernel_size=3, padding=1), nn.Softmax(dim=1)
        )

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        h = self.trunk(x)
        return self.real_head(h), self.category_head(h)


class ModalityClassifier(nn.Module):
    """CL, a modality classifier of single MRI slices: a deviation from the paper (see models.presets).

    Trained on real slices with cross-entropy in the segmentation stage, then frozen: in the synthesis
    stage it tells DC "a realistic FLAIR where T1 was asked for", which D's category head, trained
    beside an unconditional real/fake head, could not (it stayed at chance on the printed objective).

    Args:
        ngf: base width (the authors used 64).

    Shapes:
        x (B, 1, H, W) -> modality logits (B, 4) in ``MODALITIES`` order, H and W multiples of 8.
    """

    def __init__(self, ngf: int) -> None:
        super().__init__()
        self.trunk = _patch_trunk(1, ngf)
        self.head = nn.Linear(4 * ngf, len(MODALITIES))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.trunk(x).mean(dim=(2, 3)))


class CodeDiscriminator(nn.Module):
    """FD_f (Sec. 2.3) and FD (Sec. 2.4), the code matrix distribution discriminators.

    Args:
        in_channels: channels of the codes, 4 for FD_f, C (the semantic width) for FD.
        ngf: base width (the authors used 64).

    Shapes:
        code (B, in_channels, h, w) -> real/fake map (B, 1, h/2, w/2), h and w even.
    """

    def __init__(self, in_channels: int, ngf: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(in_channels, 2 * ngf, kernel_size=3, padding=1),
            nn.LeakyReLU(0.2, inplace=True),
            _down(2 * ngf, 4 * ngf),
            nn.Conv2d(4 * ngf, 1, kernel_size=3, padding=1),
        )

    def forward(self, code: Tensor) -> Tensor:
        return self.net(code)
