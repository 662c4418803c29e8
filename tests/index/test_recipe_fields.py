"""Recipe's checks at their edges, its JSON form, its one-line description."""

from __future__ import annotations

import json

import pytest

from pyinstance.index import DEFAULT_RECIPE, Recipe

BASE = Recipe(backbone="b", head="h", dim=4)


def test_defaults_and_derived_values() -> None:
    assert (BASE.scales, BASE.max_side, BASE.query_max_side, BASE.dtype) == (
        (1.0,),
        448,
        None,
        "float32",
    )
    assert (BASE.weights_sha256, BASE.query_windows, BASE.model) == (None, None, None)
    assert (BASE.head_params, BASE.backbone_params, BASE.postprocess) == ({}, {}, {})
    assert BASE.query_side == 448 and BASE.with_(query_max_side=600).query_side == 600
    assert BASE.descriptors_per_image == 1
    three = BASE.with_(scales=(1, 0.5, 0.25))
    assert three.scales == (1.0, 0.5, 0.25) and type(three.scales[0]) is float
    assert three.descriptors_per_image == 1  # averaged
    weighted = three.with_(postprocess={"scale_weights": [0.5, 0.25, 0.25]})
    assert weighted.descriptors_per_image == 3
    assert three.with_(postprocess={"scale_weights": "learnt"}).descriptors_per_image == 3
    assert three.with_(postprocess={"multiscale": {"reduction": "max"}}).descriptors_per_image == 3


