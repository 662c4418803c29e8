from __future__ import annotations

import pytest

from pyinstance.index import DEFAULT_RECIPE, Recipe


def test_json_round_trip_keeps_every_field() -> None:
    recipe = Recipe(
        backbone="resnet50",
        head="gem",
        dim=2048,
        weights_sha256="ab" * 32,
        head_params={"p": 3.5},
        scales=(0.7, 1.0),
        max_side=512,
        query_windows=((1.0, 1), (0.5, 3)),
        postprocess={"whiten": [1, 2]},
        dtype="float16",
    )
    assert Recipe.from_json(recipe.to_json()) == recipe
    assert Recipe.from_json(DEFAULT_RECIPE.to_json()) == DEFAULT_RECIPE


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"backbone": ""}, "recipe.backbone"),
        ({"dim": 0}, "recipe.dim"),
        ({"max_side": 1.5}, "recipe.max_side"),
        ({"scales": ()}, "recipe.scales"),
        ({"scales": (1.0, -1.0)}, "recipe.scales"),
        ({"dtype": "int8"}, "recipe.dtype"),
        ({"weights_sha256": "xyz"}, "recipe.weights_sha256"),
        ({"query_windows": ((1.5, 1),)}, "windows"),
        ({"head_params": {"p": object()}}, "recipe.head_params"),
    ],
)
def test_invalid_fields_are_named(change: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        DEFAULT_RECIPE.with_(**change)


def test_from_json_rejects_unknown_fields_and_bad_json() -> None:
    data = DEFAULT_RECIPE.to_dict() | {"colour": "blue"}
    with pytest.raises(ValueError, match="unknown field.*colour"):
        Recipe.from_dict(data)
    with pytest.raises(ValueError, match="not valid JSON"):
        Recipe.from_json("{")


def test_same_descriptors_ignores_only_the_version() -> None:
    assert DEFAULT_RECIPE.same_descriptors(DEFAULT_RECIPE.with_(pyinstance_version="9.9"))
    assert not DEFAULT_RECIPE.same_descriptors(DEFAULT_RECIPE.with_(max_side=512))
    assert not DEFAULT_RECIPE.same_descriptors(DEFAULT_RECIPE.with_(dtype="float16"))
