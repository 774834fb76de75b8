"""Stage 3 of training: reconstruction and translation (Sec. 2.4, Fig. 3) trained jointly with multimodal MRI
synthesis (Sec. 2.5-2.6, Fig. 4), the critics updated on their own (Fig. 5); losses (7)-(18).

Networks: EC, DC (shared by both halves), EC_r, the lesion guidance components of Sec. 2.7 (variant
``NetworkConfig.lesion_variant``), and the critics D and FD. One step:

* forward, Fig. 3 (real x_i): code_i = EC(x_i); x_r,i = DC(code_i, i); x_t,j,i = DC(code_j, i);
  code_t,j,i = EC(x_t,j,i); x_cr,j,i = DC(code_t,i,j, i) (x_i to modality j and back);
  label_r,i = SEG_i(x_i);
* forward, Fig. 4: code_g = EC_r(fusion(f, label)); x_g,i = DC(code_g, i); code_g,i = EC(x_g,i);
  x_gt,j,i = DC(code_g,j, i); label_g,i = SEG_i(x_g,i) with the segmentors frozen ("no learning"
  in generation, Sec. 2.7); f_g,i = the differentiable Algorithm 1 of x_g,i (models.soft_structure);
* update D (Fig. 5): D and FD with (7) + (13) on detached fakes;
* freeze D and FD, update G: EC, DC, EC_r with (8)-(11), (14)-(18), the segmentors (pre-trained by
  :mod:`models.segmentation_stage`) with (12) only (real data only, Sec. 2.6).

The registered objective (``Preset.registered``, the default; :mod:`models.registered_losses`) adds,
in the G update, (T) on the translations of the drawn pairs, (S) on the first
``round(B * paired_fraction)`` samples of the batch, which are fused with a label whose images are known
instead of one of the lesion library (``Preset.paired_lesion``: "own", the slice's own label, the
default; or "pasted", a library lesion with its four images pasted into the slice, :mod:`models.data`)
and whose x_g,i must be those images, (R) on the real codes and (C) through the frozen classifier CL
(pre-trained by :mod:`models.segmentation_stage`), and masks (15) at the fused
lesion. It also keeps the segmentors frozen, as the authors' later code: they guide (16) as trained on
real data by the segmentation stage, and (12) is not computed (a fifth of a step's cost on the demo).
``Preset.lesion_loss`` picks (L) or the printed MSE for (12) and (16). Every step also logs the
collapse alarms of :mod:`models.alarms`.

Pair sampling: the sums over ordered modality pairs (j, i) in (7), (8), (10), (11), (17), (18) run
over ``preset.pairs_per_step`` pairs drawn uniformly without replacement each step
(:func:`models.losses.sample_pairs`, scaled by 12 / #pairs, so unbiased; see that module for the
second sum of (10)). Only the images the drawn pairs need are computed: x_t for the pairs and their
reverses (for x_cr), x_cr and x_gt for the pairs. With 4 pairs a step runs about 12 EC and 16 DC
passes instead of 20 and 44 with all 12, and the D passes drop from 20 to 12. Every network call
batches its inputs across modalities and pairs (instance norm is per sample, so this is exact).
"""

from typing import ClassVar, cast

import torch
from torch import Tensor, nn

from models import losses
from models import registered_losses as registered
from models.alarms import ALARM_NAMES, collapse_alarms
from models.fusion import fuse, label_to_onehot
from models.losses import ALL_PAIRS, Pair
from models.networks import LesionGuidance, condition_planes
from models.presets import Preset
from models.soft_structure import soft_structural_feature_map
from models.stage import Stage, frozen
from mrisynth.conventions import MODALITIES

N = len(MODALITIES)

PAIRED_KEYS: dict[str, tuple[str, str, str]] = {
    "pasted": ("x_paste", "label_paste", "f_paste"),
    "own": ("x", "label_x", "f"),
}
"""The batch keys (images, label, f) of (S)'s paired samples, by ``Preset.paired_lesion``."""


