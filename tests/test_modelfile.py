from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from unetkit import ModelFileError, create_model, load_model, read_description, save_model
from unetkit.errors import UnetkitError
from unetkit.modelfile import FORMAT_VERSION


@pytest.mark.parametrize(("name", "shape"), [("unet2d_small", (2, 1, 32, 32)), ("unet3d_small", (1, 1, 16, 16, 16))])
def test_save_load_bit_identical(tmp_path: Path, name: str, shape: tuple[int, ...]) -> None:
    model = create_model(name, width=4, num_classes=3)
    # train-mode batch-norm statistics must travel too
    model.train()
    model(torch.randn(*shape))
    model.eval()
    x = torch.randn(*shape)
    path = save_model(
        tmp_path / "m.safetensors", model, class_names=["bg", "cell", "border"],
        normalization={"kind": "zscore", "params": {"mean": 0.5, "std": 0.2}}, tile_size=[32, 32],
        provenance={"dataset": "abc123"},
    )  # fmt: skip
    loaded = load_model(path)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))
    desc = loaded.description
    assert desc.class_names == ["bg", "cell", "border"]
    assert desc.normalization.kind == "zscore" and desc.normalization.params["std"] == 0.2
    assert desc.architecture.preset == name and desc.architecture.cls == "UNet"
    assert len(desc.class_colours) == 3 and desc.format_version == FORMAT_VERSION
    assert not loaded.training


def test_no_pickle_in_file(tmp_path: Path) -> None:
    path = save_model(tmp_path / "m.safetensors", create_model("unet2d_small", width=2))
    data = path.read_bytes()
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + n])
    assert json.loads(header["__metadata__"]["unetkit"])["architecture"]["class"] == "UNet"
    assert b"\x80\x04" not in data[: 8 + n]


def test_newer_format_rejected(tmp_path: Path) -> None:
    model = create_model("unet2d_small", width=2)
    path = save_model(tmp_path / "m.safetensors", model)
    desc = json.loads(read_description(path).model_dump_json(by_alias=True))
    desc["format_version"] = FORMAT_VERSION + 1
    tensors = {k: v.contiguous() for k, v in model.state_dict().items()}
    newer = tmp_path / "newer.safetensors"
    save_file(tensors, str(newer), metadata={"unetkit": json.dumps(desc)})
    with pytest.raises(ModelFileError, match="newer unetkit"):
        load_model(newer)


def test_truncated_and_foreign_files(tmp_path: Path) -> None:
    path = save_model(tmp_path / "m.safetensors", create_model("unet2d_small", width=2))
    data = path.read_bytes()
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(data[: len(data) - 100])
    with pytest.raises(ModelFileError, match="truncated"):
        load_model(cut)
    cut.write_bytes(data[:50])
    with pytest.raises(ModelFileError, match="truncated"):
        load_model(cut)
    empty = tmp_path / "empty.safetensors"
    empty.write_bytes(b"")
    with pytest.raises(ModelFileError, match="empty"):
        load_model(empty)
    foreign = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(3)}, str(foreign))
    with pytest.raises(ModelFileError, match="not a unetkit model file"):
        load_model(foreign)
    pickled = tmp_path / "model.pt"
    torch.save({"w": torch.zeros(3)}, pickled)
    with pytest.raises(ModelFileError, match="pickle"):
        load_model(pickled)
    text = tmp_path / "notes.safetensors"
    text.write_text("this is not a model at all, just some text that is long enough")
    with pytest.raises(ModelFileError, match="not a safetensors"):
        load_model(text)
    with pytest.raises(ModelFileError, match="no such model file"):
        load_model(tmp_path / "missing.safetensors")


def test_save_is_atomic_and_validates(tmp_path: Path) -> None:
    model = create_model("unet2d_small", width=2)
    path = save_model(tmp_path / "m.safetensors", model)
    before = path.read_bytes()
    with pytest.raises(UnetkitError, match="class_names"):
        save_model(path, model, class_names=["only-one"])
    with pytest.raises(UnetkitError, match="unknown field"):
        save_model(path, model, colour="red")
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.safetensors"]


def test_header_length_starting_with_pickle_byte_is_not_a_pickle(tmp_path: Path) -> None:
    """A safetensors header of 0x..80 bytes starts with 0x80, the pickle opcode: it must still load."""
    model = create_model("unet2d_small", width=2)
    path = save_model(tmp_path / "m.safetensors", model)
    data = path.read_bytes()
    n = int.from_bytes(data[:8], "little")
    header = data[8 : 8 + n].rstrip(b" ")
    target = ((len(header) // 256) + 1) * 256 + 0x80  # low byte 0x80
    crafted = tmp_path / "crafted.safetensors"
    crafted.write_bytes(target.to_bytes(8, "little") + header.ljust(target, b" ") + data[8 + n :])
    assert crafted.read_bytes()[0] == 0x80
    assert torch.equal(load_model(crafted).stem[0].weight, model.stem[0].weight)


@pytest.mark.parametrize("name", ["unet2d_small", "unetr2d_small"])
def test_load_does_not_initialise_the_meta_skeleton(tmp_path: Path, name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The shape check's meta-device network gets no random initialisation (PyTorch's first random op on meta
    costs about a second of every prediction's start-up); networks built for real still get theirs."""
    model = create_model(name)
    save_model(tmp_path / "m.safetensors", model)
    seen: list[str] = []
    for fn in ("kaiming_normal_", "trunc_normal_"):
        real = getattr(torch.nn.init, fn)

        def spy(tensor: torch.Tensor, *a: object, _real=real, **kw: object) -> torch.Tensor:  # type: ignore[no-untyped-def]
            seen.append(tensor.device.type)
            return _real(tensor, *a, **kw)

        monkeypatch.setattr(torch.nn.init, fn, spy)
    loaded = load_model(tmp_path / "m.safetensors")
    assert seen and set(seen) == {"cpu"}
    for (k, a), b in zip(model.state_dict().items(), loaded.state_dict().values(), strict=True):
        assert torch.equal(a, b), k
