"""Stage 2 of training: the standalone lesion segmentors of Sec. 2.7, trained on real data with loss (19).

They are the lesion guidance components of the synthesis stage that follows, pre-trained here: in
that stage they go on learning from real data only, by (12), and from its first step they guide the
generator through (16) with segmentations worth following (untrained, they find no lesion, and (16)
then teaches the generator nothing about lesions). After the synthesis stage they are the
segmentors of the Dice filter of Sec. 2.8 (``SEG_<modality>`` in docs/artifacts.md), "pre-trained on
real data", so the filter judges synthetic lesions with the segmentors the generator was guided by.
One step: label_r,i = SEG_i(x_i) for every modality i, loss (19) against the one-hot real label (or
(L), soft Dice + cross-entropy, with ``Preset.lesion_loss = "dice_ce"``), one Adam step. There is no
critic, so there is no D update.

The same step trains CL, the modality classifier of the registered objective, on the real slices with
(K) (:mod:`models.registered_losses`); the synthesis stage then uses it frozen, for its category
guidance (C) and the ``cl_accuracy`` alarm. Without a ``CL`` in the networks (the evaluation's Table 2
segmentors) only the segmentors train.
"""

from typing import ClassVar, cast

import torch
from torch import Tensor, nn

from models import registered_losses as registered
from models.fusion import label_to_onehot
from models.networks import LesionGuidance
from models.presets import Preset
from models.stage import Stage
from mrisynth.conventions import MODALITIES


class SegmentationStage(Stage):
    """Standalone segmentor training on real MRI (Sec. 2.7, Fig. 6)."""

    name: ClassVar[str] = "segmentation"
    loss_names: ClassVar[tuple[str, ...]] = ("segmentation", "classifier")

    def __init__(self, networks: nn.ModuleDict, preset: Preset, device: torch.device) -> None:
        super().__init__(networks, preset, device)
        self.lesion = cast(LesionGuidance, networks["lesion"])
        self.CL: nn.Module | None = dict(networks.items()).get("CL")
        networks_trained = [self.lesion, *([] if self.CL is None else [self.CL])]
        self.optimizers = {
            "SEG": self.adam(*networks_trained, lr=preset.segmentation_lr, beta1=preset.segmentation_beta1)
        }

    def set_input(self, batch: dict[str, Tensor]) -> None:
        """Take x_i (B, 1, H, W) per modality and the one-hot real label (B, 4, H, W)."""
        self.x = list(batch["x"].split(1, dim=1))
        self.label = label_to_onehot(batch["label_x"])

    def forward(self) -> None:
        """label_r,i = SEG_i(x_i), (B, 4, H, W) probabilities, and CL(x_i), (B, 4) logits, per modality."""
        self.label_r = [self.lesion.segment(x, i) for i, x in enumerate(self.x)]
        if self.CL is not None:
            self.logits = list(self.CL(torch.cat(self.x)).split(self.x[0].shape[0]))

    def loss_segmentation(self) -> Tensor:
        """Weighted (19) (or (L)) and (K)."""
        label = [self.label] * len(MODALITIES)
        self.losses["segmentation"] = registered.loss_lesion(self.preset.lesion_loss, label, self.label_r)
        if self.CL is None:
            self.losses["classifier"] = torch.zeros((), device=self.x[0].device)
            return self.weights.segmentation * self.losses["segmentation"]
        self.losses["classifier"] = registered.loss_classifier(self.logits)
        w = self.weights
        return w.segmentation * self.losses["segmentation"] + w.classifier * self.losses["classifier"]

    def optimize_parameters(self) -> None:
        """Forward and one update of the segmentors."""
        self.optimizers["SEG"].zero_grad(set_to_none=True)
        with self.autocast():
            self.forward()
            total = self.loss_segmentation()
        total.backward()
        self.optimizers["SEG"].step()
        self.losses = {name: value.detach() for name, value in self.losses.items()}
