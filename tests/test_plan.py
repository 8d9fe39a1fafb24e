"""The planner's rules on synthetic facts (no images, a formula for the step time)."""

from __future__ import annotations

import math

import pytest

from unetkit.errors import ConfigError
from unetkit.plan import DataFacts, Machine, Plan, StepCost, load_plan, parse_duration, plan_training
from unetkit.plan.topology import fit_patch, plan_topology, target_spacing

CPU = Machine("cpu", "test cpu", 2, 24.0)
GPU = Machine("cuda", "test gpu", 16, 80.0)


def linear_timer(seconds_per_mvoxel: float = 2.0, bytes_per_voxel: float = 0.0):
    calls = []

    def timer(args, patch, batch, channels_last=False):
        calls.append((dict(args), tuple(patch), batch))
        v = batch * math.prod(patch)
        return StepCost(seconds_per_mvoxel * v / 1e6, int(bytes_per_voxel * v))

    timer.calls = calls  # type: ignore[attr-defined]
    return timer


def grey2d(**kw) -> DataFacts:
    base = dict(
        num_images=30, spatial_dims=2, in_channels=1, image_dtype="uint8", shapes=((512, 512),) * 30,
        num_classes=2, class_frequencies=(0.22, 0.78), mask_kind="classes",
        intensity={"min": [0.0], "max": [255.0]},
    )  # fmt: skip
    base.update(kw)
    return DataFacts(**base)


def aniso3d(**kw) -> DataFacts:
    base = dict(
        num_images=4, spatial_dims=3, in_channels=1, image_dtype="uint16", shapes=((30, 256, 256),) * 4,
        spacings=((50.0, 4.0, 4.0),) * 4, num_classes=2, class_frequencies=(0.3, 0.7), mask_kind="classes",
        intensity={"min": [0.0], "max": [4000.0]},
    )  # fmt: skip
    base.update(kw)
    return DataFacts(**base)


def test_isotropic_2d_grey():
    plan = plan_training(grey2d(), CPU, linear_timer(), budget_minutes=30)
    o = plan.overrides()
    assert o["model.name"] == "unet2d"
    assert o["model.args.padding"] == "same"
    assert all(p == [2, 2] for p in o["model.args.pool_sizes"])
    assert all(k == [3, 3] for k in o["model.args.kernel_sizes"])
    assert len(o["model.args.kernel_sizes"]) == o["model.args.depth"] + 1
    patch = o["data.patch_size"]
    divisor = 2 ** o["model.args.depth"]
    assert all(p % divisor == 0 and p <= 512 for p in patch)
    assert o["data.normalization"] == "zscore"
    assert o["train.loss"] == "dice_ce"
    assert o["augment.rotate.degrees"] == [-180.0, 180.0]
    assert o["train.batch_size"] >= 2
    assert o["train.max_minutes"] == 30
    steps = o["train.epochs"] * o["train.iterations_per_epoch"]
    step_s = 2.0 * o["train.batch_size"] * math.prod(patch) / 1e6
    assert steps * step_s <= 30 * 60  # the schedule fits the budget


def test_budget_buys_patch_and_steps():
    small = plan_training(grey2d(), CPU, linear_timer(), budget_minutes=2).overrides()
    large = plan_training(grey2d(), CPU, linear_timer(), budget_minutes=120).overrides()
    vox = lambda o: math.prod(o["data.patch_size"]) * o["train.batch_size"]  # noqa: E731
    assert vox(small) < vox(large)


def test_rgb_8bit():
    o = plan_training(grey2d(in_channels=3), CPU, linear_timer(), budget_minutes=10).overrides()
    assert o["data.normalization"] == "range"


def test_ct_like_hounsfield():
    facts = aniso3d(
        spacings=((1.0, 0.8, 0.8),) * 4, image_dtype="int16", intensity={"min": [-1024.0], "max": [2000.0]},
        foreground_intensity={"p0.5": [-100.0], "p99.5": [300.0], "mean": [60.0], "std": [40.0]},
    )  # fmt: skip
    plan = plan_training(facts, CPU, linear_timer(), budget_minutes=10)
    assert plan.overrides()["data.normalization"] == "ct"
    assert "Hounsfield" in dict((r[0], r[2]) for r in plan.rows())["normalisation"]


