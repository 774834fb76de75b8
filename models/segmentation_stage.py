"""Stage 2 of training: the standalone lesion segmentors of Sec. 2.7, trained on real data with loss (19).

They are the lesion guidance components of the synthesis stage that follows, pre-trained here: in
that stage they go on learning from real data only, by (12), and from its first step they guide the
generator through (16) with segmentations worth following (untrained, they find no lesion, and (16)
then teaches the generator nothing about lesions). After the synthesis stage they are the
segmentors of the Dice filter of Sec. 2.8 (``SEG_<modality>`` in docs/artifacts.md), "pre-trained on
real data", so the filter judges synthetic lesions with the segmentors the generator was guided by.
One step: label_r,i = SEG_i(x_i) for every modality i, loss (19) against the one-hot real label, one
Adam step. There is no critic, so there is no D update.
"""

from typing import ClassVar, cast

import torch
from torch import Tensor, nn

from models import losses
from models.fusion import label_to_onehot
from models.networks import LesionGuidance
from models.presets import Preset
from models.stage import Stage
from mrisynth.conventions import MODALITIES


class SegmentationStage(Stage):
    """Standalone segmentor training on real MRI (Sec. 2.7, Fig. 6)."""

    name: ClassVar[str] = "segmentation"
    loss_names: ClassVar[tuple[str, ...]] = ("segmentation",)

    def __init__(self, networks: nn.ModuleDict, preset: Preset, device: torch.device) -> None:
        super().__init__(networks, preset, device)
        self.lesion = cast(LesionGuidance, networks["lesion"])
        self.optimizers = {"SEG": self.adam(self.lesion)}

    def set_input(self, batch: dict[str, Tensor]) -> None:
        """Take x_i (B, 1, H, W) per modality and the one-hot real label (B, 4, H, W)."""
        self.x = list(batch["x"].split(1, dim=1))
        self.label = label_to_onehot(batch["label_x"])

    def forward(self) -> None:
        """label_r,i = SEG_i(x_i), (B, 4, H, W) probabilities per modality."""
        self.label_r = [self.lesion.segment(x, i) for i, x in enumerate(self.x)]

    def loss_segmentation(self) -> Tensor:
        """Weighted (19)."""
        label = [self.label] * len(MODALITIES)
        self.losses["segmentation"] = losses.loss_segmentation(label, self.label_r)
        return self.weights.segmentation * self.losses["segmentation"]

    def optimize_parameters(self) -> None:
        """Forward and one update of the segmentors."""
        self.optimizers["SEG"].zero_grad(set_to_none=True)
        with self.autocast():
            self.forward()
            total = self.loss_segmentation()
        total.backward()
        self.optimizers["SEG"].step()
        self.losses = {name: value.detach() for name, value in self.losses.items()}
