"""``pyinstance train`` end to end, and ``pyinstance index build --model`` with its result."""

import json

import numpy as np
import pytest
import torch

from pyinstance.cli import main
from pyinstance.extraction import extract
from pyinstance.index import InstanceIndex
from pyinstance.models.trained import read_model
from pyinstance.plugins import get_backbone, get_head


def test_train_then_index_build_with_the_model(tiny_config, tmp_path, capsys):
    config = tiny_config(train={"epochs": 2})
    assert main(["train", str(config), "--json", "--no-progress"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["steps"] == 2 and summary["instances"] == 4 and summary["skipped"] == 0
    model_path = tmp_path / "run" / "model.pt"
    assert summary["model"] == str(model_path)
    model = read_model(model_path)
    assert (model.backbone, model.head) == ("tripletnet_small", "gem")
    assert model.info["steps"] == 2

    index_path = tmp_path / "index"
    images = tmp_path / "images"
    args = ["index", "build", str(images), "-o", str(index_path), "--model", str(model_path)]
    args += [
        "--max-side",
        "48",
        "--scales",
        "1",  # the default's 1/2 scale is below tripletnet_small's 32-pixel minimum at 48
        "--query-max-side",
        "48",
        "--windows",
        "none",
        "--engine",
        "torch",
        "--json",
    ]
    assert main([*args, "--no-progress"]) == 0
    capsys.readouterr()
    with InstanceIndex.open(index_path, engine="torch") as index:
        assert index.recipe.model == str(model_path)
        backbone = get_backbone("tripletnet_small", dropout=0.0)
        head = get_head("gem", in_channels=backbone.out_channels)
        model.load_into(backbone, head)
        query = sorted(images.glob("item2/*.png"))[0]
        expected = extract([query], backbone, head, max_side=48, progress=False)[0, 0]
        got = index.describer.queries([query])[0, 0]
        np.testing.assert_allclose(got, expected.numpy(), rtol=1e-5, atol=1e-6)
        untrained = get_backbone("tripletnet_small", dropout=0.0)
        plain = extract([query], untrained, head, max_side=48, progress=False)[0, 0]
        assert not torch.allclose(plain, expected, atol=1e-3)  # the trained weights are used


def test_index_build_refuses_a_network_beside_the_model(tiny_config, tmp_path, capsys):
    config = tiny_config(train={"max_steps": 1})
    assert main(["train", str(config), "--no-progress"]) == 0
    model = tmp_path / "run" / "model.pt"
    args = ["index", "build", str(tmp_path / "images"), "-o", str(tmp_path / "i")]
    assert main([*args, "--model", str(model), "--head", "gem"]) == 2
    assert "drop --head" in capsys.readouterr().err
    (tmp_path / "bogus.pt").write_bytes(b"nope")
    assert main([*args, "--model", str(tmp_path / "bogus.pt")]) == 2
    assert "cannot read" in capsys.readouterr().err


def test_the_command_reports_bad_configs_and_undecodable_images(tiny_config, tmp_path, capsys):
    config = tiny_config(train={"epochz": 1})
    assert main(["train", str(config)]) == 2
    assert "train.epochz" in capsys.readouterr().err
    config = tiny_config(train={"max_steps": 1})
    (tmp_path / "images" / "item0" / "broken.jpg").write_bytes(b"\xff\xd8 broken")
    assert main(["train", str(config), "--no-progress", "--restart"]) == 0
    captured = capsys.readouterr()
    assert "skipped" in captured.err and "broken.jpg" in captured.err
    assert "1 skipped" in captured.out


def test_training_resumes_from_the_output_folder(tiny_config, capsys):
    config = tiny_config(train={"epochs": 3})
    assert main(["train", str(config), "--max-steps", "1", "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["train", str(config), "--no-progress", "--json"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("resumed at step 1")
    assert json.loads(out[out.index("{") :])["steps"] == 3


@pytest.mark.parametrize("content", [b"", b"PK\x03\x04 not a zip"])
def test_a_damaged_model_file_is_a_clear_error(tmp_path, content):
    path = tmp_path / "model.pt"
    path.write_bytes(content)
    with pytest.raises(ValueError, match="model: cannot read"):
        read_model(path)
