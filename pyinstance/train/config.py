"""The training configuration: a TOML file read with :mod:`tomllib` and validated.

Every section and key is declared below with its type, default and range; an unknown key,
a value of the wrong type or out of range is an error naming the key (``train.epochs``).
Paths are relative to the config file's folder.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomllib

from pyinstance.data.augment import Augmentation
from pyinstance.data.composite import SceneComposer

#: How the training views are mined: per batch, or per epoch over the whole set.
MINING = ("online", "offline")
#: What a stage trains: a descriptor with a metric loss, the FCN classifier's class map, or
#: the verification re-ranker of an index (``[verification]``).
OBJECTIVES = ("metric", "classifier", "verification")
SCHEDULERS = ("cosine", "constant")
DEVICES = ("auto", "cpu", "cuda")


class ConfigError(ValueError):
    """A training configuration that cannot be used; the message names the key."""


@dataclass(frozen=True)
class DataConfig:
    """``[data]``: what to train on and what to validate on."""

    #: A manifest CSV (its ``reference`` rows) or a folder with one sub-folder per instance.
    source: Path
    #: A manifest whose ``query`` rows are scored (P@1) after every epoch; none: no validation.
    validation: Path | None = None
    #: Longest side images are decoded at (training views are made from these).
    decode_side: int = 640


@dataclass(frozen=True)
class ModelConfig:
    """``[model]``: the network and the recipe the trained model is saved with."""

    backbone: str = "efficientnet_lite0"
    backbone_params: dict[str, Any] = field(default_factory=dict)
    head: str = "gem"
    head_params: dict[str, Any] = field(default_factory=dict)
    #: Blocks below this one stay frozen (names from the backbone's ``blocks()``).
    trainable_from: str | None = None
    #: A trained model file to start from (e.g. the first stage of a two-stage recipe).
    init: Path | None = None
    #: Longest side of the descriptors the saved recipe and the validation use.
    max_side: int = 448


def _fields(cls: type, prefix: str = "", **defaults: Any) -> list[tuple[str, str, Any]]:
    """The fields of the dataclass ``cls`` as ``make_dataclass`` entries named ``prefix +
    name``, with its defaults but those given."""
    return [
        (prefix + f.name, f.type, field(default=defaults.get(f.name, f.default)))
        for f in dataclasses.fields(cls)
    ]


def _augmentation(self: Any) -> Augmentation:
    """The :class:`~pyinstance.data.augment.Augmentation` these keys describe."""
    names = [f.name for f in dataclasses.fields(Augmentation)]
    return Augmentation(**{name: getattr(self, name) for name in names})


def _scene_composer(self: Any) -> SceneComposer:
    """The :class:`~pyinstance.data.composite.SceneComposer` of the ``scene_*`` keys."""
    names = [f.name for f in dataclasses.fields(SceneComposer)]
    return SceneComposer(**{name: getattr(self, f"scene_{name}") for name in names})


_AUGMENT_DOC = """``[augment]``: how one photo becomes many training views.