def test_anisotropic_3d_topology():
    plan = plan_training(aniso3d(), CPU, linear_timer(0.5), budget_minutes=30)
    o = plan.overrides()
    assert o["model.name"] == "unet3d"
    pools, kernels = o["model.args.pool_sizes"], o["model.args.kernel_sizes"]
    assert pools[0][0] == 1 and pools[0][1:] == [2, 2]  # the coarse axis is not pooled first
    assert kernels[0] == [1, 3, 3]
    rows = dict((r[0], r[2]) for r in plan.rows())
    assert "--dims 2" in rows["dimensionality"]
    assert o["augment.rotate.axis"] == 0


def test_dims_2_trains_slices():
    o = plan_training(aniso3d(), CPU, linear_timer(), budget_minutes=5, dims=2).overrides()
    assert o["model.name"] == "unet2d"
    assert o["data.slice_axis"] == 0
    assert len(o["data.patch_size"]) == 2


def test_target_spacing_rule():
    assert target_spacing([(1.0, 1.0, 1.0), (2.0, 1.0, 1.0)])[1] is None
    spacing, axis = target_spacing([(5.0, 1.0, 1.0), (3.0, 1.0, 1.0), (4.0, 0.9, 0.9)])
    assert axis == 0 and spacing[0] < 4.0  # a lower percentile than the median on the anisotropic axis


def test_resampling_decided_only_when_spacings_differ():
    same = plan_training(aniso3d(), CPU, linear_timer(), budget_minutes=5).overrides()
    assert same["data.target_spacing"] is None
    mixed = aniso3d(spacings=((50.0, 4.0, 4.0), (40.0, 4.0, 4.0), (50.0, 5.0, 5.0), (60.0, 4.0, 4.0)))
    o = plan_training(mixed, CPU, linear_timer(), budget_minutes=5).overrides()
    assert o["data.target_spacing"] is not None and len(o["data.target_spacing"]) == 3


def test_override_wins_and_table_says_so():
    fixed = {"data.patch_size": 96, "train.batch_size": 3, "train.loss": "focal"}
    plan = plan_training(grey2d(), CPU, linear_timer(), budget_minutes=10, fixed=fixed)
    o = plan.overrides()
    assert o["data.patch_size"] == 96 and o["train.batch_size"] == 3 and o["train.loss"] == "focal"
    rows = {r[0]: r for r in plan.rows()}
    assert rows["batch"][2].startswith("set by you")
    assert rows["loss"][2].startswith("set by you")
    assert not rows["normalisation"][2].startswith("set by you")


def test_touching_instances_choose_weighted_ce():
    o = plan_training(
        grey2d(mask_kind="instances", touching_instances=0.4, instances_per_image=120),
        CPU,
        linear_timer(),
        budget_minutes=5,
    ).overrides()
    assert o["train.loss"] == "weighted_ce" and o["data.weight_map.enabled"] is True
    assert o["data.target"] == "boundary"


def test_rare_class_oversamples_foreground():
    o = plan_training(grey2d(class_frequencies=(0.997, 0.003)), CPU, linear_timer(), budget_minutes=5).overrides()
    assert o["data.foreground_fraction"] > 0.5


def test_tiny_dataset_batch_is_two_and_capped():
    o = plan_training(grey2d(num_images=1, shapes=((64, 64),)), CPU, linear_timer(), budget_minutes=5).overrides()
    assert o["train.batch_size"] == 2
    assert all(p <= 64 for p in o["data.patch_size"])


def test_gpu_memory_bounds_patch():
    roomy = plan_training(aniso3d(shapes=((200, 400, 400),) * 4, spacings=((1.0, 1.0, 1.0),) * 4), GPU,
                          linear_timer(0.01, 1000), budget_minutes=60).overrides()  # fmt: skip
    tight = plan_training(aniso3d(shapes=((200, 400, 400),) * 4, spacings=((1.0, 1.0, 1.0),) * 4), GPU,
                          linear_timer(0.01, 200_000), budget_minutes=60).overrides()  # fmt: skip
    assert math.prod(tight["data.patch_size"]) < math.prod(roomy["data.patch_size"])


