"""Classification of k-NN search results: instance or unknown, with a confidence.

A classifier has ``k`` (neighbours it reads per query), ``fit(descriptors, labels) ->
self`` and ``predict(neighbours, queries) -> Prediction``. :func:`classify` runs one,
then an optional :class:`Reranker`, then open-set rejection (:func:`reject`) with a
threshold given or fitted on the collection (:func:`fit_threshold`).
"""

from pyinstance.classify.augment import augment_views
from pyinstance.classify.base import NeighbourClassifier
from pyinstance.classify.instance_mean import InstanceMean
from pyinstance.classify.means import AlphaMeanKnn, MeanKnn
from pyinstance.classify.nearest import NearestNeighbour
from pyinstance.classify.openset import ThresholdFit, fit_threshold, reject, threshold_for_far
from pyinstance.classify.pipeline import classify
from pyinstance.classify.prediction import UNKNOWN, Prediction
from pyinstance.classify.rerank import PairScorer, Reranker, Reranking
from pyinstance.classify.voting import TRANSFORMS, KnnVote, KnnWeighted

__all__ = [
    "TRANSFORMS",
    "UNKNOWN",
    "AlphaMeanKnn",
    "InstanceMean",
    "KnnVote",
    "KnnWeighted",
    "MeanKnn",
    "NearestNeighbour",
    "NeighbourClassifier",
    "Prediction",
    "PairScorer",
    "Reranker",
    "Reranking",
    "ThresholdFit",
    "augment_views",
    "classify",
    "fit_threshold",
    "reject",
    "threshold_for_far",
]
