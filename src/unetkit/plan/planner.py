"""The planner: from a dataset's facts, the machine and a time budget to every training choice, explained.

Each rule below decides one thing and says why in one line; a value the user set (flag, ``--set`` or a
config key) wins over the rule and the table says "set by you". The order matters only where a choice
depends on an earlier one (the patch on the spacing, the schedule on the patch).

    facts -> dimensionality -> target spacing -> topology + patch + batch (measured step time)
          -> normalisation -> loss and sampling -> schedule -> augmentation -> split

A restoration dataset (``facts.task == "restore"``) takes the same steps with its own rules where they
differ: no resampling, a shallow, wide network on small patches (:data:`RESTORE_PATCH`), a linear head with the
target's channels and no normalisation layers, percentile scaling of inputs and targets (CARE), the MSE loss
(on the hidden pixels for Noise2Void; pix2pix's L1 under ``--gan``), uniform random patches.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from unetkit.errors import ConfigError, DataError
from unetkit.plan.decisions import Plan
from unetkit.plan.facts import DataFacts
from unetkit.plan.machine import Machine, StepTimer
from unetkit.plan.recipe import OVERHEAD, RecipeRules
from unetkit.plan.topology import ANISOTROPY_RATIO, MIN_FEATURE, Topology, fit_patch, target_spacing, widths

#: Default budgets (minutes) when the user gives none: what a first useful model costs on each device.
DEFAULT_BUDGET = {"cpu": 30.0, "cuda": 60.0}
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
#: Restoration (CARE, Noise2Void) is local: a pixel's clean value depends on its neighbourhood, not on the whole
#: image, so it trains a shallow, wide U-Net on small patches, many per step, and spends the budget on updates
#: rather than on context. Measured on ISBI 2012 at 5 CPU minutes (docs/benchmarks.md, restoration): depth 6,
#: patch 320, batch 2 reached 21.4 dB; depth 3, patch 128: 21.5; depth 2, width 32, patch 64, batch 16: 21.7.
#: Patch edge in voxels of the finest spacing (coarser axes get proportionally fewer), depth, first width, batch.
RESTORE_PATCH = {2: 64, 3: 32}
RESTORE_DEPTH = 2
RESTORE_WIDTH = 32
RESTORE_BATCH = 16
#: Where halving that batch shortens a step by more than this share (the patches' compute is over half of the
#: step: a compute-bound step, as on a CPU, where it saves about half), the plan halves it: at a fixed budget
#: the extra updates win (ISBI 2012, 5 CPU minutes: batch 16 21.78 dB, 8 21.84, 4 21.83). A GPU's small steps
#: cost mostly their fixed overhead, so there CARE's 16 costs few updates.
RESTORE_HALVE_SAVING = 0.25
#: Train channels-last (NHWC/NDHWC) where a measured step of the planned batch takes at most 1 / this of the
#: default layout's. Neither is faster everywhere: on a 2-core AMD EPYC, planned 3D runs trained 1.33-1.44x
#: faster channels-last, a planned 2D segmentation 0.75x as fast (docs/benchmarks.md, "The memory layout"); the
#: margin keeps one noisy timing from flipping it.
CHANNELS_LAST_GAIN = 1.1


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


class _Planner(RecipeRules):
    """The rules in order (:meth:`run`); the shape of the network and its input here, the training recipe in
    :class:`~unetkit.plan.recipe.RecipeRules`."""

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
        self.plan = Plan(facts=facts.to_dict(), machine=machine.to_dict())

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
        default_width = RESTORE_WIDTH if self.restore else 32 if cuda else (16 if self.spatial == 2 else 8)
        base = int(self.fixed.get("model.args.width", default_width))
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

        # the memory layout steps are timed in: the user's, else the default until the batch is chosen (below)
        layout_fixed = "train.channels_last" in self.fixed
        channels_last = bool(self.fixed["train.channels_last"]) if layout_fixed else False  # (YAML-parsed)
        user_patch = self.fixed.get("data.patch_size")
        if user_patch is not None:
            sizes = [int(user_patch)] * self.spatial if isinstance(user_patch, int) else [int(p) for p in user_patch]
            patch, topo = fit_patch(sizes, spacing)
            patch = tuple(sizes)  # the user's patch (the training loop rounds it to legal)
        elif self.restore:
            # restoration: a small patch in physical proportion (never larger than the image), a shallow net
            finest = min(spacing)
            edge = RESTORE_PATCH[self.spatial]
            sizes = [max(4, min(int(n), round(edge * finest / s))) for n, s in zip(shape, spacing, strict=True)]
            patch, topo = fit_patch(sizes, spacing, max_depth=RESTORE_DEPTH)
            if topo.depth == 0:
                raise DataError(
                    f"images of {'x'.join(str(round(n)) for n in shape)} (the median) are too small for a U-Net: "
                    f"it pools an axis only where the feature map keeps at least {MIN_FEATURE} pixels, so a "
                    f"restoration needs images of at least {2 * MIN_FEATURE} pixels along its finest axes",
                    fix="give larger images (whole frames rather than crops)",
                )
        else:
            # The median image (in physical proportion), shrunk along its longest physical axis until a step
            # of batch 2 fits the time (and GPU memory) budget. Step cost grows with the voxels, so it is
            # measured once at a reference size and extrapolated, then measured again at the choice.
            patch, topo = fit_patch([max(min_patch, n) for n in shape], spacing)
            ref_patch, ref_topo = fit_patch([min(n, 64 if self.spatial == 3 else 128) for n in patch], spacing)
            ref = self.timer(self._model_args(ref_topo, base, cap), ref_patch, 2, channels_last=channels_last)
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
        measured = self.timer(model_args, self.patch, 2, channels_last=channels_last)
        # batch: 2 at least; larger while a step still fits the time budget and the batch covers at most 5% of
        # the data (bigger batches only repeat the same voxels).
        batch = 2
        per_sample = measured.seconds / 2
        restore_batch, saving = RESTORE_BATCH, None
        halvable = batch_cap(self.patch) > RESTORE_BATCH // 2 and per_sample * (RESTORE_BATCH // 2) <= step_budget
        if self.restore and "train.batch_size" not in self.fixed and halvable:
            # a line through the step times of 2, 8 and 16 patches: a fixed cost plus one per patch (one noisy
            # timing cannot flip the choice); not timed where the step budget stops the batch short of 8 anyway
            # (a 3D restoration on a CPU: its two larger steps cost a minute of planning for nothing)
            sizes = [2, RESTORE_BATCH // 2, RESTORE_BATCH]
            seconds = [measured.seconds] + [
                self.timer(model_args, self.patch, b, channels_last=channels_last).seconds for b in sizes[1:]
            ]
            per_patch, fixed_cost = np.polyfit(sizes, seconds, 1)
            per_patch, fixed_cost = max(float(per_patch), 0.0), max(float(fixed_cost), 0.0)
            full = fixed_cost + per_patch * RESTORE_BATCH
            saving = per_patch * (RESTORE_BATCH // 2) / full if full > 0 else 0.0
            if saving > RESTORE_HALVE_SAVING:
                restore_batch //= 2
        most = min(restore_batch, batch_cap(self.patch)) if self.restore else batch_cap(self.patch)
        while batch < most and per_sample * (batch + 1) <= step_budget:
            batch += 1
        name = "unet2d" if self.spatial == 2 else "unet3d"
        self.decide("network", "model.name", name, f"a {self.spatial}D U-Net whose shape the plan sets below")
        if user_patch is not None:
            why_patch = ""
        elif self.restore:
            why_patch = (
                f"restoration is local: {RESTORE_PATCH[self.spatial]} voxels of the finest spacing per axis (CARE's "
                "patch), never larger than the image; many small patches per step beat few large ones"
            )
        else:
            why_patch = (
                "the median image after resampling, shrunk along its longest physical axis until a step fits the budget"
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
        why_depth = "one level per pooling"
        if self.restore:
            why_depth += f", at most {RESTORE_DEPTH} for a restoration (CARE's): its receptive field is local"
        self.decide("depth", "model.args.depth", topo.depth, why_depth)
        ws = widths(base, topo.depth, cap)
        why_width = f"channels {', '.join(map(str, ws))}: doubling, capped at {cap}"
        if self.restore:
            why_width += f"; a restoration starts at {RESTORE_WIDTH} (CARE's): a shallow net needs wide levels"
        self.decide("width", "model.args.width", base, why_width)
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
        if self.restore:
            # Measured on ISBI 2012 with Poisson-Gaussian noise, 5 CPU minutes (docs/restoration.md): the paper's
            # He-normal weights left the output smoother than the clean image and cost 0.06-0.2 dB.
            self.decide(
                "initialisation",
                "model.args.init",
                "pytorch",
                "PyTorch's layer default (uniform within 1/sqrt(fan_in)): a regression trains faster from it than "
                "from the paper's He-normal weights (measured: docs/restoration.md)",
            )
        else:
            self.decide("initialisation", "model.args.init", "he", "the paper's He-normal weights, zero biases")
        self.decide("padding", "model.args.padding", "same", "same padding: any patch the pooling divides is legal")
        measured_why = f"{measured.seconds:.2f} s per step of 2 measured on this {m.device}"
        if self.restore:
            if saving is None:
                halve = ""
            elif saving > RESTORE_HALVE_SAVING:
                halve = (f"; halving them shortens a step by {saving:.0%} here, so {restore_batch}: at a fixed "
                         "budget the extra updates win")  # fmt: skip
            else:
                halve = (f"; halving them would shorten a step by only {saving:.0%} here (its fixed cost dominates), "
                         "so CARE's batch")  # fmt: skip
            why_batch = (
                f"{measured_why}; CARE's {RESTORE_BATCH} patches per step{halve}, fewer only where a step would pass "
                f"{step_budget:.2f} s or the batch {BATCH_DATA_SHARE:.0%} of the dataset's voxels "
                f"({batch_cap(self.patch)} patches): small steps, so the budget buys many (counted in the schedule row)"
            )
        else:
            why_batch = (
                f"{measured_why}; as many patches as fit {step_budget:.2f} s per step (the budget buys about "
                f"{self.total_steps_target} steps), at least 2, at most {batch_cap(self.patch)} "
                f"({BATCH_DATA_SHARE:.0%} of the dataset's voxels)"
            )
        chosen_batch = self.decide("batch", "train.batch_size", batch, why_batch)
        self.batch = int(chosen_batch)
        self.step_seconds = per_sample * self.batch
        self._layout(model_args, layout_fixed, channels_last)

    def _layout(self, model_args: dict[str, Any], fixed: bool, channels_last: bool) -> None:
        """The memory layout: the user's, else channels-last where a step of the chosen batch measures clearly
        faster in it (timed at the batch trained: a short step of 2 times too noisily to tell); the schedule's
        step time follows the layout chosen."""
        if fixed:
            self.decide("channels-last", "train.channels_last", channels_last, "")
            return
        first = self.timer(model_args, self.patch, self.batch).seconds
        last = self.timer(model_args, self.patch, self.batch, channels_last=True).seconds
        faster = last * CHANNELS_LAST_GAIN <= first
        if faster:
            self.step_seconds *= last / max(first, 1e-9)
        why = (
            f"a step of {self.batch} took {last:.2f} s channels-last, {first:.2f} s channels-first on this "
            f"{self.m.device} ({first / max(last, 1e-9):.2f}x): "
            + (
                "channels-last"
                if faster
                else f"channels-first, since channels-last is not {CHANNELS_LAST_GAIN:g}x faster"
            )
        )
        self.decide("channels-last", "train.channels_last", faster, why)

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