def test_plan_round_trips_through_yaml(tmp_path):
    plan = plan_training(grey2d(), CPU, linear_timer(), budget_minutes=3, fixed={"train.lr": 0.01})
    path = plan.save(tmp_path / "plan.yaml")
    again = load_plan(path)
    assert again.overrides() == plan.overrides()
    assert again.rows() == plan.rows()


def test_bad_plan_files(tmp_path):
    (tmp_path / "x.yaml").write_text("a: 1\n")
    with pytest.raises(ConfigError, match="not a unetkit plan"):
        load_plan(tmp_path / "x.yaml")
    with pytest.raises(ConfigError, match="not found"):
        load_plan(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError):
        Plan.from_dict({"format": "unetkit-plan", "format_version": 99})


def test_durations():
    assert parse_duration("30m") == 30 and parse_duration("1.5h") == 90 and parse_duration("90s") == 1.5
    for bad in ("soon", "-3m", "0"):
        with pytest.raises(ConfigError):
            parse_duration(bad)


def test_topology_helpers():
    assert plan_topology((8, 8)).depth == 1  # the feature map stays >= 4
    size, topo = fit_patch((100, 100))
    assert all(s % d == 0 for s, d in zip(size, topo.divisor, strict=True))


def test_in_plane_rotation_about_one_axis():
    import torch

    from unetkit.augment.config import AugmentConfig
    from unetkit.augment.spatial import sample_spatial

    cfg = AugmentConfig.model_validate({"rotate": {"p": 1.0, "axis": 0}})
    assert cfg.rotate.range_for(3) == (-180.0, 180.0)
    params = sample_spatial(cfg, 3, 16, torch.Generator().manual_seed(0))
    assert (params.angles[:, 1:] == 0).all() and (params.angles[:, 0] != 0).any()


def test_thin_separating_gaps_choose_dice_ce_and_say_why():
    plan = plan_training(grey2d(objects_per_image=80, separated_objects=0.9), CPU, linear_timer(), budget_minutes=5)
    o = plan.overrides()
    # measured on ISBI: the weight map made the borders thicker and learning slower (docs/benchmarks.md)
    assert o["train.loss"] == "dice_ce" and "data.weight_map.enabled" not in o
    why = next(d.why for d in plan.decisions if d.choice == "loss")
    assert "thin borders" in why and "weighted_ce" in why
    o = plan_training(
        grey2d(objects_per_image=80, separated_objects=0.1), CPU, linear_timer(), budget_minutes=5
    ).overrides()
    assert o["train.loss"] == "dice_ce"


def test_step_costs_are_cached_per_machine_and_network(tmp_path):
    import json

    from unetkit.plan.machine import StepCost, cached_timer

    calls = []

    def timer(args, patch, batch, channels_last=False):
        calls.append((tuple(patch), batch))
        return StepCost(0.25 * batch, 0)

    file = tmp_path / "steps.json"
    timed = cached_timer(timer, CPU, file)
    assert timed({"width": 8}, (64, 64), 2) == StepCost(0.5, 0)
    assert timed({"width": 8}, (64, 64), 2) == StepCost(0.5, 0) and len(calls) == 1  # the second from the cache
    timed({"width": 16}, (64, 64), 2)
    timed({"width": 8}, (64, 64), 3)
    assert len(calls) == 3  # another network or batch is measured
    other = Machine("cpu", "another cpu", 4, 8.0)
    cached_timer(timer, other, file)({"width": 8}, (64, 64), 2)
    assert len(calls) == 4  # another machine too
    entries = json.loads(file.read_text())
    for e in entries.values():
        e["at"] -= 8 * 86400  # a week and a day old: measured again
    file.write_text(json.dumps(entries))
    timed({"width": 8}, (64, 64), 2)
    assert len(calls) == 5
    file.write_text("{not json")
    assert timed({"width": 8}, (64, 64), 2) == StepCost(0.5, 0) and len(calls) == 6  # a corrupt cache is ignored
    assert json.loads(file.read_text())  # and rewritten
    timed({"width": 8}, (64, 64), 2, channels_last=True)
    timed({"width": 8}, (64, 64), 2, channels_last=True)
    assert len(calls) == 7  # the other memory layout is another measurement, cached as well


