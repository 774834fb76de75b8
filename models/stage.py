"""The contract of a training stage, after pix2pix's ``BaseModel``, with explicit dicts instead of names.

A stage owns the networks of one part of Fig. 1 (taken from the shared ``define_networks`` ModuleDict,
so the checkpoint always holds the whole ModuleDict) and their optimizers. One training step is::

    stage.set_input(batch)        # unpack a batch of models.data.TrainingData
    stage.optimize_parameters()   # forward, update D, freeze D, update G
    stage.current_losses()        # {loss name: value} of that step, as floats

Losses are kept as detached tensors in ``self.losses`` and turned into floats only when asked, so a GPU
step does not wait for the host.
"""

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from models.presets import Preset


def set_requires_grad(networks: Iterable[nn.Module], requires_grad: bool) -> None:
    """Freeze (False) or unfreeze (True) every parameter of ``networks``."""
    for net in networks:
        for parameter in net.parameters():
            parameter.requires_grad_(requires_grad)


@contextmanager
def frozen(*networks: nn.Module) -> Iterator[None]:
    """Within the block, ``networks`` act as constants: gradients reach their inputs, not their weights."""
    set_requires_grad(networks, False)
    try:
        yield
    finally:
        set_requires_grad(networks, True)


class Stage:
    """Base class of the training stages.

    Args:
        networks: the ModuleDict of :func:`models.networks.define_networks`, on ``device``.
        preset: optimizer settings, loss weights and pair sampling.
        device: where the batches and networks live; CUDA runs the forward passes in bfloat16 autocast.

    Attributes:
        name: the stage's name in ``losses.csv`` and the checkpoint.
        loss_names: keys of :meth:`current_losses`, in CSV order.
        optimizers: the stage's optimizers by name.
        losses: the last step's losses (detached scalars).
    """

    name: ClassVar[str]
    loss_names: ClassVar[tuple[str, ...]]

    def __init__(self, networks: nn.ModuleDict, preset: Preset, device: torch.device) -> None:
        self.networks = networks
        self.preset = preset
        self.weights = preset.weights
        self.device = device
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        self.losses: dict[str, Tensor] = {}

    def adam(
        self, *networks: nn.Module, lr: float | None = None, beta1: float | None = None
    ) -> torch.optim.Adam:
        """Adam over ``networks`` with the preset's lr and betas (or the ``lr`` and ``beta1`` given), no
        weight decay (Sec. 3.4)."""
        parameters = [p for net in networks for p in net.parameters()]
        lr = self.preset.lr if lr is None else lr
        beta1 = self.preset.beta1 if beta1 is None else beta1
        return torch.optim.Adam(parameters, lr=lr, betas=(beta1, self.preset.beta2))

    def autocast(self) -> torch.autocast:
        """bfloat16 autocast on CUDA, disabled elsewhere."""
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.device.type == "cuda")

    def step(self, optimizer: str, loss: Callable[[], Tensor]) -> None:
        """One update of ``self.optimizers[optimizer]``: loss under autocast, backward and step outside it."""
        self.optimizers[optimizer].zero_grad(set_to_none=True)
        with self.autocast():
            total = loss()
        total.backward()
        self.optimizers[optimizer].step()

    def train(self) -> None:
        """Put the stage's networks in training mode (input dropout on)."""
        self.networks.train()

    def set_input(self, batch: dict[str, Tensor]) -> None:
        """Unpack a batch of :meth:`models.data.TrainingData.batch`."""
        raise NotImplementedError

    def forward(self) -> None:
        """Run the generators of the stage's figure and keep every intermediate the losses need."""
        raise NotImplementedError

    def optimize_parameters(self) -> None:
        """One training step on the current input."""
        raise NotImplementedError

    def current_losses(self) -> dict[str, float]:
        """The last step's losses by name (the paper's equation names, without ``loss_``)."""
        return {name: float(self.losses[name]) for name in self.loss_names}

    def state_dict(self) -> dict[str, Any]:
        """The optimizers' states by name, for the checkpoint."""
        return {name: optimizer.state_dict() for name, optimizer in self.optimizers.items()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the optimizers saved by :meth:`state_dict`."""
        for name, optimizer in self.optimizers.items():
            optimizer.load_state_dict(state[name])
