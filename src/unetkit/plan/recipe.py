"""The planner's training-recipe rules: normalisation, loss and sampling, schedule, augmentation, split.

They run after the shape rules of :mod:`unetkit.plan.planner` (dimensionality, spacing, network, patch and
batch), whose results they read: the patch, the batch, the measured step time. Each decides one thing and
says why in one line; a value the user set wins (:meth:`RecipeRules.decide`).
"""

from __future__ import annotations

import math
from typing import Any

from unetkit.plan.decisions import Plan
from unetkit.plan.facts import DataFacts
from unetkit.plan.machine import Machine

#: Share of the budget left for validation, saving and start-up.
OVERHEAD = 0.15
#: Validations over a run: as many as keep their cost under VALIDATION_SHARE of the budget, within these.
MIN_VALIDATIONS, MAX_VALIDATIONS = 3, 20
VALIDATION_SHARE = 0.08
#: Seconds of whole-image validation per voxel, as a share of a training step's seconds per patch voxel:
#: a forward pass is about a third of a step (forward + backward + update), tile overlap and halo add half.
VALIDATION_COST = 0.5
#: Datasets with fewer images than this (but more than one) train on all of them, with no held-out image.
ALL_TRAIN_BELOW = 4
#: The share of the images held out for validation otherwise (``data.val_fraction``).
VAL_FRACTION = 0.2