def test_a_planned_budget_is_filled_unless_you_set_the_epochs():
    planned = plan_training(grey2d(), CPU, linear_timer(), budget_minutes=10)
    assert planned.overrides()["train.fill_budget"] is True
    yours = plan_training(grey2d(), CPU, linear_timer(), budget_minutes=10, fixed={"train.epochs": 3})
    assert yours.overrides()["train.fill_budget"] is False
    assert "you set the epochs" in {r[0]: r for r in yours.rows()}["budget fill"][2]


def test_two_or_three_images_all_train_and_the_table_says_how_to_hold_one_out():
    for n, share in ((1, 0.2), (3, 0.0), (4, 0.2)):
        plan = plan_training(grey2d(num_images=n, shapes=((256, 256),) * n), CPU, linear_timer(), budget_minutes=5)
        assert plan.overrides()["data.val_fraction"] == share
    why = next(d.why for d in plan_training(grey2d(num_images=3, shapes=((256, 256),) * 3), CPU, linear_timer(),
                                            budget_minutes=5).decisions if d.choice == "validation")  # fmt: skip
    assert "all of them train" in why and "--fold" in why


def layout_timer(channels_last_speedup: float):
    """Time proportional to the voxels; channels-last ``channels_last_speedup`` times faster."""
    base = linear_timer(0.5)

    def timer(args, patch, batch, channels_last=False):
        cost = base(args, patch, batch)
        timer.layouts.append(channels_last)  # type: ignore[attr-defined]
        return StepCost(cost.seconds / channels_last_speedup, 0) if channels_last else cost

    timer.layouts = []  # type: ignore[attr-defined]
    return timer


def test_layout_is_channels_last_only_where_a_step_measures_clearly_faster():
    from unetkit.plan.planner import CHANNELS_LAST_GAIN

    faster = layout_timer(1.5)
    plan = plan_training(aniso3d(), CPU, faster, budget_minutes=30)
    rows = {c: (v, w) for c, v, w in plan.rows()}
    assert plan.overrides()["train.channels_last"] is True
    assert "1.50x" in rows["channels-last"][1] and rows["channels-last"][1].endswith("channels-last")
    # timed at the batch trained, and the schedule counts the channels-last step
    batch = plan.overrides()["train.batch_size"]
    step = linear_timer(0.5)({}, plan.overrides()["data.patch_size"], batch).seconds
    assert f"a step of {batch} took {step / 1.5:.2f} s channels-last" in rows["channels-last"][1]
    assert f"steps of {step / 1.5:.2f} s fit" in rows["epochs"][1]
    # within the margin (one noisy timing) or slower: the default layout
    for speedup in (CHANNELS_LAST_GAIN * 0.95, 0.8):
        plan = plan_training(aniso3d(), CPU, layout_timer(speedup), budget_minutes=30)
        assert plan.overrides()["train.channels_last"] is False
        assert "channels-first, since" in {c: w for c, _, w in plan.rows()}["channels-last"]
    # the user's layout wins, and then only it is timed
    mine = layout_timer(0.8)
    plan = plan_training(aniso3d(), CPU, mine, budget_minutes=30, fixed={"train.channels_last": True})
    assert plan.overrides()["train.channels_last"] is True and set(mine.layouts) == {True}
    assert {d.choice: d.source for d in plan.decisions}["channels-last"] == "you"


def test_the_step_timer_times_both_layouts():
    """The real timer builds the network in the layout asked for and times a step (no cache)."""
    from unetkit.plan import measure_step

    timer = measure_step(CPU, repeats=1, cache=False)
    args = dict(spatial_dims=3, in_channels=1, num_classes=2, depth=1, width=2)
    for channels_last in (False, True):
        cost = timer(args, (8, 8, 8), 2, channels_last=channels_last)
        assert 0 < cost.seconds < 30 and cost.peak_bytes == 0
