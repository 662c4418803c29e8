"""The service's identification path and handlers called directly (no HTTP client): each
answer checked against values worked out in the test, over the fakes of tests/serve/fakes.py."""

from __future__ import annotations

from typing import Any

import pytest

import pyinstance.serve.app as app_module
from pyinstance.serve.app import Service, _identifier, _Options
from pyinstance.serve.errors import ApiError
from pyinstance.serve.metrics import Metrics

from .fakes import World


def service_of(world: World, **fields: Any) -> Service:
    """A Service over ``world`` (its collection is never reached by these tests)."""
    values: dict[str, Any] = {
        "collection": None,
        "token": None,
        "max_upload_bytes": 1000,
        "max_pixels": 10_000,
        "workers": 1,
        "max_queue": 1,
        "refresh_seconds": 1.0,
        "scorer": None,
        "review": None,
        "metrics": Metrics(),
        "limiter": None,
    }
    values.update(fields)
    return Service(**values)


def options(rerank: bool | None = None, multi: bool = False) -> _Options:
    return _Options(top_k=3, threshold=0.5, classifier="knn", multi=multi, rerank=rerank)


STORED, GIVEN = "stored-verifier", object()


@pytest.mark.parametrize(
    ("scorer", "stored", "rerank", "chosen"),
    [
        # rerank unset: the service's choice as it is (None: the index's stored one)
        (None, None, None, None),
        (None, STORED, None, None),
        (False, STORED, None, False),
        (GIVEN, None, None, GIVEN),
        # rerank=false: none, whatever the service or the index has
        (None, STORED, False, False),
        (GIVEN, STORED, False, False),
        # rerank=true: the service's own, else the index's stored one (None)
        (GIVEN, None, True, GIVEN),
        (None, STORED, True, None),
        (False, STORED, True, None),
    ],
)
def test_the_reranker_handed_to_the_identifier(
    scorer: Any, stored: Any, rerank: bool | None, chosen: Any
) -> None:
    world = World()
    if stored is not None:
        world.settings["reranker"] = stored
    pinned = world.version()
    _identifier(service_of(world, scorer=scorer), pinned, options(rerank))
    assert world.calls == [("identifier", "knn", 0.5, 3, False, chosen)]
    assert world.calls[0][-1] is chosen


@pytest.mark.parametrize("scorer", [None, False])
def test_rerank_true_without_any_reranker_is_a_409(scorer: Any) -> None:
    world = World()
    with pytest.raises(ApiError) as caught:
        _identifier(service_of(world, scorer=scorer), world.version(), options(True))
    assert (caught.value.status, caught.value.code) == (409, "no_reranker")
    assert world.calls == []


def test_multi_needs_the_objects_threshold_setting_only() -> None:
    world = World()
    with pytest.raises(ApiError) as caught:
        _identifier(service_of(world), world.version(), options(multi=True))
    assert (caught.value.status, caught.value.code) == (409, "objects_uncalibrated")
    world.settings[app_module.OBJECTS_THRESHOLD] = 0.0  # a threshold of 0 is a threshold
    _identifier(service_of(world), world.version(), options(multi=True))
    assert world.calls == [("identifier", "knn", 0.5, 3, True, None)]
