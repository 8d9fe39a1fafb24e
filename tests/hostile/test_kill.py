"""SIGKILL in the middle of work: training resumes exactly from its last checkpoint and keeps what it wrote
(metrics, train.log); a killed prediction or evaluation leaves no half-written file under a final name, and
running it again finishes the job and removes the hidden temporaries the kill left."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from _cells import write_cells
from unetkit.cli import main
from unetkit.config import load_config, save_config
from unetkit.data.io import write_image
from unetkit.train import train
from unetkit.train.checkpoint import load_checkpoint

SRC = str(Path(__file__).resolve().parents[2] / "src")


def _dataset(root: Path, n: int = 3) -> Path:
    return write_cells(root, n)


def _run(script: str, *args: str) -> int:
    env = {**os.environ, "PYTHONPATH": SRC}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(script), *args], env=env, check=False).returncode


@pytest.mark.slow  # about 20 s: two short runs and a resume
def test_sigkill_during_training_then_resume_continues_exactly(tmp_path: Path) -> None:
    data = _dataset(tmp_path / "data")
    cfg = load_config(overrides=[
        f"data.path={data}", "model.name=unet2d_small", "model.args.width=4", "model.args.depth=2",
        "data.patch_size=32", "train.batch_size=2", "train.epochs=2", "train.iterations_per_epoch=4",
        "train.checkpoint_every=2", "train.device=cpu",
    ])  # fmt: skip
    save_config(cfg, tmp_path / "c.yaml")
    killed = tmp_path / "killed"
    code = _run(
        """
        import os, signal, sys
        import torch
        torch.set_num_threads(1)
        from unetkit.config import load_config
        from unetkit.train import BaseCallback, train

        class Kill(BaseCallback):
            def on_step(self, *, epoch, step, loss, images_per_s):
                if epoch == 1 and step == 2:  # mid-epoch 2, just after the step-2 checkpoint
                    os.kill(os.getpid(), signal.SIGKILL)

        train(load_config(sys.argv[1]), sys.argv[2], callbacks=[Kill()])
        """,
        str(tmp_path / "c.yaml"),
        str(killed),
    )
    assert code == -9
    log_before = (killed / "train.log").read_text()
    assert "epoch 1: train_loss" in log_before
    with pytest.raises(SystemExit) as exc:
        main(["train", "--resume", str(killed), "--quiet"])
    assert exc.value.code in (0, None)
    rows = list(csv.DictReader((killed / "metrics.csv").open()))
    assert [r["epoch"] for r in rows] == ["1", "2"]
    log_after = (killed / "train.log").read_text()
    assert log_after.startswith(log_before) and "resume   from epoch 2" in log_after  # nothing written is lost
    train(cfg, tmp_path / "straight")
    wa = load_checkpoint(killed / "checkpoints" / "last.safetensors")["model"]
    wb = load_checkpoint(tmp_path / "straight" / "checkpoints" / "last.safetensors")["model"]
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def test_sigkill_during_prediction_leaves_no_half_written_result(tmp_path: Path) -> None:
    from unetkit.modelfile import save_model
    from unetkit.models import create_model

    model = tmp_path / "m.safetensors"
    save_model(model, create_model("unet2d_small", in_channels=1, num_classes=2, width=4, depth=2))
    images = tmp_path / "images"
    for i in range(2):
        write_image(images / f"im{i}.tif", np.random.default_rng(i).random((96, 96)).astype(np.float32))
    out = tmp_path / "out"
    code = _run(
        """
        import os, signal, sys
        from pathlib import Path
        from unetkit.infer.files import PredictProgress, predict_files

        class Kill(PredictProgress):
            def start(self, path, summary, tiles, megapixels):
                self.name = path.name
            def advance(self, tiles):
                if self.name == "im1.tif":  # the second image is half predicted
                    os.kill(os.getpid(), signal.SIGKILL)

        predict_files(sys.argv[1], [sys.argv[2]], sys.argv[3], progress=Kill(), tile=32, device="cpu")
        """,
        str(model),
        str(images),
        str(out),
    )
    assert code == -9
    assert (out / "im0.tif").is_file()  # the finished image is kept
    assert not (out / "im1.tif").exists()  # the killed one never appears under its final name
    with pytest.raises(SystemExit) as exc:  # predicting again into the same folder finishes the job
        main(["predict", str(model), str(images), "--out", str(out), "--tile", "32", "--quiet"])
    assert exc.value.code in (0, None)
    assert sorted(p.name for p in out.iterdir()) == ["im0.tif", "im1.tif"]  # and no hidden temporaries remain


@pytest.mark.parametrize("where", ["prediction", "metrics"])
def test_sigkill_during_evaluate_leaves_no_half_written_file(tmp_path: Path, where: str) -> None:
    """Killed while writing the second prediction, or in the middle of metrics.csv: nothing half-written under a
    final name; evaluating again finishes and leaves no hidden temporaries."""
    from unetkit.modelfile import save_model
    from unetkit.models import create_model

    model = tmp_path / "m.safetensors"
    save_model(model, create_model("unet2d_small", in_channels=1, num_classes=2, width=4, depth=2))
    data = _dataset(tmp_path / "data", n=2)
    out = tmp_path / "eval"
    code = _run(
        """
        import csv, os, signal, sys
        import numpy as np
        from pathlib import Path
        from unetkit.evaluate.run import EvaluateOptions, evaluate_folders
        from unetkit.infer import load_predictor

        where, model, data, out = sys.argv[1], sys.argv[2], Path(sys.argv[3]), Path(sys.argv[4])
        saves = []
        real_save = np.save

        def save(f, arr, **kw):  # the second prediction: half its bytes, then killed
            saves.append(1)
            if where == "prediction" and len(saves) == 2:
                f.write(b"\\x93NUMPY half"); f.flush()
                os.kill(os.getpid(), signal.SIGKILL)
            return real_save(f, arr, **kw)

        class Rows(csv.DictWriter):
            def writerow(self, row):  # metrics.csv: killed after its first (header) row
                written = super().writerow(row)
                if where == "metrics":
                    os.kill(os.getpid(), signal.SIGKILL)
                return written

        np.save = save
        csv.DictWriter = Rows
        predictor = load_predictor(model, device="cpu")
        evaluate_folders(out / "predictions", data / "masks", out, EvaluateOptions(isbi=False, surface=False),
                         image_dir=data / "images", predict=predictor.predict_proba, in_channels=1)
        """,
        where,
        str(model),
        str(data),
        str(out),
    )
    assert code == -9
    hidden = sorted(p.name for p in out.rglob(".*"))
    assert hidden, "the kill left no temporary: it did not hit a write"
    final = [p for p in out.rglob("*") if p.is_file() and not p.name.startswith(".")]
    if where == "prediction":
        assert [p.name for p in final] == ["im0.npy"] and np.load(final[0]).shape == (2, 48, 48)
    else:
        assert not (out / "metrics.csv").exists() and not (out / "summary.json").exists()
    with pytest.raises(SystemExit) as exc:
        main(["evaluate", "--model", str(model), "--images", str(data / "images"), "--truth", str(data / "masks"),
              "--out", str(out), "--no-isbi", "--no-surface", "--quiet", "--device", "cpu"])  # fmt: skip
    assert exc.value.code in (0, None)
    assert sorted(p.name for p in out.rglob(".*")) == []  # no hidden temporaries remain
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    assert sorted(r["name"] for r in rows) == ["im0", "im1"]
    assert (out / "summary.json").is_file() and (out / "report.html").is_file()