def test_describe_names_every_part() -> None:
    recipe = BASE.with_(
        head="gem",
        dim=8,
        head_params={"p": 3},
        scales=(1, 0.5),
        query_max_side=600,
        query_windows=((1.0, 1), (0.5, 3)),
        postprocess={"scale_weights": [0.5, 0.5]},
        model="/m.pt",
        weights_sha256="ab" * 32,
    )
    assert recipe.describe() == (
        'b (weights abababababab) + gem({"p": 3}), scales [1.0, 0.5], max_side 448, '
        "queries at 600, windows [(1.0, 1), (0.5, 3)], D=8 float32, "
        'postprocess {"scale_weights": [0.5, 0.5]}, trained model /m.pt'
    )
    assert BASE.describe() == "b (weights unpinned) + h, scales [1.0], max_side 448, D=4 float32"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"backbone": None}, r"^recipe\.backbone: expected a non-empty name, got None"),
        ({"head": ""}, r"^recipe\.head: expected a non-empty name"),
        ({"weights_sha256": "AB" * 32}, r"^recipe\.weights_sha256: expected None or 64"),
        ({"weights_sha256": "ab" * 32 + "a"}, r"^recipe\.weights_sha256"),
        ({"weights_sha256": 5}, r"^recipe\.weights_sha256"),
        ({"head_params": {1: 2}}, r"^recipe\.head_params: expected a dict with str keys"),
        ({"backbone_params": [("a", 1)]}, r"^recipe\.backbone_params: expected a dict"),
        ({"backbone_params": {"x": float("nan")}}, r"^recipe\.backbone_params: not JSON"),
        ({"postprocess": {"dba": {"k": 0}}}, r"^recipe\.postprocess\.dba\.k"),
        ({"scales": 1.0}, r"^recipe\.scales: expected a sequence of numbers, got 1\.0"),
        ({"scales": 2}, r"^recipe\.scales: expected a sequence of numbers"),
        ({"scales": {1.0}}, r"^recipe\.scales: expected a sequence of numbers"),
        ({"scales": (1.0, 0.0)}, r"^recipe\.scales: expected a non-empty sequence of positive"),
        ({"scales": (1.0, float("inf"))}, r"^recipe\.scales: expected a non-empty"),
        ({"scales": (True,)}, r"^recipe\.scales: expected a non-empty"),
        ({"scales": ("1",)}, r"^recipe\.scales: expected a non-empty"),
        (
            {"postprocess": {"scale_weights": [1.0]}},
            r"^recipe\.postprocess\.scale_weights: expected one weight per scale of at least",
        ),
        ({"postprocess": {"scale_weights": "learnt"}}, r"^recipe\.postprocess\.scale_weights"),
        (
            {"scales": (1.0, 0.5), "postprocess": {"scale_weights": [1.0, 0.5, 0.2]}},
            r"^recipe\.postprocess\.scale_weights",
        ),
        ({"max_side": True}, r"^recipe\.max_side: expected a positive int, got True"),
        ({"max_side": 0}, r"^recipe\.max_side"),
        ({"dim": 2.0}, r"^recipe\.dim"),
        ({"query_max_side": 0}, r"^recipe\.query_max_side: expected a positive int"),
        ({"query_max_side": "600"}, r"^recipe\.query_max_side"),
        ({"query_windows": ((1.0, 0),)}, r"^recipe\.query_windows"),
        ({"dtype": "float64"}, r"^recipe\.dtype: expected one of float32, float16, bfloat16"),
        ({"model": ""}, r"^recipe\.model: expected None or a model file path"),
        ({"model": 3}, r"^recipe\.model"),
        ({"pyinstance_version": 1}, r"^recipe\.pyinstance_version: expected a str"),
    ],
)
def test_each_field_is_checked(change: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        BASE.with_(**change)


def test_the_edges_that_are_accepted() -> None:
    assert BASE.with_(max_side=1, dim=1, query_max_side=1).query_side == 1
    assert BASE.with_(scales=[2]).scales == (2.0,)  # any sequence, ints too
    assert BASE.with_(scales=(1.0, 0.5), postprocess={"scale_weights": "learnt"}).scales == (
        1.0,
        0.5,
    )
    assert BASE.with_(model="m.pt", weights_sha256="0" * 64).model == "m.pt"
    windows = BASE.with_(query_windows=[[1.0, 1], [0.5, 2]]).query_windows
    assert windows == ((1.0, 1), (0.5, 2))
    params = {"p": 3}
    recipe = BASE.with_(head_params=params)
    params["p"] = 4  # the recipe keeps its own copy
    assert recipe.head_params == {"p": 3}


def test_from_dict_and_json() -> None:
    recipe = BASE.with_(scales=(1.0, 0.5), query_windows=((1.0, 1),), dtype="bfloat16")
    data = json.loads(recipe.to_json())
    assert data["scales"] == [1.0, 0.5] and data["query_windows"] == [[1.0, 1]]
    assert list(data) == sorted(data)
    again = Recipe.from_dict(data)
    assert again == recipe and isinstance(again.scales, tuple)
    assert isinstance(again.query_windows[0], tuple)
    with pytest.raises(ValueError, match=r"^recipe: expected a dict, got list"):
        Recipe.from_dict([1])
    with pytest.raises(ValueError, match=r"^recipe: unknown field\(s\) a, z$"):
        Recipe.from_dict(data | {"z": 1, "a": 2})
    without_dim = {k: v for k, v in data.items() if k != "dim"}
    with pytest.raises(ValueError, match=r"^recipe: .*dim"):
        Recipe.from_dict(without_dim)
    with pytest.raises(ValueError, match=r"^recipe: not valid JSON"):
        Recipe.from_json("[")
    with pytest.raises(ValueError, match=r"^recipe: expected a dict, got NoneType"):
        Recipe.from_json("null")
    assert Recipe.from_json(DEFAULT_RECIPE.to_json()).postprocess == DEFAULT_RECIPE.postprocess


def test_same_descriptors_compares_every_field_but_the_version() -> None:
    other = BASE.with_(pyinstance_version="0.0")
    assert BASE.same_descriptors(other) and other.same_descriptors(BASE)
    assert BASE.pyinstance_version != "0.0"  # the comparison did not drop it from the recipe
    for change in ({"model": "m.pt"}, {"head_params": {"p": 1}}, {"scales": (1.0, 0.5)}):
        assert not BASE.same_descriptors(BASE.with_(**change))


def test_from_dict_fills_defaults_and_checks_scales_by_name() -> None:
    recipe = Recipe.from_dict({"backbone": "b", "head": "h", "dim": 4})
    assert recipe.scales == (1.0,) and recipe.query_windows is None
    with pytest.raises(
        ValueError, match=r"^recipe\.scales: expected a sequence of numbers, got 1\.0"
    ):
        Recipe.from_dict({"backbone": "b", "head": "h", "dim": 4, "scales": 1.0})