class SynthesisStage(Stage):
    """Joint reconstruction/translation and multimodal synthesis training (Figs. 3, 4 and 5)."""

    name: ClassVar[str] = "synthesis"
    loss_names: ClassVar[tuple[str, ...]] = (
        "d_1",
        "d_2",
        "g_1",
        "reconstruction",
        "cycle",
        "code_1",
        "lesion_1",
        "g_2",
        "f",
        "lesion_2",
        "registration",
        "code_2",
        "translation_pair",
        "synthesis_pair",
        "code_registered",
        "category",
        *ALARM_NAMES,
    )

    def __init__(self, networks: nn.ModuleDict, preset: Preset, device: torch.device) -> None:
        super().__init__(networks, preset, device)
        self.EC, self.DC, self.EC_r = networks["EC"], networks["DC"], networks["EC_r"]
        self.D, self.FD, self.CL = networks["D"], networks["FD"], networks["CL"]
        self.lesion = cast(LesionGuidance, networks["lesion"])
        self.optimizers = {
            "G": self.adam(self.EC, self.DC, self.EC_r, *([] if preset.registered else [self.lesion])),
            "D": self.adam(self.D, self.FD),
        }

    def set_input(self, batch: dict[str, Tensor]) -> None:
        """Take x_i (B, 1, H, W) per modality, its one-hot label, the brain mask, and the f and label to
        fuse: for the first ``n_paired`` samples (registered objective only) the pasted sample's (or the
        slice's own, ``Preset.paired_lesion``), whose images are the targets of (S), ``x_paired``."""
        self.x = list(batch["x"].split(1, dim=1))
        self.label_x = label_to_onehot(batch["label_x"])
        self.brain = batch["brain_mask"]
        batch_size = self.brain.shape[0]
        p = self.n_paired = round(batch_size * self.preset.paired_fraction) if self.preset.registered else 0
        x_key, label_key, f_key = PAIRED_KEYS[self.preset.paired_lesion]
        self.x_paired = list(batch[x_key][:p].split(1, dim=1))
        label = torch.cat([batch[label_key][:p], batch["label"][p:]])
        self.f = torch.cat([batch[f_key][:p], batch["f"][p:]])
        self.label = label_to_onehot(label)
        self.lesion_mask = (label > 0).unsqueeze(1).to(self.f.dtype)
        self.fusion = fuse(self.f, label)

    def encode(self, images: list[Tensor]) -> list[Tensor]:
        """EC on a list of (B, 1, H, W) images in one batched call -> list of (B, C, H/4, W/4)."""
        return list(self.EC(torch.cat(images)).split(images[0].shape[0]))

    def decode(self, codes: list[Tensor], modalities: list[int]) -> list[Tensor]:
        """DC(code_k, onehot of modalities[k]) for every k, in one batched call -> list of (B, 1, H, W)."""
        condition = torch.cat([condition_planes(m, c) for c, m in zip(codes, modalities, strict=True)])
        return list(self.DC(torch.cat(codes), condition).split(codes[0].shape[0]))

    def discriminate(self, images: list[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
        """D on a list of images in one call -> (real/fake maps, category maps), one per image."""
        d, c = self.D(torch.cat(images))
        size = images[0].shape[0]
        return list(d.split(size)), list(c.split(size))

    def forward(self) -> None:
        """Figs. 3 and 4 for the pairs of this step (drawn here)."""
        n = self.preset.pairs_per_step
        self.pairs: list[Pair] = list(ALL_PAIRS) if n == len(ALL_PAIRS) else losses.sample_pairs(n)
        self.forward_translation()
        self.forward_synthesis()

    def forward_translation(self) -> None:
        """Fig. 3: reconstruction, translation and cycle-reconstruction of real MRI, label_r,i."""
        self.code = self.encode(self.x)
        self.x_r = self.decode(self.code, list(range(N)))
        needed = sorted(set(self.pairs) | {(i, j) for j, i in self.pairs})
        translated = self.decode([self.code[j] for j, _ in needed], [i for _, i in needed])
        self.x_t = dict(zip(needed, translated, strict=True))
        self.code_t = dict(zip(needed, self.encode([self.x_t[p] for p in needed]), strict=True))
        cycled = self.decode([self.code_t[(i, j)] for j, i in self.pairs], [i for _, i in self.pairs])
        self.x_cr = dict(zip(self.pairs, cycled, strict=True))
        if not self.preset.registered:
            self.label_r = [self.lesion.segment(self.x[i], i) for i in range(N)]

    def forward_synthesis(self) -> None:
        """Fig. 4: x_g,i from the fusion map, their codes and translations, label_g,i and f_g,i."""
        self.code_g = self.EC_r(self.fusion)
        self.x_g = self.decode([self.code_g] * N, list(range(N)))
        self.code_g_i = self.encode(self.x_g)
        x_gt = self.decode([self.code_g_i[j] for j, _ in self.pairs], [i for _, i in self.pairs])
        self.x_gt = dict(zip(self.pairs, x_gt, strict=True))
        with frozen(self.lesion, self.CL):
            self.label_g = [self.lesion.segment(self.x_g[i], i) for i in range(N)]
            self.logits_g = list(self.CL(torch.cat(self.x_g)).split(self.f.shape[0]))
            if self.preset.registered:
                logits_t = self.CL(torch.cat([self.x_t[p] for p in self.pairs])).split(self.f.shape[0])
                self.logits_t = dict(zip(self.pairs, logits_t, strict=True))
        beta, tau = self.preset.beta, self.preset.soft_f_tau
        self.f_g = [soft_structural_feature_map(x, beta, tau) for x in self.x_g]

    def loss_d(self) -> Tensor:
        """Fig. 5: weighted (7) (translations negative, real codes positive) + (13) (real x positive,
        synthetic x_g and code_g negative), on detached generator outputs; the category terms on the
        generated images are scaled by the ``fake_category`` weight (see :mod:`models.presets`)."""
        w, pairs = self.weights, self.pairs
        fakes_t = [self.x_t[p].detach() for p in pairs]
        d, c = self.discriminate([*self.x, *(x.detach() for x in self.x_g), *fakes_t])
        fd_code = list(self.FD(torch.cat([code.detach() for code in self.code])).split(self.x[0].shape[0]))
        d_t, c_t = dict(zip(pairs, d[2 * N :], strict=True)), dict(zip(pairs, c[2 * N :], strict=True))
        self.losses["d_1"] = losses.loss_d_1(d_t, c_t, fd_code, pairs, w.fake_category)
        self.losses["d_2"] = losses.loss_d_2(
            d[:N], c[:N], d[N : 2 * N], c[N : 2 * N], self.FD(self.code_g.detach()), w.fake_category
        )
        return w.d_1 * self.losses["d_1"] + w.d_2 * self.losses["d_2"]

    def loss_g(self) -> Tensor:
        """Weighted (8)-(12) of Fig. 3 and (14)-(18) of Fig. 4, through the frozen critics, and the terms
        of the registered objective when it is on (their values are logged as 0 otherwise)."""
        w, pairs, p = self.weights, self.pairs, self.n_paired
        d, c = self.discriminate([*self.x_g, *(self.x_t[pair] for pair in pairs)])
        d_t, c_t = dict(zip(pairs, d[N:], strict=True)), dict(zip(pairs, c[N:], strict=True))
        terms = {
            "g_1": losses.loss_g_1(d_t, c_t, pairs),
            "reconstruction": losses.loss_reconstruction(self.x, self.x_r),
            "cycle": losses.loss_cycle(self.x, self.x_cr, pairs),
            "code_1": losses.loss_code_1(self.code, self.code_t, pairs),
            "g_2": losses.loss_g_2(d[:N], c[:N], self.FD(self.code_g)),
            "lesion_2": registered.loss_lesion(self.preset.lesion_loss, self.label, self.label_g),
            "registration": losses.loss_registration(self.x_g, self.x_gt, pairs),
            "code_2": losses.loss_code_2(self.code_g, self.code_g_i, pairs),
        }
        if self.preset.registered:
            terms["f"] = registered.loss_f_outside(self.f, self.f_g, self.lesion_mask)
            terms["translation_pair"] = registered.loss_translation_pair(self.x, self.x_t, pairs)
            terms["code_registered"] = registered.loss_code_registered(self.code, pairs)
            terms["category"] = registered.loss_category(self.logits_g, self.logits_t, pairs)
            if p:
                terms["synthesis_pair"] = registered.loss_synthesis_pair(
                    self.x_paired, [x[:p] for x in self.x_g]
                )
        else:
            terms["f"] = losses.loss_f(self.f, self.f_g)
            terms["lesion_1"] = registered.loss_lesion(self.preset.lesion_loss, self.label_x, self.label_r)
        self.losses.update(terms)
        for name in ("lesion_1", "translation_pair", "synthesis_pair", "code_registered", "category"):
            self.losses.setdefault(name, torch.zeros((), device=self.f.device))
        self.losses.update(
            collapse_alarms(self.x, self.x_t, pairs, self.x_g, self.logits_g, self.brain, self.lesion_mask)
        )
        return torch.stack([getattr(w, name) * value for name, value in terms.items()]).sum()

    def optimize_parameters(self) -> None:
        """Forward, update D and FD, then (critics frozen) update EC, DC, EC_r and the segmentors."""
        with self.autocast():
            self.forward()
        self.step("D", self.loss_d)
        with frozen(self.D, self.FD):
            self.step("G", self.loss_g)
        self.losses = {name: value.detach() for name, value in self.losses.items()}
