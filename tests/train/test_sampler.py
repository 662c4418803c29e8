import pytest
import torch

from pyinstance.train.sampler import PKSampler, triplet_batches


def test_batches_hold_p_instances_with_k_views_and_are_seeded():
    labels = [0, 1, 2, 3, 4, 5, 6, 0, 1]
    sampler = PKSampler(labels, instances=3, views=2, seed=5)
    batches = sampler.epoch(0)
    assert batches == PKSampler(labels, 3, 2, seed=5).epoch(0)
    assert batches != sampler.epoch(1)
    assert batches != PKSampler(labels, 3, 2, seed=6).epoch(0)
    seen = set()
    for batch in batches:
        instances = [labels[i] for i in batch]
        assert len(batch) == 2 * len(set(instances))
        assert all(instances.count(x) == 2 for x in instances)
        seen.update(instances)
    assert seen == set(labels)  # every instance once per epoch
    assert [len(b) for b in batches] == [6, 8]  # 7 instances: the last single one joins
    assert len(sampler) == 2


def test_one_photo_per_instance_repeats_it_as_views():
    sampler = PKSampler([0, 1, 2, 3], instances=2, views=3, seed=0)
    for batch in sampler.epoch(0):
        assert all(batch.count(i) == 3 for i in batch)


def test_instances_with_several_photos_use_different_photos():
    labels = [0, 0, 1, 1]
    batch = PKSampler(labels, instances=2, views=2, seed=1).epoch(0)[0]
    assert sorted(batch) == [0, 1, 2, 3]


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="at least 2 instances"):
        PKSampler([0, 0, 0], instances=2, views=2)
    with pytest.raises(ValueError, match="instances"):
        PKSampler([0, 1], instances=1, views=2)
    with pytest.raises(ValueError, match="labels"):
        PKSampler([], instances=2, views=2)


def test_triplet_batches_keep_anchor_positive_negative_together():
    triplets = (torch.tensor([0, 1, 2]), torch.tensor([0, 1, 2]), torch.tensor([5, 6, 7]))
    batches = triplet_batches(triplets, 2, seed=0, epoch=0)
    flat = [tuple(b[i : i + 3]) for b in batches for i in range(0, len(b), 3)]
    assert sorted(flat) == [(0, 0, 5), (1, 1, 6), (2, 2, 7)]
    assert [len(b) for b in batches] == [6, 3]
    with pytest.raises(ValueError, match="no triplet"):
        triplet_batches((torch.tensor([]),) * 3, 2, seed=0, epoch=0)
