"""ViewMaker with its augmentation and scene composer replaced by recording fakes: which photo
is augmented, when a view is composited (the generator's next draw against
``augment.composite``), which other photos join the scene, and the normalised tensor, each
worked out here."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from pyinstance.data.augment import Augmentation
from pyinstance.data.composite import SceneComposer
from pyinstance.train.config import parse_config
from pyinstance.train.views import ViewMaker

BASE = Path("/run-folder")


class Recorder:
    """Fake augmentation (returns the photo itself) and composer (returns a marker scene)."""

    def __init__(self, others: int = 2):
        self.augmented: list[tuple[Image.Image, np.random.Generator]] = []
        self.composed: list[tuple[Image.Image, np.random.Generator, list[Image.Image]]] = []
        self.others = others
        self.scene = Image.new("RGB", (3, 2), (1, 2, 3))

    def augment(self, image, rng):
        self.augmented.append((image, rng))
        return image

    def __call__(self, view, rng, *, others):
        self.composed.append((view, rng, list(others)))
        return SimpleNamespace(image=self.scene)


def photos(count: int) -> list[Image.Image]:
    return [Image.new("RGB", (4, 3), (10 * i, 0, 0)) for i in range(count)]


def maker(labels, *, composite: float, others: int = 2, mean=(0, 0, 0), std=(1, 1, 1)):
    config = parse_config(
        {"output": "o", "data": {"source": "p"}, "augment": {"composite": composite}}, base=BASE
    )
    made = ViewMaker(config.augment, photos(len(labels)), labels, mean=mean, std=std)
    recorder = Recorder(others)
    made.augment, made.composer = recorder.augment, recorder
    return made, recorder


def test_the_maker_takes_the_configured_augmentation_and_composer():
    config = parse_config(
        {
            "output": "o",
            "data": {"source": "p"},
            "augment": {"rotation": 5.0, "composite": 0.25, "scene_others": 3},
        },
        base=BASE,
    )
    images = photos(2)
    made = ViewMaker(config.augment, images, [4, 7], mean=[0.5, 0.4, 0.3], std=[0.2, 0.1, 0.3])
    assert isinstance(made.augment, Augmentation) and made.augment.rotation == 5.0
    assert made.augment == config.augment.augmentation()
    assert isinstance(made.composer, SceneComposer) and made.composer.others == 3
    assert made.composite == 0.25
    assert made.images is images
    assert made.labels.tolist() == [4, 7]
    assert made.mean == (0.5, 0.4, 0.3) and made.std == (0.2, 0.1, 0.3)


def test_without_compositing_the_view_is_the_augmented_photo():
    made, recorder = maker([0, 1, 2], composite=0.0)
    rng = np.random.default_rng(3)
    view = made.image(2, rng)
    assert view is made.images[2]
    assert recorder.augmented == [(made.images[2], rng)] and recorder.composed == []


def test_with_compositing_always_the_view_is_the_scene_among_other_instances():
    labels = [0, 1, 0, 2]
    made, recorder = maker(labels, composite=1.0, others=5)
    rng = np.random.default_rng(1)
    assert made.image(0, rng) is recorder.scene
    ((view, used, others),) = recorder.composed
    assert view is made.images[0] and used is rng
    # at most `others` (5) photos, all of other instances (1 and 3), each once
    assert sorted(made.images.index(image) for image in others) == [1, 3]


@pytest.mark.parametrize("seed", range(12))
def test_a_view_is_composited_when_the_next_draw_is_below_the_probability(seed):
    made, recorder = maker([0, 1], composite=0.5)
    made.image(0, np.random.default_rng(seed))
    below = np.random.default_rng(seed).random() < 0.5  # the fake augmentation draws nothing
    assert len(recorder.composed) == int(below)


def test_a_draw_equal_to_the_probability_is_not_composited():
    class Fixed:
        def __init__(self, value):
            self.value = value

        def random(self):
            return self.value

    made, recorder = maker([0, 1], composite=0.5)
    assert made.image(0, Fixed(0.5)) is made.images[0] and recorder.composed == []


def test_the_scene_takes_as_many_strangers_as_the_composer_wants():
    labels = [0, 1, 2, 3, 4, 0]
    chosen = set()
    for seed in range(10):
        made, recorder = maker(labels, composite=1.0, others=2)
        made.image(5, np.random.default_rng(seed))
        ((_, _, others),) = recorder.composed
        positions = [made.images.index(image) for image in others]
        assert len(positions) == len(set(positions)) == 2
        assert all(labels[p] != 0 for p in positions)
        chosen.add(tuple(sorted(positions)))
    assert len(chosen) > 1  # drawn by the view's generator, not fixed


def test_no_stranger_wanted_gives_a_scene_of_the_photo_alone():
    made, recorder = maker([0, 1, 2], composite=1.0, others=0)
    made.image(1, np.random.default_rng(0))
    assert recorder.composed[0][2] == []


def test_a_view_tensor_is_the_photo_scaled_to_one_and_normalised():
    labels = [0, 1]
    made, _ = maker(labels, composite=0.0, mean=(0.5, 0.25, 0.0), std=(0.5, 0.25, 2.0))
    made.images[1] = Image.fromarray(
        np.array([[[255, 0, 51], [102, 255, 0]]], np.uint8)  # 1 × 2 pixels
    )
    tensor = made(1, np.random.default_rng(0))
    assert tensor.shape == (1, 3, 1, 2) and tensor.dtype == torch.float32
    expected = np.array(
        [
            [[(1.0 - 0.5) / 0.5, (0.4 - 0.5) / 0.5]],  # red: 255, 102
            [[(0.0 - 0.25) / 0.25, (1.0 - 0.25) / 0.25]],  # green: 0, 255
            [[0.2 / 2.0, 0.0]],  # blue: 51, 0
        ],
        np.float32,
    )
    assert np.allclose(tensor[0].numpy(), expected, atol=1e-6)