class RecipeRules:
    """The recipe rules, mixed into the planner; what they read the shape rules have set before."""

    f: DataFacts
    m: Machine
    fixed: dict[str, Any]
    plan: Plan
    budget: float
    budget_given: float | None
    restore: bool
    patch: tuple[int, ...]
    batch: int
    spatial: int
    slices: bool
    anisotropic_axis: int | None
    step_seconds: float

    def decide(self, choice: str, key: str | None, value: Any, why: str) -> Any:
        """The user's value for ``key`` when they set one, else ``value``; recorded either way."""
        if key is not None and key in self.fixed:
            return self.plan.add(choice, self.fixed[key], "", key, "you")
        return self.plan.add(choice, value, why, key)

    def note(self, choice: str, value: Any, why: str) -> None:
        self.plan.add(choice, value, why)

    def normalisation(self) -> None:
        f = self.f
        if self.restore:
            self.decide(
                "normalisation",
                "data.normalization",
                "percentile",
                "inputs scaled per channel by the training inputs' 1st/99.8th percentiles (CARE's), never clipped",
            )
            self.decide(
                "target normalisation",
                "restore.target_normalization",
                "percentile",
                f"targets scaled the same way by their own percentiles; inverted at prediction, so outputs come back "
                f"in the target's range (stored as {f.target_dtype or 'float32'})",
            )
            return
        lo = f.intensity.get("min", [0.0])
        hi = f.intensity.get("max", [0.0])
        ct_named = any(n.upper() == "CT" for n in f.channel_names)
        hu_like = f.image_dtype in ("int16", "int32", "float32", "float64") and min(lo) <= -500 and max(hi) >= 300
        fg = f.foreground_intensity
        if (ct_named or hu_like) and fg:
            why = "CT-like intensities (" + ("a channel named CT" if ct_named else "a Hounsfield range") + "): "
            why += (
                "clip to the foreground 0.5-99.5 percentiles, z-score with the foreground mean and std of the dataset"
            )
            self.decide("normalisation", "data.normalization", "ct", why)
            return
        if f.in_channels == 3 and f.image_dtype == "uint8":
            self.decide("normalisation", "data.normalization", "range", "8-bit RGB: each channel 0..255 -> 0..1")
            return
        why = "per-image z-score: microscopy intensities vary from image to image"
        if f.nonzero_fraction < 0.75:
            why += f" (the non-zero region is {f.nonzero_fraction:.0%} of the image: statistics inside it)"
        self.decide("normalisation", "data.normalization", "zscore", why)

    def loss_and_sampling(self) -> None:
        f = self.f
        if self.restore:
            if self.plan.get("restore.self_supervised"):
                # Measured on ISBI 2012 with Poisson-Gaussian noise, 5 CPU minutes (docs/benchmarks.md): 20.46 dB
                # with MSE against 20.37 with L1, the best epoch kept by the blind-spot validation loss.
                loss = "mse"
                why = (
                    "MSE on the hidden pixels (Noise2Void's): the mean of a pixel's noisy values given its "
                    "neighbours is the clean signal; the best epoch has the lowest blind-spot validation loss"
                )
            else:
                validated = "; PSNR/SSIM are validated (the best epoch has the highest PSNR)"
                if self.fixed.get("restore.gan"):
                    loss = "l1"
                    why = (
                        "L1 under the adversarial term (pix2pix's): MSE's mean of the plausible images is the blur "
                        "the discriminator is there to remove" + validated
                    )
                else:
                    # Measured on ISBI 2012, 5 CPU minutes (docs/restoration.md): MSE 21.78 dB / SSIM 0.709 against
                    # L1's 21.75 / 0.707 with noise, 19.49 / 0.469 against 19.47 / 0.465 with blur and noise.
                    loss = "mse"
                    why = (
                        "MSE: its minimiser is the mean of the clean images that fit the input, the estimate that "
                        "maximises PSNR (measured above L1, CARE's, in PSNR and SSIM: docs/restoration.md)" + validated
                    )
            self.decide("loss", "restore.loss", loss, why)
            self.note("sampling", "uniform", "random patches anywhere (no foreground in a restoration), flipped and "
                      "transposed in-plane at random, the same way for input and target")  # fmt: skip
            return
        thin_gaps = f.objects_per_image >= 10 and f.separated_objects > 0.5
        if f.mask_kind == "instances" and f.touching_instances > 0.05:
            self.decide(
                "loss",
                "train.loss",
                "weighted_ce",
                f"instance labels, {f.touching_instances:.0%} of the objects touch another: the paper's weighted "
                "cross-entropy with its weight map, which makes the thin gaps between touching objects count",
            )
            self.decide("weight map", "data.weight_map.enabled", True, "the paper's w0 = 10, sigma = 5 px")
        elif thin_gaps:
            # Measured on ISBI 2012 (docs/benchmarks.md, time to a target): with the weight map the cell interior
            # plateaued at Dice 0.91 (30 min: pixel error 0.12, Rand error 0.11); Dice + CE reached 0.95 in
            # 10 min, 0.933 in 1.3 min, with lower pixel and Rand errors. The separating borders need no weights.
            self.decide(
                "loss",
                "train.loss",
                "dice_ce",
                f"{f.objects_per_image:g} objects per image, {f.separated_objects:.0%} of them kept apart by thin "
                "borders: Dice + cross-entropy, which learns the borders faster and more accurately than the paper's "
                "weight map (measured on ISBI 2012: docs/benchmarks.md); --set train.loss=weighted_ce for the paper's",
            )
        else:
            why = "Dice + cross-entropy: robust to class imbalance without tuning"
            if f.mask_kind == "instances":
                why += " (instance labels, but the objects barely touch)"
            self.decide("loss", "train.loss", "dice_ce", why)
        freqs = [x for x in f.class_frequencies[1:] if x > 0]
        rarest = min(freqs) if freqs else 1.0
        if rarest >= 0.05:
            frac, why = 0.33, "every class covers >= 5% of the voxels: one patch in three centred on foreground"
        elif rarest >= 0.005:
            frac, why = 0.5, f"the rarest class covers {rarest:.1%} of the voxels: half the patches on foreground"
        else:
            frac, why = 0.66, f"the rarest class covers {rarest:.2%} of the voxels: two patches in three on foreground"
        self.decide("foreground sampling", "data.foreground_fraction", frac, why)

    def schedule(self) -> None:
        budget_s = self.budget * 60 * (1 - OVERHEAD)
        steps = max(1, int(budget_s / max(self.step_seconds, 1e-6)))
        # whole-image validation is not free: as many as fit VALIDATION_SHARE of the budget (estimated from the
        # measured step: validated voxels x seconds per trained voxel x VALIDATION_COST)
        voxel_s = self.step_seconds / max(1, self.batch * math.prod(self.patch))
        held_out = self.validated_share() * self.f.total_voxels
        val_s = held_out * voxel_s * VALIDATION_COST
        fit = VALIDATION_SHARE * self.budget * 60 / max(val_s, 1e-9)
        validations = int(min(MAX_VALIDATIONS, max(MIN_VALIDATIONS, fit)))
        iters = int(min(250, max(10, steps // validations)))
        epochs = max(1, steps // iters)
        src = "your --budget" if self.budget_given is not None else f"the default for {self.m.device} (set --budget)"
        self.decide(
            "budget",
            "train.max_minutes",
            round(self.budget, 2),
            f"{src}: training stops, validated and saved, when it is spent",
        )
        self.decide(
            "epochs",
            "train.epochs",
            epochs,
            f"{steps} steps of {self.step_seconds:.2f} s fit {budget_s / 60:.1f} min ({OVERHEAD:.0%} kept for "
            "validation "
            "and saving)",
        )
        self.decide(
            "iterations per epoch",
            "train.iterations_per_epoch",
            iters,
            f"about {epochs} validations over the run (each about {val_s:.0g} s of whole-image prediction: "
            f"at most {VALIDATION_SHARE:.0%} of the budget, {MIN_VALIDATIONS} to {MAX_VALIDATIONS})",
        )
        self.decide(
            "budget fill",
            "train.fill_budget",
            "train.epochs" not in self.fixed,
            "the step time above is measured before training: a run that goes faster adds epochs of the same "
            "length until the budget is spent (the schedule stretches with it)"
            if "train.epochs" not in self.fixed
            else "you set the epochs: the run keeps them (the budget still stops it)",
        )
        self.decide(
            "schedule",
            "train.schedule",
            "poly",
            "polynomial decay (power 0.9) to zero where the run ends (the last step, or the budget's end)",
        )

    def augmentation(self) -> None:
        if self.restore:
            self.note("augmentation", "flips, transposes", "restoration patches are flipped along each axis and "
                      "transposed in-plane (lossless); no interpolating rotations, which would blur the noise the "
                      "network learns to remove")  # fmt: skip
            return
        if self.spatial == 2 and not self.slices:
            self.decide(
                "rotation",
                "augment.rotate.degrees",
                [-180.0, 180.0],
                "2D images have no preferred orientation: full in-plane rotation",
            )
        elif self.slices:
            self.decide("rotation", "augment.rotate.degrees", [-180.0, 180.0], "2D slices: full in-plane rotation")
        elif self.anisotropic_axis is not None:
            self.decide(
                "rotation",
                "augment.rotate.axis",
                self.anisotropic_axis,
                f"anisotropic volume: full rotation about axis {self.anisotropic_axis} only, in-plane (out-of-plane "
                "rotations would interpolate across distant slices)",
            )
        else:
            self.decide(
                "rotation", "augment.rotate.degrees", [-30.0, 30.0], "isotropic 3D: +-30 degrees about each axis"
            )

    def validated_share(self) -> float:
        """The share of the dataset's voxels each validation predicts, by the rule :meth:`split` applies."""
        n = self.f.num_images
        return 1.0 if n < 2 else 0.0 if self._all_train() else VAL_FRACTION

    def _all_train(self) -> bool:
        """Two or three images, segmentation: all train (a restoration keeps one: its panels and PSNR need it)."""
        return 2 <= self.f.num_images < ALL_TRAIN_BELOW and not self.restore

    def split(self) -> None:
        n = self.f.num_images
        if n < 2:
            self.decide(
                "validation", "data.val_fraction", VAL_FRACTION, "one image: patches of it validate (no held-out image)"
            )
        elif self._all_train():
            self.decide(
                "validation",
                "data.val_fraction",
                0.0,
                f"{n} images: all of them train (holding one out would take 1/{n} of the annotations, as nnU-Net's "
                "'all' fold and MONAI's scripts also keep them); no validation scores, the model is the epoch "
                "with the lowest training loss; for a held-out score use --fold K/N or --set data.val_fraction=0.2",
            )
        else:
            self.decide(
                "validation",
                "data.val_fraction",
                VAL_FRACTION,
                f"{max(1, round(n * VAL_FRACTION))} of {n} images held out; the split is written to split.json",
            )
