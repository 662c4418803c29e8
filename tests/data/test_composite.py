"""SceneComposer: determinism, the reference's known region, scale, perspective, other
references beside it, argument and image checks."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageDraw

from pyinstance.data.composite import Scene, SceneComposer, _perspective_quad

GREEN = (0, 255, 0)
BLUE = (0, 0, 255)


def solid(width: int, height: int, colour: tuple[int, int, int]) -> Image.Image:
    return Image.new("RGB", (width, height), colour)


def green_mask(scene: Scene) -> np.ndarray:
    """Pixels of the green reference. Walls, frames and labels are never this saturated
    (their channels stay within 0.4 of each other), and lighting keeps green above 150."""
    pixels = np.asarray(scene.image).astype(int)
    red, green, blue = pixels[..., 0], pixels[..., 1], pixels[..., 2]
    return green > 2 * np.maximum(red, blue) + 30


def blue_mask(scene: Scene) -> np.ndarray:
    pixels = np.asarray(scene.image).astype(int)
    red, green, blue = pixels[..., 0], pixels[..., 1], pixels[..., 2]
    return blue > 2 * np.maximum(red, green) + 30


def bounding_box(mask: np.ndarray) -> tuple[int, int, int, int]:
    ys, xs = np.nonzero(mask)
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def polygon_mask(corners: np.ndarray, width: int, height: int) -> np.ndarray:
    mask = Image.new("L", (width, height), 0)
    ImageDraw.Draw(mask).polygon([tuple(point) for point in corners], fill=1)
    return np.asarray(mask).astype(bool)


def test_same_seed_same_scene_other_seed_other_scene():
    composer = SceneComposer(size=128)
    reference, others = solid(60, 40, GREEN), [solid(30, 50, BLUE), solid(40, 40, (200, 0, 0))]
    first = composer(reference, np.random.default_rng(5), others)
    again = composer(reference, np.random.default_rng(5), others)
    other = composer(reference, np.random.default_rng(6), others)
    assert first.image.tobytes() == again.image.tobytes()
    assert first.box == again.box and np.array_equal(first.corners, again.corners)
    assert first.other_boxes == again.other_boxes
    assert first.image.tobytes() != other.image.tobytes()


@settings(max_examples=40, deadline=None)
@given(
    width=st.integers(20, 200),
    height=st.integers(20, 200),
    frame=st.sampled_from([0.0, 1.0]),
    seed=st.integers(0, 2**32 - 1),
)
def test_box_and_corners_are_where_the_reference_landed(width, height, frame, seed):
    composer = SceneComposer(size=160, frame=frame)
    scene = composer(solid(width, height, GREEN), np.random.default_rng(seed))
    assert max(scene.image.size) == 160 and scene.image.mode == "RGB"
    mask = green_mask(scene)
    found = bounding_box(mask)
    assert all(abs(a - b) <= 2 for a, b in zip(found, scene.box, strict=True)), (found, scene.box)
    assert scene.corners.shape == (4, 2)
    ys, xs = np.nonzero(mask)
    for corner in scene.corners:  # an acute corner's tip pixels are only partly covered
        nearest = np.hypot(xs + 0.5 - corner[0], ys + 0.5 - corner[1]).min()
        assert nearest <= 3.0, (corner, nearest)
    # Pixels inside the corners' polygon are green, those outside are not, but for a band
    # of about one pixel along the edges (anti-aliasing, blur).
    expected = polygon_mask(scene.corners, *scene.image.size)
    perimeter = np.hypot(*(scene.corners - np.roll(scene.corners, 1, axis=0)).T).sum()
    assert (mask ^ expected).sum() <= 1.2 * perimeter
    assert mask.sum() >= 0.5 * expected.sum()


@settings(max_examples=30, deadline=None)
@given(
    low=st.floats(0.2, 0.9),
    spread=st.floats(0.0, 0.1),
    perspective=st.floats(0.0, 0.4),
    seed=st.integers(0, 2**32 - 1),
)
def test_reference_scale_is_within_range(low, spread, perspective, seed):
    size = 200
    composer = SceneComposer(size=size, scale=(low, low + spread), perspective=perspective)
    scene = composer(solid(90, 60, GREEN), np.random.default_rng(seed))
    x0, y0, x1, y1 = scene.box
    fraction = max(x1 - x0, y1 - y0) / max(scene.image.size)
    assert low - 2 / size <= fraction <= low + spread + 2 / size
    assert 0 <= x0 < x1 <= scene.image.width and 0 <= y0 < y1 <= scene.image.height


def test_no_perspective_keeps_a_rectangle_of_the_reference_aspect():
    scene = SceneComposer(perspective=0.0)(solid(90, 60, GREEN), np.random.default_rng(0))
    top_left, top_right, bottom_right, bottom_left = scene.corners
    assert top_left[1] == pytest.approx(top_right[1]) and top_left[0] == pytest.approx(
        bottom_left[0]
    )
    width, height = bottom_right - top_left
    assert width / height == pytest.approx(1.5)


@settings(max_examples=50, deadline=None)
@given(
    width=st.integers(1, 500),
    height=st.integers(1, 500),
    amount=st.floats(0.0, 0.4),
    seed=st.integers(0, 2**32 - 1),
)
def test_perspective_moves_no_corner_more_than_its_bound(width, height, amount, seed):
    quad = _perspective_quad(width, height, amount, np.random.default_rng(seed))
    rectangle = np.array([[0, 0], [width, 0], [width, height], [0, height]], dtype=float)
    moves = np.abs(quad - rectangle) / np.array([width, height])
    assert (moves <= amount + 1e-9).all()
    # Still a convex quadrilateral with its corners in order (clockwise on screen).
    edges = np.roll(quad, -1, axis=0) - quad
    turns = (
        edges[:, 0] * np.roll(edges, -1, axis=0)[:, 1]
        - edges[:, 1] * np.roll(edges, -1, axis=0)[:, 0]
    )
    assert (turns > 0).all()


def test_perspective_moves_corners_off_a_rectangle():
    composer = SceneComposer(size=128, perspective=0.15)
    rng = np.random.default_rng(0)
    slants = []
    for _ in range(20):
        top_left, top_right, _, bottom_left = composer(solid(90, 60, GREEN), rng).corners
        slants.append(abs(top_left[1] - top_right[1]) + abs(top_left[0] - bottom_left[0]))
    assert max(slants) > 3.0


@settings(max_examples=40, deadline=None)
@given(
    reference=st.tuples(st.integers(5, 150), st.integers(5, 150)),
    others=st.lists(st.tuples(st.integers(1, 150), st.integers(1, 150)), min_size=1, max_size=4),
    perspective=st.floats(0.0, 0.4),
    seed=st.integers(0, 2**32 - 1),
)
@example(reference=(5, 62), others=[(1, 1)], perspective=0.25, seed=0)
@example(reference=(97, 5), others=[(1, 1)], perspective=0.25, seed=7)
def test_others_never_overlap_the_reference(reference, others, perspective, seed):
    composer = SceneComposer(size=160, others=3, perspective=perspective)
    pool = [solid(width, height, BLUE) for width, height in others]
    scene = composer(solid(*reference, GREEN), np.random.default_rng(seed), pool)
    assert len(scene.other_boxes) <= min(3, len(pool))
    x0, y0, x1, y1 = scene.box
    blue = blue_mask(scene)
    assert not blue[y0:y1, x0:x1].any()
    # The picture lies inside its box (how tightly the box fits is tested above on pictures
    # of usual proportions: the acute tips of a thin, slanted one, e.g. 5×62 or 97×5 px,
    # blend below the colour test several pixels short of the box).
    found = bounding_box(green_mask(scene))
    assert found[0] >= x0 - 2 and found[1] >= y0 - 2 and found[2] <= x1 + 2 and found[3] <= y1 + 2
    for ox0, oy0, ox1, oy1 in scene.other_boxes:
        assert ox1 <= x0 or x1 <= ox0 or oy1 <= y0 or y1 <= oy0
        assert blue[oy0:oy1, ox0:ox1].any()


def test_others_are_hung_often():
    composer = SceneComposer(size=200, others=3)
    pool = [solid(50, 70, BLUE), solid(80, 50, BLUE), solid(60, 60, BLUE), solid(40, 90, BLUE)]
    rng = np.random.default_rng(0)
    placed = [len(composer(solid(70, 50, GREEN), rng, pool).other_boxes) for _ in range(40)]
    assert sum(placed) >= 20 and max(placed) >= 2


def test_no_others_without_a_pool_or_with_zero():
    reference = solid(70, 50, GREEN)
    assert SceneComposer()(reference, np.random.default_rng(1)).other_boxes == ()
    rng = np.random.default_rng(1)
    scene = SceneComposer(others=0)(reference, rng, [solid(50, 50, BLUE)] * 3)
    assert scene.other_boxes == () and not blue_mask(scene).any()


@pytest.mark.parametrize(
    ("field", "value", "error"),
    [
        ("size", 16, ValueError),
        ("size", 448.0, TypeError),
        ("scale", (0.0, 0.5), ValueError),
        ("scale", (0.5, 1.2), ValueError),
        ("scale", (0.8, 0.3), ValueError),
        ("scale", 0.5, TypeError),
        ("perspective", -0.1, ValueError),
        ("perspective", 0.5, ValueError),
        ("others", -1, ValueError),
        ("others", 1.5, TypeError),
        ("frame", 2.0, ValueError),
        ("frame", float("nan"), ValueError),
        ("aspect", 0.9, ValueError),
    ],
)
def test_bad_parameters_are_refused_by_name(field, value, error):
    with pytest.raises(error, match=field):
        SceneComposer(**{field: value})


@pytest.mark.parametrize("mode", ["L", "RGBA", "P"])
def test_references_that_are_not_rgb_are_refused(mode):
    composer = SceneComposer()
    with pytest.raises(ValueError, match=rf"reference: .*got mode '{mode}'"):
        composer(Image.new(mode, (30, 30)), np.random.default_rng(0))
    with pytest.raises(ValueError, match=rf"others\[1\]: .*got mode '{mode}'"):
        composer(
            solid(30, 30, GREEN),
            np.random.default_rng(0),
            [solid(9, 9, BLUE), Image.new(mode, (9, 9))],
        )


def test_bad_references_others_and_generators_are_refused():
    composer, reference = SceneComposer(), solid(30, 30, GREEN)
    with pytest.raises(TypeError, match="reference: expected a PIL image"):
        composer("painting.jpg", np.random.default_rng(0))
    with pytest.raises(ValueError, match="reference: empty"):
        composer(Image.new("RGB", (0, 10)), np.random.default_rng(0))
    with pytest.raises(TypeError, match="rng: expected a numpy.random.Generator"):
        composer(reference, 3)
    with pytest.raises(TypeError, match="others: expected a sequence"):
        composer(reference, np.random.default_rng(0), solid(9, 9, BLUE))
    with pytest.raises(TypeError, match=r"others\[0\]: expected a PIL image"):
        composer(reference, np.random.default_rng(0), ["other.jpg"])
