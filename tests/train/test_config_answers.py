"""Config parsing and validation answer by answer: every range's boundary accepted and the
value beyond it refused with the key named at the start of the message, every type's
conversion, the recipe and plain dicts spelt out (parse_config on dicts: no files)."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import pytest

from pyinstance.data.augment import Augmentation
from pyinstance.data.composite import SceneComposer
from pyinstance.train.config import (
    ConfigError,
    DataConfig,
    ModelConfig,
    _fields,
    _plain,
    load_config,
    parse_config,
)

BASE = Path("/base")


def raw(**sections: Any) -> dict[str, Any]:
    """A minimal valid config as parsed TOML, sections updated with ``sections``."""
    config: dict[str, Any] = {"output": "out", "data": {"source": "pics"}}
    for name, values in sections.items():
        if isinstance(values, dict):
            config.setdefault(name, {}).update(values)
        else:
            config[name] = values
    return config


def parse(**sections: Any):
    return parse_config(raw(**sections), base=BASE)


def refused(message: str, **sections: Any) -> None:
    """parse(**sections) raises ConfigError whose message is ``message`` exactly."""
    with pytest.raises(ConfigError) as error:
        parse(**sections)
    assert str(error.value) == message


# -- ranges: the boundary accepted, one step beyond refused, the key named --------------------

AT_LEAST = [
    ("data", "decode_side", 32, 31),
    ("model", "max_side", 32, 31),
    ("train", "epochs", 1, 0),
    ("train", "instances_per_batch", 2, 1),
    ("train", "micro_batch", 1, 0),
    ("train", "hard_from_epoch", 1, 0),
    ("train", "max_steps", 1, 0),
    ("train", "checkpoint_steps", 0, -1),
    ("verification", "candidates", 1, 0),
    ("verification", "views", 1, 0),
    ("verification", "projection", 1, 0),
    ("verification", "hidden", 1, 0),
    ("verification", "batch", 1, 0),
]


@pytest.mark.parametrize(("section", "key", "lowest", "below"), AT_LEAST)
def test_integer_minimums_are_inclusive_and_named(section, key, lowest, below):
    assert getattr(getattr(parse(**{section: {key: lowest}}), section), key) == lowest
    refused(f"{section}.{key}: expected >= {lowest}, got {below}", **{section: {key: below}})


@pytest.mark.parametrize("key", ["lr_backbone", "lr_head", "weight_decay"])
def test_rates_may_be_zero_but_not_negative(key):
    assert getattr(parse(train={key: 0.0}).train, key) == 0.0
    refused(f"train.{key}: expected >= 0, got -1e-09", train={key: -1e-9})


def test_views_per_instance_may_be_one_where_no_anchor_needs_a_positive():
    refused(
        "train.views_per_instance: online mining needs at least 2 views per instance "
        "(a positive for every anchor)",
        train={"views_per_instance": 1},
    )
    assert parse(train={"views_per_instance": 2}).train.views_per_instance == 2
    offline = parse(train={"views_per_instance": 1, "mining": "offline"})
    assert offline.train.views_per_instance == 1
    classifier = parse(train={"views_per_instance": 1, "objective": "classifier"})
    assert classifier.train.views_per_instance == 1
    refused("train.views_per_instance: expected >= 1, got 0", train={"views_per_instance": 0})


@pytest.mark.parametrize(
    ("section", "key", "low", "high", "beyond"),
    [
        ("augment", "composite", 0.0, 1.0, (-0.01, 1.01)),
        ("verification", "validation_fraction", 0.0, 0.5, (-0.01, 0.51)),
    ],
)
def test_closed_intervals_accept_both_ends(section, key, low, high, beyond):
    for value in (low, high):
        assert getattr(getattr(parse(**{section: {key: value}}), section), key) == value
    for value in beyond:
        refused(
            f"{section}.{key}: expected a value in [{low:g}, {high:g}], got {value}",
            **{section: {key: value}},
        )


def test_every_scale_lies_in_a_tenth_to_four():
    assert parse(train={"scales": [0.1, 4, 1.5]}).train.scales == (0.1, 4.0, 1.5)
    refused("train.scales: expected a value in [0.1, 4], got 0.09", train={"scales": [1.0, 0.09]})
    refused("train.scales: expected a value in [0.1, 4], got 4.01", train={"scales": [4.01]})


def test_every_size_is_at_least_32():
    assert parse(augment={"sizes": [32, 64]}).augment.sizes == (32, 64)
    refused("augment.sizes: expected >= 32, got 31", augment={"sizes": [64, 31]})


@pytest.mark.parametrize(
    ("key", "choices"),
    [
        ("objective", ("metric", "classifier", "verification")),
        ("mining", ("online", "offline")),
        ("scheduler", ("cosine", "constant")),
        ("device", ("auto", "cpu", "cuda")),
    ],
)
def test_choices_accept_each_listed_value_only(key, choices):
    extra = {"verification": {"index": "index"}}
    for value in choices:
        assert getattr(parse(train={key: value}, **extra).train, key) == value
    refused(
        f"train.{key}: expected one of {', '.join(choices)}, got 'other'",
        train={key: "other"},
        **extra,
    )


def test_the_verification_objective_requires_an_index():
    with pytest.raises(ConfigError, match=r"^verification\.index: required by train\.objective"):
        parse(train={"objective": "verification"})
    config = parse(train={"objective": "verification"}, verification={"index": "idx"})
    assert config.verification.index == BASE / "idx"
    assert parse(train={"objective": "classifier"}).verification.index is None


def test_augmentation_errors_are_named_under_augment():
    with pytest.raises(ConfigError, match=r"^augment\.flip: "):
        parse(augment={"flip": 1.5})
    with pytest.raises(ConfigError, match=r"^augment\.scene_perspective: "):
        parse(augment={"scene_perspective": 0.5})
    with pytest.raises(ConfigError, match=r"^augment\.scene_others: "):
        parse(augment={"scene_others": -1})


# -- types ------------------------------------------------------------------------------------


def test_values_are_converted_to_their_declared_types():
    config = parse(
        seed=7,
        data={"decode_side": 100, "validation": "val.csv"},
        model={"init": "/abs/first.pt", "head_params": {"p": 3}, "trainable_from": "blocks.3"},
        train={"lr_head": 2, "scales": [1, 2], "recompute": False, "freeze_batchnorm": True},
        augment={"sizes": [40, 48], "axis_scale": [1, 2], "composite": 1},
    )
    assert config.seed == 7
    assert config.data == DataConfig(BASE / "pics", BASE / "val.csv", 100)
    assert config.model.init == Path("/abs/first.pt")
    assert config.model.head_params == {"p": 3}
    assert config.model.trainable_from == "blocks.3"
    assert type(config.train.lr_head) is float and config.train.lr_head == 2.0
    assert [type(s) for s in config.train.scales] == [float, float]
    assert config.train.scales == (1.0, 2.0)
    assert config.train.recompute is False
    assert config.train.freeze_batchnorm is True
    assert [type(s) for s in config.augment.sizes] == [int, int]
    assert [type(s) for s in config.augment.axis_scale] == [float, float]
    assert type(config.augment.composite) is float
    assert config.output == BASE / "out"


def test_a_table_value_is_copied():
    params = {"p": 3}
    config = parse_config(raw(model={"head_params": params}), base=BASE)
    params["p"] = 4
    assert config.model.head_params == {"p": 3}


def test_paths_expand_the_home_folder_and_keep_absolute_ones(monkeypatch):
    monkeypatch.setenv("HOME", "/home/someone")
    config = parse(output="~/runs", data={"source": "/abs/pics"})
    assert config.output == Path("/home/someone/runs")
    assert config.data.source == Path("/abs/pics")
    assert os.path.isabs(config.output)


def test_an_empty_string_means_none_only_for_optional_keys():
    config = parse(
        data={"validation": ""},
        model={"init": "", "trainable_from": ""},
        train={"hard_from_epoch": "", "max_steps": "", "freeze_batchnorm": ""},
    )
    assert config.data.validation is None
    assert config.model.init is None
    assert config.model.trainable_from is None
    assert config.train.hard_from_epoch is None
    assert config.train.max_steps is None
    assert config.train.freeze_batchnorm is None
    refused("model.head: expected a non-empty string, got ''", model={"head": ""})
    refused("data.source: expected a path (string), got ''", data={"source": ""})
    refused("output: expected a path (string), got ''", output="")


@pytest.mark.parametrize(
    ("sections", "message"),
    [
        ({"model": {"head": 3}}, "model.head: expected a non-empty string, got 3"),
        ({"data": {"source": 3}}, "data.source: expected a path (string), got 3"),
        ({"train": {"epochs": 2.0}}, "train.epochs: expected an integer, got 2.0"),
        ({"train": {"epochs": False}}, "train.epochs: expected an integer, got False"),
        ({"train": {"max_steps": True}}, "train.max_steps: expected an integer, got True"),
        ({"train": {"lr_head": True}}, "train.lr_head: expected a finite number, got True"),
        ({"train": {"lr_head": "1"}}, "train.lr_head: expected a finite number, got '1'"),
        ({"train": {"lr_head": float("inf")}}, "train.lr_head: expected a finite number, got inf"),
        ({"train": {"lr_head": float("nan")}}, "train.lr_head: expected a finite number, got nan"),
        ({"train": {"progress": 1}}, "train.progress: expected true or false, got 1"),
        ({"train": {"freeze_batchnorm": "yes"}}, "train.freeze_batchnorm: expected true or false, got 'yes'"),
        ({"train": {"loss_params": [1]}}, "train.loss_params: expected a table of keyword arguments, got [1]"),
        ({"train": {"scales": 1.0}}, "train.scales: expected an array, got 1.0"),
        ({"train": {"scales": []}}, "train.scales: expected at least one value, got an empty array"),
        ({"train": {"scales": [1.0, "2"]}}, "train.scales[1]: expected a finite number, got '2'"),
        ({"augment": {"sizes": [40, 48.5]}}, "augment.sizes[1]: expected an integer, got 48.5"),
        ({"augment": {"axis_scale": [1.0, 1.0, 1.0]}}, "augment.axis_scale: expected 2 numbers, got [1.0, 1.0, 1.0]"),
        ({"augment": {"axis_scale": []}}, "augment.axis_scale: expected 2 numbers, got []"),
        ({"seed": -1}, "seed: expected an integer in [0, 9223372036854775807], got -1"),
        ({"seed": 2**63}, "seed: expected an integer in [0, 9223372036854775807], got 9223372036854775808"),
        ({"seed": "1"}, "seed: expected an integer, got '1'"),
        ({"train": [1]}, "train: expected a table [train], got list"),
    ],
)  # fmt: skip
def test_wrong_types_are_refused_naming_the_key(sections, message):
    refused(message, **sections)


def test_the_seed_range_includes_both_ends():
    assert parse(seed=0).seed == 0
    assert parse(seed=2**63 - 1).seed == 2**63 - 1
    assert parse().seed == 0


def test_unknown_keys_are_listed_sorted_with_what_is_expected():
    refused(
        "unknown key(s) train.b, train.z; expected one of "
        + ", ".join(sorted(f.name for f in dataclasses.fields(parse().train))),
        train={"z": 1, "b": 2},
    )
    refused(
        "unknown key(s) zeta; expected one of augment, data, model, output, seed, train, "
        "verification",
        zeta=1,
    )


def test_missing_required_things_are_named():
    with pytest.raises(ConfigError) as error:
        parse_config({"output": "o", "data": {"validation": "v"}}, base=BASE)
    assert str(error.value) == "data: missing key(s) data.source"
    with pytest.raises(ConfigError, match=r"^\[data\]: missing section"):
        parse_config({"output": "o"}, base=BASE)
    with pytest.raises(ConfigError, match=r"^output: missing key"):
        parse_config({"data": {"source": "s"}}, base=BASE)


def test_missing_sections_take_their_defaults():
    config = parse()
    assert config.model == ModelConfig()
    assert config.train.epochs == 5 and config.train.objective == "metric"
    assert config.augment.augmentation() == Augmentation(rotation=10.0)
    assert config.augment.scene_composer() == SceneComposer()
    assert config.verification.candidates == 10
    assert config.path is None


# -- the recipe and plain values --------------------------------------------------------------


def test_the_recipe_names_the_network_and_its_objective_only():
    config = parse(
        model={
            "backbone": "resnet50",
            "backbone_params": {"depth": 2},
            "head": "rmac",
            "head_params": {"levels": [1, 2]},
            "trainable_from": "layer4",
            "max_side": 512,
        },
        train={
            "objective": "classifier",
            "loss": "map_ce",
            "loss_params": {"m": (1, 2)},
            "mining": "offline",
            "epochs": 9,
        },
    )
    assert config.recipe_dict() == {
        "backbone": "resnet50",
        "backbone_params": {"depth": 2},
        "head": "rmac",
        "head_params": {"levels": [1, 2]},
        "trainable_from": "layer4",
        "objective": "classifier",
        "loss": "map_ce",
        "loss_params": {"m": [1, 2]},
        "mining": "offline",
    }


def test_to_dict_gives_strings_for_paths_and_lists_for_tuples():
    config = parse(train={"scales": [1.0, 2.0]}, data={"validation": "v.csv"})
    plain = config.to_dict()
    assert plain["output"] == "/base/out"
    assert plain["data"] == {
        "source": "/base/pics",
        "validation": "/base/v.csv",
        "decode_side": 640,
    }
    assert plain["train"]["scales"] == [1.0, 2.0]
    assert plain["augment"]["sizes"] == [224, 448]
    assert plain["path"] is None
    assert _plain({"a": (Path("/x"), [Path("y"), {"b": (1,)}]), "c": 2.5}) == {
        "a": ["/x", ["y", {"b": [1]}]],
        "c": 2.5,
    }


def test_fields_copy_a_dataclass_with_a_prefix_and_new_defaults():
    @dataclasses.dataclass
    class Example:
        a: int = 1
        b: str = "x"

    entries = _fields(Example, "pre_", b="y")
    assert [(name, kind) for name, kind, _ in entries] == [("pre_a", "int"), ("pre_b", "str")]
    assert [entry.default for _, _, entry in entries] == [1, "y"]
    assert [name for name, _, _ in _fields(Example)] == ["a", "b"]


# -- load_config: files and overrides ----------------------------------------------------------


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "run.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_load_config_names_the_file_and_keeps_its_path(tmp_path):
    path = write(tmp_path, 'output = "out"\n[data]\nsource = "pics"\n')
    config = load_config(str(path))
    assert config.path == path
    assert config.data.source == tmp_path / "pics"
    with pytest.raises(ConfigError) as error:
        load_config(path, **{"train.epochs": 0})
    assert str(error.value) == f"config {str(path)!r}: train.epochs: expected >= 1, got 0"
    assert error.value.__cause__ is None


def test_a_folder_or_undecodable_file_is_refused(tmp_path):
    with pytest.raises(FileNotFoundError, match="config: no such file"):
        load_config(tmp_path)
    path = tmp_path / "latin.toml"
    path.write_bytes(b'output = "\xe9"\n')
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(path)


def test_overrides_reach_top_level_keys_and_new_sections(tmp_path):
    path = write(tmp_path, 'output = "out"\nseed = 1\n[data]\nsource = "pics"\n')
    config = load_config(path, seed=9, **{"train.epochs": 3, "verification.views": 2})
    assert (config.seed, config.train.epochs, config.verification.views) == (9, 3, 2)
    assert config.train.lr_head == 1e-3  # the rest of the new section keeps its defaults


def test_an_override_under_a_value_that_is_not_a_table_is_refused(tmp_path):
    path = write(tmp_path, 'output = "out"\ntrain = 3\n[data]\nsource = "pics"\n')
    with pytest.raises(ConfigError) as error:
        load_config(path, **{"train.epochs": 3})
    assert str(error.value) == f"config {str(path)!r}: [train] is not a table"
