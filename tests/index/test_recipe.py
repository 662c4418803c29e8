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
        postprocess={"whiten": {"dim": 64, "power": 0.5}, "dba": {"k": 2}, "qe": {"k": 3}},
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
        ({"postprocess": {"whiten": [1, 2]}}, "recipe.postprocess.whiten: expected a dict"),
        ({"postprocess": {"blur": {}}}, "recipe.postprocess: unknown key.*blur"),
        ({"postprocess": {"whiten": {"dim": 0}}}, r"recipe.postprocess.whiten.dim: expected"),
        ({"postprocess": {"whiten": {"power": 2}}}, "recipe.postprocess.whiten.power"),
        ({"postprocess": {"whiten": {"size": 2}}}, "recipe.postprocess.whiten: unknown key"),
        ({"postprocess": {"dba": {"k": 0}}}, "recipe.postprocess.dba.k"),
        ({"postprocess": {"qe": {"alpha": -1}}}, "recipe.postprocess.qe.alpha"),
        ({"postprocess": {"multiscale": {}}}, "multiscale: missing key reduction"),
        ({"postprocess": {"multiscale": {"reduction": "mean"}}}, "multiscale.reduction"),
        (
            {"postprocess": {"multiscale": {"reduction": "max"}, "qe": {"k": 1}}},
            "cannot be combined with dba or qe",
        ),
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


def test_postprocess_is_normalised_and_compared() -> None:
    recipe = DEFAULT_RECIPE.with_(postprocess={"whiten": {}, "dba": {"k": 1}})
    assert recipe.postprocess == {
        "whiten": {"dim": None, "power": 1.0, "ridge": 0.0, "method": "pca"},
        "dba": {"k": 1, "alpha": None},
    }
    assert recipe.postprocessing.learnt and recipe.descriptors_per_image == 1
    assert not recipe.same_descriptors(DEFAULT_RECIPE)
    multi = DEFAULT_RECIPE.with_(
        scales=(1.0, 0.5), postprocess={"multiscale": {"reduction": "max"}}
    )
    assert multi.descriptors_per_image == 2 and not multi.postprocessing.learnt
