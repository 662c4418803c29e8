"""Built-in instance classifiers (implementations in :mod:`pyinstance.classify`)."""

from __future__ import annotations

from pyinstance.classify import (
    AlphaMeanKnn,
    InstanceMean,
    KnnVote,
    KnnWeighted,
    MeanKnn,
    NearestNeighbour,
)
from pyinstance.hookspecs import Register, hookimpl


@hookimpl
def pyinstance_register_classifiers(register: Register) -> None:
    register("nn", NearestNeighbour, aliases=("1nn",))
    register("knn_vote", KnnVote)
    register("knn_weighted", KnnWeighted)
    register("mean_knn", MeanKnn)
    register("alpha_mean_knn", AlphaMeanKnn)
    register("instance_mean", InstanceMean)
