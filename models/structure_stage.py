"""Stage 1, structural feature map generation training: Sec. 2.3, Fig. 2, losses (1)-(6).

Networks: EC_f and DC_f (a VAE whose code is pushed towards N(0, 1) by FD_f and loss (4)), MG (the
mask generator), D_f and FD_f (the critics). One step, as Fig. 2:

* forward: (code_f,mean, code_f,logvar) = EC_f(f); code_f = code_f,mean + exp(0.5 code_f,logvar) code_n;
  f_r = DC_f(code_f); mask_r = MG(f); code_f,g ~ N(0, 1); f_g = DC_f(code_f,g); mask_g = MG(f_g);
* update D: D_f and FD_f with (1) + (2) on detached fakes;
* freeze D, update G: EC_f, DC_f and MG with (3) + (4) + (5) + (6).

MG predicts our brain mask (1 inside); losses (5) and (6) take the paper's mask, ``1 - brain mask``.
"""

from typing import ClassVar

import torch
from torch import Tensor, nn

from models import losses
from models.networks import reparameterize
from models.presets import Preset
from models.stage import Stage, frozen


class StructureStage(Stage):
    """Structural feature map generation training (Fig. 2)."""

    name: ClassVar[str] = "structure"
    loss_names: ClassVar[tuple[str, ...]] = (
        "code_d_f",
        "d_f",
        "g_f",
        "normal",
        "reconstruction_f",
        "reconstruction_mask",
    )

    def __init__(self, networks: nn.ModuleDict, preset: Preset, device: torch.device) -> None:
        super().__init__(networks, preset, device)
        self.EC_f, self.DC_f, self.MG = networks["EC_f"], networks["DC_f"], networks["MG"]
        self.D_f, self.FD_f = networks["D_f"], networks["FD_f"]
        self.optimizers = {"G": self.adam(self.EC_f, self.DC_f, self.MG), "D": self.adam(self.D_f, self.FD_f)}

    def set_input(self, batch: dict[str, Tensor]) -> None:
        """Take f (B, 1, H, W) and the paper's mask ``1 - brain_mask`` (B, 1, H, W)."""
        self.f = batch["f"]
        self.background_mask = 1.0 - batch["brain_mask"]

    def forward(self) -> None:
        """Fig. 2: the VAE path f -> code_f -> f_r, the noise path code_f,g -> f_g, and MG on f and f_g."""
        self.code_f_mean, self.code_f_logvar = self.EC_f(self.f)
        self.code_f = reparameterize(self.code_f_mean, self.code_f_logvar)
        self.f_r = self.DC_f(self.code_f)
        self.background_mask_r = 1.0 - self.MG(self.f)
        self.code_f_g = torch.randn_like(self.code_f)
        self.f_g = self.DC_f(self.code_f_g)
        self.background_mask_g = 1.0 - self.MG(self.f_g)

    def loss_d(self) -> Tensor:
        """Weighted (1) for FD_f (code_f,g positive, code_f negative) + (2) for D_f (f positive, f_g
        negative), on detached generator outputs."""
        w = self.weights
        fd_code_f = self.FD_f(self.code_f.detach())
        self.losses["code_d_f"] = losses.loss_code_d_f(self.FD_f(self.code_f_g), fd_code_f)
        self.losses["d_f"] = losses.loss_d_f(self.D_f(self.f), self.D_f(self.f_g.detach()))
        return w.code_d_f * self.losses["code_d_f"] + w.d_f * self.losses["d_f"]

    def loss_g(self) -> Tensor:
        """Weighted (3) adversarial + (4) code distribution + (5) f and (6) mask reconstruction."""
        w = self.weights
        self.losses["g_f"] = losses.loss_g_f(self.FD_f(self.code_f), self.D_f(self.f_g))
        self.losses["normal"] = losses.loss_normal(self.code_f_mean, self.code_f_logvar)
        self.losses["reconstruction_f"] = losses.loss_reconstruction_f(self.f, self.f_r, self.background_mask)
        self.losses["reconstruction_mask"] = losses.loss_reconstruction_mask(
            self.background_mask, self.background_mask_r, self.f, self.f_r, self.f_g, self.background_mask_g
        )
        return (
            w.g_f * self.losses["g_f"]
            + w.normal * self.losses["normal"]
            + w.reconstruction_f * self.losses["reconstruction_f"]
            + w.reconstruction_mask * self.losses["reconstruction_mask"]
        )

    def optimize_parameters(self) -> None:
        """Forward, update D_f and FD_f, then (critics frozen) update EC_f, DC_f and MG."""
        with self.autocast():
            self.forward()
        self.step("D", self.loss_d)
        with frozen(self.D_f, self.FD_f):
            self.step("G", self.loss_g)
        self.losses = {name: value.detach() for name, value in self.losses.items()}
