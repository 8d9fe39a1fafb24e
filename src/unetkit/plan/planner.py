"""The planner: from a dataset's facts, the machine and a time budget to every training choice, explained.

Each rule below decides one thing and says why in one line; a value the user set (flag, ``--set`` or a
config key) wins over the rule and the table says "set by you". The order matters only where a choice
depends on an earlier one (the patch on the spacing, the schedule on the patch).

    facts -> dimensionality -> target spacing -> topology + patch + batch (measured step time)
          -> normalisation -> loss and sampling -> schedule -> augmentation -> split

A restoration dataset (``facts.task == "restore"``) takes the same steps with its own rules where they
differ: no resampling, a linear head with the target's channels and no normalisation layers, percentile
scaling of inputs and targets (CARE), the L1 loss, uniform random patches.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from unetkit.errors import ConfigError
from unetkit.plan.decisions import Plan
from unetkit.plan.facts import DataFacts
from unetkit.plan.machine import Machine, StepTimer
from unetkit.plan.topology import ANISOTROPY_RATIO, Topology, fit_patch, target_spacing, widths

#: Default budgets (minutes) when the user gives none: what a first useful model costs on each device.
DEFAULT_BUDGET = {"cpu": 30.0, "cuda": 60.0}
#: Share of the budget left for validation, saving and start-up.
OVERHEAD = 0.15
#: Steps per minute of budget the patch/batch choice aims for (more, shorter steps beat few long ones).
STEPS_PER_MINUTE = 50
MIN_STEPS, MAX_STEPS = 200, 100_000
#: A batch covers at most this share of the dataset's voxels (larger batches only repeat the data).
BATCH_DATA_SHARE = 0.05
MAX_BATCH = 32
#: Smallest patch per axis the planner will shrink to.
MIN_PATCH = {2: 32, 3: 16}
#: GPU memory share a step may use.
GPU_MEMORY_SHARE = 0.8
#: Validations over a run: as many as keep their cost under VALIDATION_SHARE of the budget, within these.
MIN_VALIDATIONS, MAX_VALIDATIONS = 3, 20
VALIDATION_SHARE = 0.08
#: Seconds of whole-image validation per voxel, as a share of a training step's seconds per patch voxel:
#: a forward pass is about a third of a step (forward + backward + update), tile overlap and halo add half.
VALIDATION_COST = 0.5


def plan_training(
    facts: DataFacts,
    machine: Machine,
    timer: StepTimer,
    *,
    budget_minutes: float | None = None,
    fixed: Mapping[str, Any] | None = None,
    dims: int | None = None,
) -> Plan:
    """Decide every training choice for ``facts`` on ``machine`` within ``budget_minutes``.

    Args:
        facts: the dataset (:func:`unetkit.plan.facts.gather_facts`).
        machine: where training runs (:func:`unetkit.plan.machine.detect_machine`).
        timer: measures a training step (:func:`unetkit.plan.machine.measure_step`).
        budget_minutes: wall-clock training budget; ``None``: :data:`DEFAULT_BUDGET` for the device.
        fixed: config values the user set, by dotted key (``{"data.patch_size": 128}``); they win.
        dims: 2 to train a 3D dataset slice by slice (``--dims 2``); ``None``: the data's dimensionality.

    Returns:
        The :class:`~unetkit.plan.decisions.Plan`.
    """
    return _Planner(facts, machine, timer, budget_minutes, dict(fixed or {}), dims).run()


class _Planner:
    def __init__(
        self,
        facts: DataFacts,
        machine: Machine,
        timer: StepTimer,
        budget: float | None,
        fixed: dict[str, Any],
        dims: int | None,
    ) -> None:
        if facts.num_images < 1:
            raise ConfigError("cannot plan: the dataset holds no images")
        self.f, self.m, self.timer, self.fixed = facts, machine, timer, fixed
        self.budget_given = budget
        self.budget = float(budget) if budget is not None else DEFAULT_BUDGET[machine.device]
        if self.budget <= 0:
            raise ConfigError(f"--budget {budget}: must be a positive duration, e.g. 30m or 2h")
        self.dims_request = dims
        self.restore = facts.task == "restore"
        if self.restore and dims is not None and dims != facts.spatial_dims:
            raise ConfigError(
                f"--dims {dims}: restoration trains {facts.spatial_dims}D data as it is; leave out --dims"
            )
        self.plan = Plan(facts=facts.to_dict(), machine=machine.to_dict())

    # ---- helpers --------------------------------------------------------------------------------------
    def decide(self, choice: str, key: str | None, value: Any, why: str) -> Any:
        """The user's value for ``key`` when they set one, else ``value``; recorded either way."""
        if key is not None and key in self.fixed:
            return self.plan.add(choice, self.fixed[key], "", key, "you")
        return self.plan.add(choice, value, why, key)

    def note(self, choice: str, value: Any, why: str) -> None:
        self.plan.add(choice, value, why)

    # ---- the rules ------------------------------------------------------------------------------------
    def run(self) -> Plan:
        if self.restore:
            self.decide("task", "task", "restore", "a restoration dataset (inputs/ + targets/): images -> images")
            self.decide(
                "self-supervised",
                "restore.self_supervised",
                False,
                "clean targets given: supervised (CARE); --self-supervised trains Noise2Void from the inputs alone",
            )
        self.dimensionality()
        self.spacing()
        self.network_and_patch()
        self.normalisation()
        self.loss_and_sampling()
        self.schedule()
        self.augmentation()
        self.split()
        return self.plan

    def dimensionality(self) -> None:
        f = self.f
        self.spatial = f.spatial_dims
        self.anisotropic_axis: int | None = None
        spacings = f.known_spacings
        ratio = 1.0
        if spacings:
            med = np.median(np.asarray(spacings), axis=0)
            ratio = float(med.max() / med.min())
            if ratio > ANISOTROPY_RATIO:
                self.anisotropic_axis = int(np.argmax(med))
        dims = self.dims_request or f.spatial_dims
        if dims not in (2, 3) or dims > f.spatial_dims:
            raise ConfigError(f"--dims {dims}: a {f.spatial_dims}D dataset trains as 2D or {f.spatial_dims}D")
        self.slices = dims == 2 and f.spatial_dims == 3
        if self.slices:
            axis = self.anisotropic_axis if self.anisotropic_axis is not None else 0
            self.plan.add(
                "dimensionality",
                axis,
                f"2D slices along axis {axis} of each volume (--dims 2)",
                "data.slice_axis",
                "you",
            )
            self.slice_axis = axis
            self.spatial = 2
        elif f.spatial_dims == 3:
            why = "the images are 3D volumes"
            if self.anisotropic_axis is not None:
                why += (
                    f"; anisotropic (axis {self.anisotropic_axis} spacing {ratio:.1f}x the finest): the network pools "
                    "that axis later; alternative: --dims 2 trains slice by slice (often as good for distant slices)"
                )
            self.note("dimensionality", "3D", why)
        else:
            self.note("dimensionality", "2D", "the images are 2D")

    def spacing(self) -> None:
        f = self.f
        spacings = f.known_spacings
        self.target: tuple[float, ...] | None = None
        shapes = np.asarray(f.shapes, dtype=np.float64)
        if self.restore:
            self.note("target spacing", None, "restoration keeps the images' own pixel grid: no resampling")
            self.resampled_shape = tuple(float(x) for x in np.median(shapes, axis=0))
            median = np.median(np.asarray(spacings), axis=0) if spacings else np.ones(f.spatial_dims)
            self.voxel_spacing: tuple[float, ...] = tuple(float(x) for x in median)
            return
        if not spacings or len(spacings) != f.num_images:
            why = "the files carry no voxel spacing" if not spacings else "some files carry no voxel spacing"
            self.decide("target spacing", "data.target_spacing", None, why + ": images are used as they are")
            self.resampled_shape = tuple(float(x) for x in np.median(shapes, axis=0))
            self.voxel_spacing = (1.0,) * f.spatial_dims
            return
        target, aniso = target_spacing(spacings)
        same = all(np.allclose(s, target, rtol=0.01) for s in spacings)
        if same:
            why = "all images share this spacing: no resampling"
            value = None
        else:
            why = "median spacing per axis; images resampled (order 3), masks by nearest neighbour"
            if aniso is not None:
                why += f"; axis {aniso} is strongly anisotropic: its 10th percentile instead of the median"
            value = list(target)
        chosen = self.decide("target spacing", "data.target_spacing", value, why)
        self.target = tuple(float(x) for x in chosen) if chosen is not None else None
        eff = self.target or target
        scaled = shapes * np.asarray(spacings) / np.asarray(eff)
        self.resampled_shape = tuple(float(x) for x in np.median(scaled, axis=0))
        self.voxel_spacing = tuple(float(x) for x in eff)

    def _model_args(self, topo: Any, base: int, cap: int) -> dict[str, Any]:
        return {
            "spatial_dims": self.spatial,
            "in_channels": self.f.in_channels,
            "num_classes": self.num_classes,
            "depth": topo.depth,
            "width": base,
            "max_width": cap,
            "padding": "same",
            "norm": "none" if self.restore else "instance",
            "activation": "leaky_relu",
            "pool_sizes": [list(p) for p in topo.pools],
            "kernel_sizes": [list(k) for k in topo.kernels],
        }

    def network_and_patch(self) -> None:
        f, m = self.f, self.m
        self.num_classes = f.num_classes if self.restore else 3 if self.instance_target() else f.num_classes
        cuda = m.device == "cuda"
        base = int(self.fixed.get("model.args.width", 32 if cuda else (16 if self.spatial == 2 else 8)))
        cap = int(self.fixed.get("model.args.max_width", (512 if self.spatial == 2 else 320) if cuda else 256))
        if self.slices:
            shape = [n for a, n in enumerate(self.resampled_shape) if a != self.slice_axis]
            spacing = [s for a, s in enumerate(self.voxel_spacing) if a != self.slice_axis]
        else:
            shape, spacing = list(self.resampled_shape), list(self.voxel_spacing)
        self.total_steps_target = int(min(MAX_STEPS, max(MIN_STEPS, STEPS_PER_MINUTE * self.budget)))
        step_budget = self.budget * 60 * (1 - OVERHEAD) / self.total_steps_target
        min_patch = MIN_PATCH[self.spatial]
        data_voxels = self.f.total_voxels

        def batch_cap(patch: Sequence[int]) -> int:
            share = int(BATCH_DATA_SHARE * data_voxels / max(1, math.prod(patch)))
            return int(max(2, min(MAX_BATCH, share)))

        user_patch = self.fixed.get("data.patch_size")
        if user_patch is not None:
            sizes = [int(user_patch)] * self.spatial if isinstance(user_patch, int) else [int(p) for p in user_patch]
            patch, topo = fit_patch(sizes, spacing)
            patch = tuple(sizes)  # the user's patch (the training loop rounds it to legal)
        else:
            # The median image (in physical proportion), shrunk along its longest physical axis until a step
            # of batch 2 fits the time (and GPU memory) budget. Step cost grows with the voxels, so it is
            # measured once at a reference size and extrapolated, then measured again at the choice.
            patch, topo = fit_patch([max(min_patch, n) for n in shape], spacing)
            ref_patch, ref_topo = fit_patch([min(n, 64 if self.spatial == 3 else 128) for n in patch], spacing)
            ref = self.timer(self._model_args(ref_topo, base, cap), ref_patch, 2)
            per_voxel = ref.seconds / (2 * math.prod(ref_patch))
            mem_per_voxel = ref.peak_bytes / (2 * math.prod(ref_patch)) if ref.peak_bytes else 0.0
            mem_limit = m.memory_gb * 2**30 * GPU_MEMORY_SHARE if cuda else math.inf

            def too_big(p: Sequence[int]) -> bool:
                v = 2 * math.prod(p)
                return v * per_voxel > step_budget or v * mem_per_voxel > mem_limit

            sizes = list(patch)
            while too_big(sizes) and max(sizes) > min_patch:
                phys = [n * s for n, s in zip(sizes, spacing, strict=True)]
                ax = int(np.argmax([p if n > min_patch else -1 for p, n in zip(phys, sizes, strict=True)]))
                sizes[ax] = max(min_patch, int(sizes[ax] * 0.9))
                sizes = list(fit_patch(sizes, spacing)[0])
            patch, topo = fit_patch(sizes, spacing)
        self.patch = tuple(int(p) for p in patch)
        user_depth = self.fixed.get("model.args.depth")
        if user_depth is not None and 0 < int(user_depth) < topo.depth:  # a shallower net: its first levels
            topo = Topology(topo.pools[: int(user_depth)], topo.kernels[: int(user_depth) + 1])
        self.topology = topo
        model_args = self._model_args(topo, base, cap)
        measured = self.timer(model_args, self.patch, 2)
        # batch: 2 at least; larger while a step still fits the time budget and the batch covers at most 5% of
        # the data (bigger batches only repeat the same voxels).
        batch = 2
        per_sample = measured.seconds / 2
        while batch < batch_cap(self.patch) and per_sample * (batch + 1) <= step_budget:
            batch += 1
        name = "unet2d" if self.spatial == 2 else "unet3d"
        self.decide("network", "model.name", name, f"a {self.spatial}D U-Net whose shape the plan sets below")
        why_patch = (
            "the median image after resampling, shrunk along its longest physical axis until a step fits the budget"
            if user_patch is None
            else ""
        )
        self.decide("patch", "data.patch_size", list(self.patch), why_patch)
        self.decide(
            "topology",
            "model.args.pool_sizes",
            model_args["pool_sizes"],
            "an axis is pooled while its spacing is within 2x of the finest and its feature map stays >= 4 voxels",
        )
        self.decide(
            "kernels",
            "model.args.kernel_sizes",
            model_args["kernel_sizes"],
            "3 per axis, 1 on an axis still over 2x coarser than the finest (no mixing across distant slices)",
        )
        self.decide("depth", "model.args.depth", topo.depth, "one level per pooling")
        ws = widths(base, topo.depth, cap)
        self.decide("width", "model.args.width", base, f"channels {', '.join(map(str, ws))}: doubling, capped at {cap}")
        self.decide("width cap", "model.args.max_width", cap, "bounds parameters and memory of the deep levels")
        if self.restore:
            self.decide(
                "norm",
                "model.args.norm",
                "none",
                f"none (CARE's): instance norm would erase each patch's intensity level, which a restoration must "
                f"reproduce; linear head with {f.num_classes} output channel(s), one per target channel",
            )
        else:
            self.decide("norm", "model.args.norm", "instance", "instance norm: batch statistics of 2 patches are noise")
        self.decide("activation", "model.args.activation", "leaky_relu", "leaky ReLU keeps gradients on dead units")
        self.decide("padding", "model.args.padding", "same", "same padding: any patch the pooling divides is legal")
        chosen_batch = self.decide(
            "batch",
            "train.batch_size",
            batch,
            f"{measured.seconds:.2f} s per step of 2 measured on this {m.device}; as many patches as fit "
            f"{step_budget:.2f} s per step (the budget buys about {self.total_steps_target} steps), at least 2, at "
            f"most {batch_cap(self.patch)} ({BATCH_DATA_SHARE:.0%} of the dataset's voxels)",
        )
        self.batch = int(chosen_batch)
        self.step_seconds = per_sample * self.batch

    def instance_target(self) -> bool:
        """Instance masks train interior/boundary classes (decided once, recorded by ``target``)."""
        if not hasattr(self, "_instance_target"):
            f = self.f
            if f.mask_kind == "instances":
                why = (
                    f"instance labels ({f.instances_per_image:g} objects per image): the network learns background, "
                    "interior and boundary, and predict splits objects by a seeded watershed from the interiors, so "
                    "touching objects come out separate (a distance map would need a regression head)"
                )
                value = self.decide("target", "data.target", "boundary", why)
            else:
                value = self.decide("target", "data.target", "classes", f"class masks ({f.num_classes} classes)")
            self._instance_target = value == "boundary"
        return self._instance_target

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
            self.decide(
                "loss",
                "restore.loss",
                "l1",
                "L1 (CARE's): robust to outliers, sharper than MSE; PSNR/SSIM are validated (the best epoch has "
                "the highest PSNR)",
            )
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
        held_out = 0.2 * self.f.total_voxels if self.f.num_images > 1 else self.f.total_voxels
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
        self.decide("schedule", "train.schedule", "poly", "polynomial decay (power 0.9) to zero at the last step")

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

    def split(self) -> None:
        n = self.f.num_images
        if n < 2:
            self.decide("validation", "data.val_fraction", 0.2, "one image: patches of it validate (no held-out image)")
        else:
            self.decide(
                "validation",
                "data.val_fraction",
                0.2,
                f"{max(1, round(n * 0.2))} of {n} images held out; the split is written to split.json",
            )
