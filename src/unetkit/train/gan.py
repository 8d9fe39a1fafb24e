"""pix2pix's adversarial training (``restore.gan``): a conditional PatchGAN discriminator against the U-Net.

The training loop's step stays the one of :func:`unetkit.train.epoch.train_epoch`; an :class:`Adversary` adds
two things to it: :meth:`Adversary.generator_term` (added to the reconstruction loss before the generator's
backward pass) and :meth:`Adversary.step` (one discriminator update after the generator's). The discriminator
and its optimizer are checkpointed through :class:`~unetkit.train.state.RunState` (keys ``discriminator``,
``d_optimizer``, ``adversary``) and never reach the model file, which holds the generator alone.

The generator minimises ``L_rec + ramp * L_adv / gan_l1_weight``: pix2pix's ``lambda * L1 + L_adv`` divided by
``lambda``, the same minimiser and, under Adam (scale-invariant), the same steps, while ``train_loss`` stays
comparable with a plain L1 run.

Stability on small batches (what each measure is for):

- LSGAN (least squares, the default): the generator's gradient grows with how far the discriminator puts
  its outputs from "real", instead of vanishing once the discriminator is confident (the saturating BCE),
  and without BCE's unbounded logits; ``gan_loss: bce`` is the non-saturating cross-entropy.
- spectral normalisation in the discriminator (:mod:`unetkit.models.patchgan`): bounded Lipschitz constant.
- a lower discriminator learning rate (``train.lr / 2``, Adam betas 0.5/0.999 as pix2pix): it cannot outrun
  the generator.
- one-sided label smoothing (real pairs scored against 0.9).
- warm-up: the first ``gan_warmup`` share of the steps trains the reconstruction loss only (the
  discriminator already learns), then the adversarial weight ramps linearly to 1 over as many steps.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from unetkit.config import Config
from unetkit.data.sampling import crop_to_output
from unetkit.errors import ConfigError
from unetkit.models.patchgan import PatchGAN, patchgan_layers

__all__ = ["Adversary", "make_adversary"]


class Adversary:
    """The discriminator, its optimizer and the adversarial terms of one run.

    Args:
        config: the run's configuration (``restore.gan_*``, ``train.lr``).
        discriminator: the :class:`~unetkit.models.patchgan.PatchGAN` (as Fabric set it up, or bare).
        optimizer: its optimizer.
        total_steps: the run's optimizer steps (for the warm-up ramp).
        fabric: the run's Lightning Fabric (precision, backward); ``None``: plain PyTorch.
    """

    def __init__(
        self, config: Config, discriminator: Any, optimizer: Any, total_steps: int, fabric: Any = None
    ) -> None:
        r = config.restore
        self.discriminator, self.optimizer, self.fabric = discriminator, optimizer, fabric
        self.loss, self.weight, self.real_label = r.gan_loss, r.gan_l1_weight, r.gan_real_label
        self.warmup = round(r.gan_warmup * total_steps)
        self.d_sum, self.g_sum, self.n, self.g_n = 0.0, 0.0, 0, 0

    @property
    def raw(self) -> torch.nn.Module:
        """The bare discriminator, without Fabric's or DDP's wrapper."""
        module: torch.nn.Module = getattr(self.discriminator, "module", self.discriminator)
        return module

    def ramp(self, step: int) -> float:
        """The adversarial term's weight at global step ``step``: 0 during the warm-up, then linear to 1.

        >>> a = Adversary.__new__(Adversary); a.warmup = 10
        >>> a.ramp(5), a.ramp(15), a.ramp(30)
        (0.0, 0.5, 1.0)
        """
        if self.warmup <= 0:
            return 1.0
        return float(min(1.0, max(0.0, (step - self.warmup) / self.warmup)))

    def _pair(self, inputs: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
        """The conditional pair ``concat(input, output)``; the input cropped to a valid net's output size."""
        if inputs.shape[2:] != output.shape[2:]:
            inputs = crop_to_output(inputs, list(output.shape[2:]))
        return torch.cat([inputs, output], dim=1)

    def _score(self, logits: torch.Tensor, real: bool, label: float = 1.0) -> torch.Tensor:
        goal = torch.full_like(logits, label if real else 0.0)
        if self.loss == "lsgan":
            return F.mse_loss(logits, goal)
        return F.binary_cross_entropy_with_logits(logits, goal)

    def generator_term(self, inputs: torch.Tensor, output: torch.Tensor, step: int) -> torch.Tensor:
        """What the adversarial loss adds to the generator's loss at global step ``step`` (0 in the warm-up).

        The discriminator's parameters take no gradient from it: the bare module scores the pair (under the
        run's precision), outside DDP, since the generator's step does not update the discriminator.

        Shape:
            ``inputs (B, C_in, *P)``, ``output (B, C_out, *P')`` -> scalar.
        """
        ramp = self.ramp(step)
        if ramp == 0.0:
            return output.new_zeros(())
        raw = self.raw
        for p in raw.parameters():
            p.requires_grad_(False)
        try:
            with self.fabric.autocast() if self.fabric is not None else contextlib.nullcontext():
                logits = raw(self._pair(inputs, output))
            term = self._score(logits.float(), real=True)
        finally:
            for p in raw.parameters():
                p.requires_grad_(True)
        self.g_sum += float(term.detach())
        self.g_n += 1
        return term * (ramp / self.weight)

    def step(self, fabric: Any, inputs: torch.Tensor, output: torch.Tensor, target: torch.Tensor) -> float:
        """One discriminator update on real ``(input, target)`` and generated ``(input, output)`` pairs, scored
        in one forward pass (one batch of both: one DDP forward per backward).

        Returns:
            The discriminator's loss (mean of its real and fake terms).
        """
        b = output.shape[0]
        pairs = torch.cat([self._pair(inputs, target.to(output.dtype)), self._pair(inputs, output.detach())])
        logits = self.discriminator(pairs).float()
        real = self._score(logits[:b], real=True, label=self.real_label)
        fake = self._score(logits[b:], real=False)
        loss = 0.5 * (real + fake)
        self.optimizer.zero_grad(set_to_none=True)
        fabric.backward(loss)
        self.optimizer.step()
        value = float(loss.detach())
        self.d_sum += value
        self.n += 1
        return value

    def end_epoch(self) -> dict[str, float]:
        """The epoch's mean discriminator loss and adversarial generator loss (``d_loss``, ``g_adv``, the latter
        over the steps past the warm-up, else 0); resets."""
        row = {"d_loss": self.d_sum / max(self.n, 1), "g_adv": self.g_sum / self.g_n if self.g_n else 0.0}
        self.d_sum, self.g_sum, self.n, self.g_n = 0.0, 0.0, 0, 0
        return row

    def state_dict(self) -> dict[str, Any]:
        """The checkpoint entries: ``discriminator``, ``d_optimizer`` and the running sums (``adversary``)."""
        return {
            "discriminator": self.raw.state_dict(),
            "d_optimizer": self.optimizer.state_dict(),
            "adversary": {"d_sum": self.d_sum, "g_sum": self.g_sum, "n": self.n, "g_n": self.g_n},
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.raw.load_state_dict(state["discriminator"])
        self.optimizer.load_state_dict(state["d_optimizer"])
        sums = state["adversary"]
        self.d_sum, self.g_sum = float(sums["d_sum"]), float(sums["g_sum"])
        self.n, self.g_n = int(sums["n"]), int(sums["g_n"])


def make_adversary(
    config: Config, in_channels: int, out_channels: int, spatial_dims: int, out_patch: Sequence[int],
    fabric: Any, total_steps: int,
) -> Adversary:  # fmt: skip
    """Build the run's discriminator (sized to the output patch) and its Adam optimizer, set up by ``fabric``.

    Seeded from ``train.seed`` so a run (and its resume) builds the same discriminator.
    """
    r, t = config.restore, config.train
    if min(int(p) for p in out_patch) < 8:
        raise ConfigError(
            f"restore.gan: the output patch {list(out_patch)} is too small for the discriminator; "
            "use --patch 32 or more"
        )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(t.seed + 1)
        d = PatchGAN(in_channels + out_channels, spatial_dims, width=r.gan_width, layers=patchgan_layers(out_patch))
    lr = r.gan_d_lr if r.gan_d_lr is not None else t.lr / 2
    opt = torch.optim.Adam(d.parameters(), lr=lr, betas=(0.5, 0.999))
    d_wrapped, opt = fabric.setup(d, opt)
    return Adversary(config, d_wrapped, opt, total_steps, fabric)