The keys are those of :class:`~pyinstance.data.augment.Augmentation` (with a training
default of 10 degrees of rotation), ``composite`` (the probability that a view is the
augmented photo composited into a gallery scene) and ``scene_`` + those of
:class:`~pyinstance.data.composite.SceneComposer`; those classes check the values.
"""

AugmentConfig = dataclasses.make_dataclass(
    "AugmentConfig",
    [
        *_fields(Augmentation, rotation=10.0),
        ("composite", "float", field(default=0.0)),
        *_fields(SceneComposer, "scene_"),
    ],
    namespace={
        "__module__": __name__,  # pickled with the config (make_dataclass's module= is 3.12+)
        "__doc__": _AUGMENT_DOC,
        "augmentation": _augmentation,
        "scene_composer": _scene_composer,
    },
    frozen=True,
)


@dataclass(frozen=True)
class TrainConfig:
    """``[train]``: the optimisation."""

    objective: str = "metric"
    loss: str = "triplet_margin"
    loss_params: dict[str, Any] = field(default_factory=dict)
    mining: str = "online"
    miner: str = "semihard"
    miner_params: dict[str, Any] = field(default_factory=dict)
    #: Epoch from which ``hard_miner`` replaces ``miner`` (the curriculum); none: never.
    hard_from_epoch: int | None = None
    hard_miner: str = "hard_negative"
    epochs: int = 5
    #: Instances per batch (P of a P×K batch).
    instances_per_batch: int = 16
    #: Views per instance (K); with one photo per instance these are augmented views.
    views_per_instance: int = 2
    #: Images per forward pass; 1 allows any aspect ratio.
    micro_batch: int = 1
    #: Hold no activations across micro-batches: describe every view without gradients,
    #: then run each micro-batch again with them (memory of one micro-batch, one forward
    #: more); false keeps every micro-batch's graph until the loss (faster).
    recompute: bool = True
    #: Keep BatchNorm statistics (running mean/var) fixed: "auto" when micro-batches < 8.
    freeze_batchnorm: bool | None = None
    lr_backbone: float = 1e-4
    lr_head: float = 1e-3
    weight_decay: float = 1e-4
    scheduler: str = "cosine"
    #: Stop after this many steps in all (tests, smoke runs); none: run every epoch.
    max_steps: int | None = None
    #: Scales of the class maps (factors of the view) for the ``map`` losses.
    scales: tuple[float, ...] = (1.0,)
    #: Write a checkpoint every this many steps besides every epoch's end (0: epochs only).
    checkpoint_steps: int = 0
    device: str = "auto"
    progress: bool = True


@dataclass(frozen=True)
class VerificationConfig:
    """``[verification]``: the re-ranker of ``train.objective = "verification"``.

    It learns on the descriptors of ``index`` (whose recipe it is saved with): views of the
    training photos (``[augment]``) described as queries, each scored against its ``k``
    nearest references (its own instance's among them: positives) and again with its
    instance left out (the hardest other references only: what an absent object meets).
    ``train.epochs``, ``train.lr_head`` and ``train.weight_decay`` drive the optimiser.
    """

    #: The index the re-ranker serves (built from ``data.source``'s instances).
    index: Path | None = None
    #: Candidates scored per query (the re-ranker's ``k``).
    candidates: int = 10
    #: Views described per training photo.
    views: int = 4
    #: Size of the learnt projection of the descriptors.
    projection: int = 32
    #: Width of the perceptron's hidden layer.
    hidden: int = 32
    #: Queries per optimiser step.
    batch: int = 64
    #: Share of the instances whose views are held out to validate after every epoch.
    validation_fraction: float = 0.2


@dataclass(frozen=True)
class Config:
    """A whole training run."""

    output: Path
    data: DataConfig
    model: ModelConfig = field(default_factory=ModelConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    verification: VerificationConfig = field(default_factory=VerificationConfig)
    seed: int = 0
    #: Where ``path`` was read from (informative).
    path: Path | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-able values (paths as strings, tuples as lists)."""
        return _plain(dataclasses.asdict(self))

    def recipe_dict(self) -> dict[str, Any]:
        """What makes a run's checkpoints interchangeable: the network and its objective.

        A checkpoint from a run whose recipe differs is refused on resume.
        """
        model = self.model
        return _plain(
            {
                "backbone": model.backbone,
                "backbone_params": model.backbone_params,
                "head": model.head,
                "head_params": model.head_params,
                "trainable_from": model.trainable_from,
                "objective": self.train.objective,
                "loss": self.train.loss,
                "loss_params": self.train.loss_params,
                "mining": self.train.mining,
            }
        )


_SECTIONS: dict[str, type] = {
    "data": DataConfig,
    "model": ModelConfig,
    "augment": AugmentConfig,
    "train": TrainConfig,
    "verification": VerificationConfig,
}


def load_config(path: str | os.PathLike[str], **overrides: Any) -> Config:
    """Read and validate the TOML file at ``path``; errors name the file and the key.

    ``overrides``: ``section.key`` (or top-level key) values replacing the file's, e.g.
    ``{"train.epochs": 1}``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config: no such file {str(path)!r}")
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise ConfigError(f"config {str(path)!r}: not valid TOML: {error}") from error
    for dotted, value in overrides.items():
        section, _, key = dotted.rpartition(".")
        target = raw.setdefault(section, {}) if section else raw
        if not isinstance(target, dict):
            raise ConfigError(f"config {str(path)!r}: [{section}] is not a table")
        target[key] = value
    try:
        return parse_config(raw, base=path.parent, source=path)
    except ConfigError as error:
        raise ConfigError(f"config {str(path)!r}: {error}") from None


def parse_config(raw: dict[str, Any], *, base: Path, source: Path | None = None) -> Config:
    """A :class:`Config` from parsed TOML ``raw``; relative paths are under ``base``."""
    known = {"output", "seed", *_SECTIONS}
    _refuse_unknown(raw, known, "")
    if "data" not in raw:
        raise ConfigError("[data]: missing section (data.source is required)")
    if "output" not in raw:
        raise ConfigError("output: missing key (the folder of checkpoints, logs and the model)")
    sections = {
        name: _section(raw.get(name, {}), cls, name, base) for name, cls in _SECTIONS.items()
    }
    config = Config(
        output=_path(raw["output"], "output", base),
        seed=_integer(raw.get("seed", 0), "seed", 0, 2**63 - 1),
        path=source,
        **sections,
    )
    _check_ranges(config)
    return config


def _refuse_unknown(table: dict[str, Any], known: set[str], prefix: str) -> None:
    unknown = sorted(set(table) - known)
    if unknown:
        names = ", ".join(f"{prefix}{key}" for key in unknown)
        raise ConfigError(f"unknown key(s) {names}; expected one of {', '.join(sorted(known))}")


def _section(table: Any, cls: type, name: str, base: Path) -> Any:
    if not isinstance(table, dict):
        raise ConfigError(f"{name}: expected a table [{name}], got {type(table).__name__}")
    declared = {f.name: f for f in dataclasses.fields(cls)}
    _refuse_unknown(table, set(declared), f"{name}.")
    values = {}
    for key, value in table.items():
        values[key] = _typed(value, declared[key].type, f"{name}.{key}", base)
    try:
        return cls(**values)
    except TypeError as error:  # a required key is missing
        missing = [k for k, f in declared.items() if _required(f) and k not in values]
        raise ConfigError(
            f"{name}: missing key(s) {', '.join(f'{name}.{k}' for k in missing)}"
        ) from error


def _required(declared: dataclasses.Field) -> bool:
    return (
        declared.default is dataclasses.MISSING and declared.default_factory is dataclasses.MISSING
    )


def _typed(value: Any, annotation: str, key: str, base: Path) -> Any:
    """``value`` converted to the declared type (annotations are strings here)."""
    optional = annotation.endswith(" | None")
    kind = annotation.removesuffix(" | None")
    if optional and isinstance(value, str) and value == "":
        return None  # TOML has no null: an empty string means "none" for optional keys
    if kind == "Path":
        return _path(value, key, base)
    if kind == "str":
        if not isinstance(value, str) or not value:
            raise ConfigError(f"{key}: expected a non-empty string, got {value!r}")
        return value
    if kind == "int":
        return _integer(value, key)
    if kind == "float":
        return _number(value, key)
    if kind == "bool":
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {value!r}")
        return value
    if kind == "dict[str, Any]":
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a table of keyword arguments, got {value!r}")
        return dict(value)
    if kind.startswith("tuple["):
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected an array, got {value!r}")
        element = "int" if "int" in kind else "float"
        items = tuple(_typed(item, element, f"{key}[{i}]", base) for i, item in enumerate(value))
        if ", ..." not in kind and len(items) != kind.count(",") + 1:
            raise ConfigError(f"{key}: expected {kind.count(',') + 1} numbers, got {value!r}")
        if not items:
            raise ConfigError(f"{key}: expected at least one value, got an empty array")
        return items
    raise AssertionError(f"unhandled config type {annotation} of {key}")


def _path(value: Any, key: str, base: Path) -> Path:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{key}: expected a path (string), got {value!r}")
    path = Path(os.path.expanduser(value))
    return path if path.is_absolute() else base / path


def _integer(value: Any, key: str, minimum: int | None = None, maximum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{key}: expected an integer, got {value!r}")
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        raise ConfigError(f"{key}: expected an integer in [{minimum}, {maximum}], got {value}")
    return value


def _number(value: Any, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{key}: expected a finite number, got {value!r}")
    return float(value)


def _check_ranges(config: Config) -> None:
    def at_least(key: str, value: float, minimum: float) -> None:
        if value < minimum:
            raise ConfigError(f"{key}: expected >= {minimum}, got {value}")

    def within(key: str, value: float, low: float, high: float) -> None:
        if not low <= value <= high:
            raise ConfigError(f"{key}: expected a value in [{low}, {high}], got {value}")

    def choice(key: str, value: str, choices: tuple[str, ...]) -> None:
        if value not in choices:
            raise ConfigError(f"{key}: expected one of {', '.join(choices)}, got {value!r}")

    data, model, augment, train = config.data, config.model, config.augment, config.train
    at_least("data.decode_side", data.decode_side, 32)
    at_least("model.max_side", model.max_side, 32)
    within("augment.composite", augment.composite, 0, 1)
    for size in augment.sizes:
        at_least("augment.sizes", size, 32)
    for build, prefix in ((augment.augmentation, ""), (augment.scene_composer, "scene_")):
        try:
            build()
        except (TypeError, ValueError) as error:  # the message starts with the argument
            raise ConfigError(f"augment.{prefix}{error}") from error
    choice("train.objective", train.objective, OBJECTIVES)
    choice("train.mining", train.mining, MINING)
    choice("train.scheduler", train.scheduler, SCHEDULERS)
    choice("train.device", train.device, DEVICES)
    at_least("train.epochs", train.epochs, 1)
    at_least("train.instances_per_batch", train.instances_per_batch, 2)
    at_least("train.views_per_instance", train.views_per_instance, 1)
    at_least("train.micro_batch", train.micro_batch, 1)
    for name in ("lr_backbone", "lr_head", "weight_decay"):
        at_least(f"train.{name}", getattr(train, name), 0)
    if train.hard_from_epoch is not None:
        at_least("train.hard_from_epoch", train.hard_from_epoch, 1)
    if train.max_steps is not None:
        at_least("train.max_steps", train.max_steps, 1)
    at_least("train.checkpoint_steps", train.checkpoint_steps, 0)
    for scale in train.scales:
        within("train.scales", scale, 0.1, 4)
    verification = config.verification
    if train.objective == "verification" and verification.index is None:
        raise ConfigError(
            "verification.index: required by train.objective = 'verification' (the index "
            "whose descriptors the re-ranker learns and serves)"
        )
    for name in ("candidates", "views", "projection", "hidden", "batch"):
        at_least(f"verification.{name}", getattr(verification, name), 1)
    within("verification.validation_fraction", verification.validation_fraction, 0, 0.5)
    if train.objective == "metric" and train.mining == "online" and train.views_per_instance < 2:
        raise ConfigError(
            "train.views_per_instance: online mining needs at least 2 views per instance "
            "(a positive for every anchor)"
        )


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if isinstance(value, Path):
        return str(value)
    return value
