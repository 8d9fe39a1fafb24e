"""What differs between tasks, in small objects, chosen in one place (:func:`make_task`).

The training loop (:mod:`unetkit.train.loop`, :mod:`unetkit.train.epoch`) is the same for every task; a task
says what the data and target are, which loss, how a batch is drawn, how validation scores and what the model
file records:

- :class:`SegmentTask`: masks -> classes, the loss table, Dice/IoU, softmax head (unchanged behaviour).
- :class:`RestoreTask`: images -> images, a regression loss, PSNR/SSIM/NRMSE, linear head, the intensity
  scaling of inputs and targets recorded in the model file and inverted at prediction; Noise2Void's blind spot
  for ``restore.self_supervised``; a PatchGAN discriminator for ``restore.gan``
  (:meth:`RestoreTask.adversary`, :mod:`unetkit.train.gan`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from unetkit.config import Config
from unetkit.data.restore import RestoreSample, fit_scaling, load_restore_dataset
from unetkit.data.sampling import PatchSampler, crop_to_output
from unetkit.data.windows import read_window
from unetkit.errors import ConfigError
from unetkit.losses import RestoreLoss, SegmentationLoss, use_weight_map
from unetkit.train.data import prepare_data, slice_split
from unetkit.train.n2v import blind_spot_loss

log = logging.getLogger(__name__)


class SegmentTask:
    """Segmentation: integer masks, the :data:`~unetkit.losses.LOSS_TABLE` loss, Dice/IoU validation."""

    name = "segment"
    score_key = "val_dice"

    def __init__(self, config: Config) -> None:
        self.config = config
        # before any work: may refuse the config
        self.use_weight_map = use_weight_map(config.train.loss, config.data.weight_map.enabled)
        self.loss_fn: Any = SegmentationLoss(config.train.loss, ignore_index=config.data.ignore_index)

    def prepare(self, cache_dir: Path | None) -> Any:
        return prepare_data(
            self.config.data, seed=self.config.train.seed, use_weight_map=self.use_weight_map, cache_dir=cache_dir
        )

    def sampler(self, data: Any, patch: list[int], out_patch: list[int]) -> Any:
        return PatchSampler(
            data.train,
            patch,
            output_size=out_patch,
            foreground_fraction=self.config.data.foreground_fraction,
            ignore_index=self.config.data.ignore_index,
        )

    def batch(self, setup: Any, run: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """``(network input, target, per-pixel weight)`` of one training step, on the training device."""
        device = setup.fabric.device
        batch = setup.sampler.sample(self.config.train.batch_size, run.generator)
        image, mask = batch.image.to(device), batch.mask.to(device)
        weight = batch.weight.to(device) if (self.use_weight_map and batch.weight is not None) else None
        aug = setup.augmenter(image, mask, weight, generator=run.aug_generator)
        target, weight = aug.mask, aug.weight
        if setup.out_patch != setup.patch:
            target = crop_to_output(target, setup.out_patch)
            weight = crop_to_output(weight, setup.out_patch) if weight is not None else None
        return aug.image, target, weight

    def validate(self, setup: Any) -> dict[str, Any]:
        from unetkit.train.validate import scores, validate

        fabric, data = setup.fabric, setup.data
        shard = data.val[fabric.global_rank :: fabric.world_size]
        cm, nll, count = validate(
            setup.raw_model,
            shard,
            num_classes=data.num_classes,
            tile=setup.tile,
            device=fabric.device,
            ignore_index=self.config.data.ignore_index,
            tta=self.config.train.tta,
        )
        if fabric.world_size > 1:
            packed = fabric.all_reduce(
                torch.tensor([*cm.matrix.ravel().tolist(), nll, count], dtype=torch.float64, device=fabric.device),
                reduce_op="sum",
            )
            packed = packed.cpu().numpy()
            k = data.num_classes
            cm.matrix[...] = packed[: k * k].reshape(k, k).astype(cm.matrix.dtype)
            nll, count = float(packed[-2]), int(packed[-1])
        return scores(cm, nll, count, data.class_names)

    def describe(self, data: Any) -> dict[str, Any]:
        """The model-file fields this task adds (beyond tile, spacing, provenance)."""
        description: dict[str, Any] = dict(
            class_names=data.class_names,
            label_mapping=data.label_mapping.to_dict() if data.label_mapping else None,
            normalization=data.normalizer.to_dict(),
        )
        if data.class_colours:
            description["class_colours"] = data.class_colours
        return description

    def provenance(self) -> dict[str, Any]:
        return {"loss": self.config.train.loss, "weight_map": self.use_weight_map}

    def adversary(self, data: Any, out_patch: list[int], fabric: Any, total_steps: int) -> None:
        """Segmentation trains no discriminator."""
        return None


@dataclass
class RestoreData:
    """Normalised restoration samples (inputs and targets scaled) and what the model file records."""

    train: list[RestoreSample]
    val: list[RestoreSample]
    in_channels: int
    num_classes: int  # the output channels (the network's head width)
    spatial_dims: int
    normalizer: Any
    target_scaling: Any
    target_dtype: str
    fingerprint: dict[str, Any] = field(default_factory=dict)
    spacing: tuple[float, ...] | None = None
    target: str = "restore"
    split: dict[str, list[str]] = field(default_factory=dict)


class RestorePatches:
    """Random input/target patch pairs with random flips and 90-degree in-plane rotations (the same on both).

    Shape:
        ``sample(B, generator)`` -> ``image (B, C_in, *P)``, ``target (B, C_out, *P)``.
    """

    def __init__(self, samples: list[RestoreSample], patch: list[int]) -> None:
        self.samples, self.patch = samples, [int(p) for p in patch]

    def sample(self, batch_size: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        def randint(high: int, low: int = 0) -> int:
            return int(torch.randint(low, high, (1,), generator=generator).item())

        images, targets = [], []
        for _ in range(batch_size):
            s = self.samples[randint(len(self.samples))]
            shape = s.image.shape[1:]
            origin = [randint(max(0, n - p) + 1, min(0, n - p)) for n, p in zip(shape, self.patch, strict=True)]
            a = torch.from_numpy(np.ascontiguousarray(read_window(s.image, origin, self.patch)))
            b = torch.from_numpy(np.ascontiguousarray(read_window(s.target, origin, self.patch)))
            flips = [ax + 1 for ax in range(len(self.patch)) if randint(2)]
            if flips:
                a, b = a.flip(flips), b.flip(flips)
            if self.patch[-1] == self.patch[-2] and randint(2):
                a, b = a.transpose(-1, -2), b.transpose(-1, -2)
            images.append(a.float())
            targets.append(b.float())
        return torch.stack(images), torch.stack(targets)


class RestoreTask:
    """Image-to-image restoration (supervised, or Noise2Void with ``restore.self_supervised``)."""

    name = "restore"
    use_weight_map = False

    @property
    def score_key(self) -> str:
        """``val_psnr`` against the clean targets; Noise2Void has none, so its blind-spot ``val_loss``."""
        return "val_loss" if self.config.restore.self_supervised else "val_psnr"

    def __init__(self, config: Config) -> None:
        self.config = config
        r = config.restore
        self.loss_fn = RestoreLoss(r.loss)
        if r.self_supervised and not self.loss_fn.spec.accepts_weight:
            raise ConfigError(
                f"restore.loss={r.loss}: Noise2Void scores the hidden pixels only, which this loss cannot; "
                "use l1, mse or charbonnier"
            )
        if r.self_supervised and r.gan:
            raise ConfigError(
                "restore.gan with restore.self_supervised: the discriminator needs clean targets to tell real "
                "from restored; drop --gan (or --self-supervised and give targets/)"
            )

    def prepare(self, cache_dir: Path | None) -> RestoreData:
        from unetkit.train.data import _split

        cfg, r = self.config.data, self.config.restore
        if cfg.path is None:
            raise ConfigError("data.path: no dataset given; pass DATA to `unetkit train` or set data.path")
        ds = load_restore_dataset(cfg.path, self_supervised=r.self_supervised)
        if cfg.val_path is not None:
            train = list(ds.samples)
            val = list(load_restore_dataset(cfg.val_path, self_supervised=r.self_supervised).samples)
        else:
            train, val = _split(ds.samples, cfg.val_fraction, self.config.train.seed, cfg.fold, cfg.num_folds)  # type: ignore[arg-type,assignment]
        split = {"train": [s.name for s in train], "val": [s.name for s in val]}
        train, val, spatial_dims = slice_split(train, val, cfg.slice_axis, ds.spatial_dims)  # --dims 2
        kind = cfg.normalization if cfg.normalization in ("percentile", "range", "none") else "percentile"
        if cfg.normalization not in ("percentile", "range", "none"):
            log.info("restore: data.normalization=%s is for segmentation; using percentile", cfg.normalization)
        scaling = fit_scaling([s.target for s in train], r.target_normalization)
        # Noise2Void: input and target are the same image, so they must be scaled alike
        normalizer = scaling if r.self_supervised else fit_scaling([s.image for s in train], kind)
        for s in {id(s): s for s in train + val}.values():
            same = s.target is s.image or r.self_supervised
            s.image = np.asarray(normalizer(s.image), np.float32)
            s.target = s.image if same else np.asarray(scaling(s.target), np.float32)
        return RestoreData(
            train=train,  # type: ignore[arg-type]
            val=val,  # type: ignore[arg-type]
            in_channels=ds.in_channels,
            num_classes=ds.out_channels,
            spatial_dims=spatial_dims,
            normalizer=normalizer,
            target_scaling=scaling,
            target_dtype=ds.target_dtype,
            fingerprint={"digest": ds.digest},
            spacing=train[0].spacing if train else None,
            split=split,
        )

    def sampler(self, data: RestoreData, patch: list[int], out_patch: list[int]) -> RestorePatches:
        return RestorePatches(data.train, patch)

    def batch(self, setup: Any, run: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        r = self.config.restore
        image, target = setup.sampler.sample(self.config.train.batch_size, run.generator)
        weight = None
        if r.self_supervised:
            image, weight = blind_spot_batch(image, r.n2v_fraction, r.n2v_radius, run.generator)
        device = setup.fabric.device
        image, target = image.to(device), target.to(device)
        if setup.out_patch != setup.patch:
            target = crop_to_output(target, setup.out_patch)
            weight = crop_to_output(weight, setup.out_patch) if weight is not None else None
        return image, target, weight.to(device) if weight is not None else None

    def validate(self, setup: Any) -> dict[str, Any]:
        from unetkit.infer import Predictor
        from unetkit.metrics import restore_scores

        fabric, data = setup.fabric, setup.data
        model = setup.raw_model
        was_training = model.training
        model.eval()
        r = self.config.restore
        rows = []
        try:
            predictor = Predictor(model, normalization={"kind": "none"}, device=fabric.device, tile=setup.tile,
                                  head="identity", tta=self.config.train.tta)  # fmt: skip
            for i, s in enumerate(data.val[fabric.global_rank :: fabric.world_size]):
                if r.self_supervised:  # no clean target: the blind-spot loss on hidden pixels, a fixed draw each
                    seed = self.config.train.seed + fabric.global_rank + i * fabric.world_size
                    loss, out = blind_spot_loss(predictor.predict_proba, s.image, self.loss_fn, r.n2v_fraction,
                                                r.n2v_radius, seed)  # fmt: skip
                    row = {"loss": loss}
                else:
                    out = predictor.predict_proba(s.image)
                    row = restore_scores(out, s.target, data_range=1.0)
                    row["loss"] = float(np.abs(out - s.target).mean())
                rows.append(row)
                if fabric.is_global_zero and i < PANELS:
                    _panel(setup.out, s, out, row)
        finally:
            model.train(was_training)
        keys = ("loss",) if r.self_supervised else ("loss", "psnr", "ssim", "nrmse")
        if not r.self_supervised and not hasattr(self, "_inputs_said"):
            self._say_inputs(fabric, data.val[fabric.global_rank :: fabric.world_size])
        return _means(fabric, rows, keys, "val_")

    def _say_inputs(self, fabric: Any, val: list[RestoreSample]) -> None:
        """Log, once per run, the validation inputs' scores against their targets, scale-matched
        (:func:`unetkit.metrics.scale_matched`, as ``unetkit evaluate --task restore`` scores them): the figure
        ``val_psnr`` has to beat. Skipped where inputs and targets differ in shape (other channels)."""
        from unetkit.metrics import restore_scores, scale_matched

        self._inputs_said = True
        rows = [restore_scores(scale_matched(s.image, s.target), s.target, data_range=1.0)
                for s in val if s.image.shape == s.target.shape]  # fmt: skip
        if len(rows) != len(val):  # inputs of other channels than the targets: no "before" (alike on every process)
            return
        m = _means(fabric, rows, ("psnr", "ssim"), "")  # a collective: every process takes part
        if fabric.is_global_zero:
            log.info("validation inputs, scale-matched to their targets: PSNR %.2f dB, SSIM %.4f (what val_psnr "
                     "and val_ssim have to beat)", m["psnr"], m["ssim"])  # fmt: skip

    def describe(self, data: RestoreData) -> dict[str, Any]:
        k = data.num_classes
        return dict(
            task="restore",
            class_names=[f"channel_{i}" for i in range(k)],
            class_colours=[(255, 255, 255)] * k,
            normalization=data.normalizer.to_dict(),
            target_normalization={**data.target_scaling.to_dict(), "dtype": data.target_dtype},
        )

    def provenance(self) -> dict[str, Any]:
        r = self.config.restore
        out: dict[str, Any] = {"loss": r.loss, "self_supervised": r.self_supervised}
        if r.gan:
            out["gan"] = {"loss": r.gan_loss, "l1_weight": r.gan_l1_weight}
        return out

    def adversary(self, data: RestoreData, out_patch: list[int], fabric: Any, total_steps: int) -> Any:
        """The PatchGAN discriminator of ``restore.gan`` (:mod:`unetkit.train.gan`), else ``None``."""
        if not self.config.restore.gan:
            return None
        from unetkit.train.gan import make_adversary

        return make_adversary(
            self.config, data.in_channels, data.num_classes, data.spatial_dims, out_patch, fabric, total_steps
        )


def _means(fabric: Any, rows: list[dict[str, float]], keys: Sequence[str], prefix: str) -> dict[str, float]:
    """The means of ``keys`` over every process's ``rows`` (NaNs left out of the sums), keyed ``prefix + key``."""
    sums = [float(np.nansum([r[k] for r in rows])) for k in keys] + [float(len(rows))]
    if fabric.world_size > 1:
        sums = fabric.all_reduce(torch.tensor(sums, dtype=torch.float64, device=fabric.device), reduce_op="sum")
        sums = sums.cpu().tolist()
    n = max(sums[-1], 1.0)
    return {f"{prefix}{k}": v / n for k, v in zip(keys, sums[:-1], strict=True)}


