import dataclasses
import pickle
from pathlib import Path

import pytest

from pyinstance.data.augment import Augmentation
from pyinstance.data.composite import SceneComposer
from pyinstance.train import ConfigError, load_config
from pyinstance.train.config import AugmentConfig


def test_a_valid_config_is_read_with_paths_under_its_folder(tiny_config):
    path = tiny_config()
    config = load_config(path)
    assert config.model.backbone == "tripletnet_small"
    assert config.train.epochs == 2
    assert config.augment.sizes == (40, 48)
    assert config.data.source.is_absolute()
    relative = path.parent / "relative.toml"
    relative.write_text('output = "out"\n[data]\nsource = "pics"\n')
    assert load_config(relative).data.source == path.parent / "pics"
    assert load_config(relative).output == path.parent / "out"


@pytest.mark.parametrize(
    ("sections", "message"),
    [
        ({"train": {"epochz": 3}}, "train.epochz"),
        ({"colour": 3}, "colour"),
        ({"train": {"epochs": "3"}}, "train.epochs: expected an integer"),
        ({"train": {"epochs": True}}, "train.epochs: expected an integer"),
        ({"train": {"epochs": 0}}, "train.epochs: expected >= 1"),
        ({"train": {"lr_head": -1.0}}, "train.lr_head"),
        ({"train": {"mining": "sometimes"}}, "train.mining: expected one of"),
        ({"augment": {"flip": 1.5}}, "augment.flip"),
        ({"augment": {"axis_scale": [1.2, 0.8]}}, "augment.axis_scale"),
        ({"augment": {"axis_scale": [1.0]}}, "augment.axis_scale: expected 2 numbers"),
        ({"model": {"head_params": 3}}, "model.head_params"),
        ({"model": {"backbone": ""}}, "model.backbone"),
        ({"train": {"views_per_instance": 1}}, "train.views_per_instance"),
        ({"augment": "none"}, "augment: expected a table"),
        ({"augment": {"scene_perspective": 0.5}}, "augment.scene_perspective: expected"),
        ({"augment": {"scene_aspect": 0.5}}, "augment.scene_aspect: expected"),
        ({"augment": {"scene_scale": [0.5, 1.5]}}, "augment.scene_scale[1]: expected"),
        ({"augment": {"hue": 0.6}}, "augment.hue: expected"),
        ({"augment": {"sizes": [16]}}, "augment.sizes: expected >= 32"),
        ({"augment": {"composite": -0.1}}, "augment.composite: expected"),
    ],
)
def test_bad_values_are_refused_naming_the_key(tiny_config, sections, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[")) as error:
        load_config(tiny_config(**sections))
    assert "config.toml" in str(error.value)


def test_missing_sections_and_files_are_named(tmp_path: Path):
    path = tmp_path / "c.toml"
    path.write_text('output = "out"\n')
    with pytest.raises(ConfigError, match=r"\[data\]"):
        load_config(path)
    path.write_text('[data]\nsource = "x"\n')
    with pytest.raises(ConfigError, match="output"):
        load_config(path)
    path.write_text("output = \n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(path)
    with pytest.raises(FileNotFoundError, match="no-such.toml"):
        load_config(tmp_path / "no-such.toml")


def test_overrides_replace_file_values_and_are_validated(tiny_config):
    path = tiny_config()
    assert load_config(path, **{"train.epochs": 5}).train.epochs == 5
    with pytest.raises(ConfigError, match="train.max_steps"):
        load_config(path, **{"train.max_steps": 0})


def test_an_empty_string_means_none_for_optional_keys(tiny_config):
    config = load_config(tiny_config(model={"trainable_from": ""}))
    assert config.model.trainable_from is None


def test_augment_keys_are_the_augmentation_and_scene_arguments(tiny_config):
    """[augment] offers every argument of the two classes it builds, with their defaults
    (but the gentler training rotation), and builds them with the values read."""
    augmentation = {f.name: f.default for f in dataclasses.fields(Augmentation)}
    scenes = {f"scene_{f.name}": f.default for f in dataclasses.fields(SceneComposer)}
    defaults = {f.name: f.default for f in dataclasses.fields(AugmentConfig)}
    assert defaults == {**augmentation, "rotation": 10.0, "composite": 0.0, **scenes}
    config = load_config(tiny_config(augment={"scene_aspect": 2.0, "hue": 0.1}))
    assert config.augment.scene_composer() == SceneComposer(aspect=2.0)
    assert config.augment.augmentation() == Augmentation(rotation=10.0, hue=0.1, sizes=(40, 48))
    assert pickle.loads(pickle.dumps(config)) == config