#: Validation images whose panel (input | output | target, zoomed crop) each validation writes to RUN/panels/.
PANELS = 2


def _panel(run_dir: Path, sample: RestoreSample, output: np.ndarray, row: dict[str, float]) -> None:
    """``RUN/panels/<name>.png`` of one validation image (rewritten at every validation, so after training it
    shows the last epoch's network); in the normalised intensities training sees."""
    from unetkit.viz.restore import restore_panel

    folder = Path(run_dir) / "panels"
    folder.mkdir(parents=True, exist_ok=True)
    target = None if sample.target is sample.image else sample.target  # Noise2Void: no clean target
    scores = {"PSNR": row["psnr"], "SSIM": row["ssim"]} if target is not None else None
    restore_panel(folder / f"{sample.name.replace('/', '_')}.png", sample.image, output, target, scores=scores)


def blind_spot_batch(
    image: torch.Tensor, fraction: float, radius: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Noise2Void's masking of a batch (:func:`unetkit.train.n2v.blind_spot`)."""
    from unetkit.train.n2v import blind_spot

    return blind_spot(image, fraction, radius, generator)


def make_task(config: Config) -> SegmentTask | RestoreTask:
    """The one place a run's task is chosen (``task: segment | restore``)."""
    return RestoreTask(config) if config.task == "restore" else SegmentTask(config)
