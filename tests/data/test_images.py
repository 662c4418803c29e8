"""Image decoding (EXIF, RGB), resizing, normalisation, and clear errors for bad files."""

from __future__ import annotations

import warnings
from math import ceil

import numpy as np
import pytest
import torch
from PIL import Image

from pyinstance.data import (
    ImageDecodeError,
    decode_image,
    image_tensor,
    load_image,
    normalize,
    resize,
    scaled_size,
    upright_rgb,
)

ORIENTATION = 0x0112


def _left_red_right_blue(width: int = 40, height: int = 20) -> Image.Image:
    pixels = np.zeros((height, width, 3), dtype=np.uint8)
    pixels[:, : width // 2, 0] = 255
    pixels[:, width // 2 :, 2] = 255
    return Image.fromarray(pixels)


def test_exif_orientation_is_applied(tmp_path) -> None:  # noqa: ANN001
    image = _left_red_right_blue()
    exif = image.getexif()
    exif[ORIENTATION] = 6  # stored sideways: display rotated 90° clockwise
    path = tmp_path / "rotated.jpg"
    image.save(path, exif=exif, quality=95)
    upright = image_tensor(load_image(path))
    assert upright.shape == (3, 40, 20)  # portrait once upright
    top, bottom = upright[:, :20].float().mean(dim=(1, 2)), upright[:, 20:].float().mean(dim=(1, 2))
    assert top[0] > 200 and top[2] < 50  # the red (left) half is now on top
    assert bottom[2] > 200 and bottom[0] < 50
    # a PIL image opened by the caller is made upright as well
    with Image.open(path) as opened:
        assert image_tensor(opened).shape == (3, 40, 20)


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "CMYK", "I;16"])
def test_any_mode_becomes_rgb(tmp_path, mode: str) -> None:  # noqa: ANN001
    image = _left_red_right_blue().convert(mode if mode != "I;16" else "L")
    if mode == "I;16":
        image = Image.fromarray(np.full((20, 40), 30000, dtype=np.uint16))
    path = tmp_path / ("x.tiff" if mode in {"CMYK", "I;16"} else "x.png")
    image.save(path)
    loaded = load_image(path)
    assert loaded.mode == "RGB" and loaded.size == (40, 20)
    assert image_tensor(path).shape == (3, 20, 40)


def test_missing_and_corrupt_files_name_the_file(tmp_path) -> None:  # noqa: ANN001
    with pytest.raises(FileNotFoundError, match="no_such.jpg"):
        load_image(tmp_path / "no_such.jpg")
    garbage = tmp_path / "garbage.jpg"
    garbage.write_bytes(b"this is not an image at all")
    with pytest.raises(ImageDecodeError, match="garbage.jpg"):
        load_image(garbage)
    good = tmp_path / "good.jpg"
    _left_red_right_blue(400, 300).save(good, quality=90)
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(good.read_bytes()[:600])
    with pytest.raises(ImageDecodeError, match="truncated.jpg"):
        image_tensor(truncated)
    (tmp_path / "a_folder").mkdir()
    with pytest.raises(FileNotFoundError, match="a_folder"):
        load_image(tmp_path / "a_folder")  # a directory is not an image file


def test_image_tensor_kinds_agree() -> None:
    image = _left_red_right_blue()
    array = np.asarray(image)
    from_pil = image_tensor(image)
    assert from_pil.dtype == torch.uint8 and from_pil.shape == (3, 20, 40)
    assert torch.equal(image_tensor(array), from_pil)
    assert torch.equal(image_tensor(from_pil), from_pil)
    floats = from_pil.float() / 255
    assert image_tensor(floats) is floats


def test_image_tensor_bad_inputs() -> None:
    with pytest.raises(ValueError, match="H×W×3 uint8"):
        image_tensor(np.zeros((4, 4), dtype=np.uint8))
    with pytest.raises(ValueError, match="H×W×3 uint8"):
        image_tensor(np.zeros((4, 4, 3), dtype=np.float32))
    with pytest.raises(ValueError, match="3×H×W"):
        image_tensor(torch.zeros(4, 5, 5))
    with pytest.raises(ValueError, match="empty"):
        image_tensor(torch.zeros(3, 0, 5))
    with pytest.raises(ValueError, match="NaN"):
        image_tensor(torch.full((3, 2, 2), float("nan")), name="images[3]")
    with pytest.raises(TypeError, match="uint8 or floating"):
        image_tensor(torch.zeros(3, 2, 2, dtype=torch.int32))
    with pytest.raises(ValueError, match=r"images\[1\]: expected a dense tensor.*meta"):
        image_tensor(torch.zeros(3, 4, 4, device="meta"), name="images[1]")
    with pytest.raises(ValueError, match="expected a dense tensor.*sparse_coo"):
        image_tensor(torch.zeros(3, 4, 4).to_sparse())
    flipped = np.ascontiguousarray(_left_red_right_blue())[:, ::-1]  # negative stride
    assert torch.equal(
        image_tensor(flipped)[:, :, 0], image_tensor(np.asarray(_left_red_right_blue()))[:, :, -1]
    )
    with pytest.raises(TypeError, match="got int"):
        image_tensor(42)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("height", "width", "longest", "expected"),
    [
        (300, 451, 448, (298, 448)),
        (451, 300, 448, (448, 298)),
        (100, 100, 64, (64, 64)),
        (10, 20, 80, (40, 80)),  # upscaling too
        (1, 1000, 10, (1, 10)),  # never below one pixel
        (223, 324, 100, (69, 100)),  # 68.83: to nearest, not down
        (333, 500, 101, (67, 101)),  # 67.27
        (7, 3, 5, (5, 2)),  # 2.14
        (5, 9, 7, (4, 7)),  # 3.89
        (1110, 1282, 300, (260, 300)),  # 259.75
    ],
)
def test_scaled_size(height: int, width: int, longest: int, expected: tuple[int, int]) -> None:
    assert scaled_size(height, width, longest) == expected


def test_resize_and_normalize() -> None:
    constant = torch.full((3, 30, 50), 128, dtype=torch.uint8)
    out = resize(constant, (12, 20))
    assert out.shape == (3, 12, 20) and out.dtype == torch.float32
    torch.testing.assert_close(out, torch.full_like(out, 128 / 255))
    ramp = torch.rand(3, 9, 9)
    assert torch.equal(resize(ramp, (9, 9)), ramp)
    up = resize(torch.randint(0, 256, (3, 5, 7), dtype=torch.uint8), (40, 56))
    assert float(up.min()) >= 0 and float(up.max()) <= 1
    batch = torch.rand(2, 3, 4, 4)
    normed = normalize(batch, (0.5, 0.25, 0.0), (0.5, 0.5, 2.0))
    torch.testing.assert_close(normed[:, 1], (batch[:, 1] - 0.25) / 0.5)
    torch.testing.assert_close(normed[:, 2], batch[:, 2] / 2.0)


def test_16_bit_grey_png_is_scaled_not_saturated(tmp_path) -> None:  # noqa: ANN001
    ramp = np.array([[0, 257, 30000, 65535]], dtype=np.uint16).repeat(3, axis=0)
    path = tmp_path / "grey16.png"
    Image.fromarray(ramp).save(path)
    with Image.open(path) as opened:
        assert opened.mode.startswith("I;16")  # the case that used to saturate
    loaded = image_tensor(path)
    expected = torch.tensor([0, 1, 117, 255], dtype=torch.uint8)  # round(v / 65535 * 255)
    assert loaded.dtype == torch.uint8 and loaded.shape == (3, 3, 4)
    for channel in range(3):
        assert torch.equal(loaded[channel, 1], expected)


def test_float_tiff_in_unit_range_loads_and_outside_is_refused(tmp_path) -> None:  # noqa: ANN001
    values = np.array([[0.0, 0.25, 0.5, 1.0]], dtype=np.float32).repeat(2, axis=0)
    path = tmp_path / "unit.tiff"
    Image.fromarray(values).save(path)
    loaded = image_tensor(path)
    # round(v * 255), numpy's round-half-to-even: 63.75 -> 64, 127.5 -> 128
    assert torch.equal(loaded[1, 0], torch.tensor([0, 64, 128, 255], dtype=torch.uint8))
    bad = tmp_path / "hundreds.tiff"
    Image.fromarray(values * 200).save(bad)
    with pytest.raises(
        ImageDecodeError, match=r"hundreds\.tiff.*must lie in \[0, 1\], got \[0, 200\]"
    ):
        load_image(bad)


def test_float_tensors_outside_unit_range_are_refused() -> None:
    with pytest.raises(ValueError, match=r"images\[2\]: a float image must lie in \[0, 1\]"):
        image_tensor(torch.full((3, 4, 4), 255.0), name="images[2]")
    with pytest.raises(ValueError, match=r"got values in \[-0\.5, 0\.5\]"):
        image_tensor(torch.tensor([-0.5, 0.5]).repeat(3, 2, 1))
    edges = torch.tensor([0.0, 1.0]).repeat(3, 2, 1)
    assert image_tensor(edges) is edges


def test_decompression_bomb_names_the_file(tmp_path, monkeypatch) -> None:  # noqa: ANN001
    path = tmp_path / "bomb.png"
    Image.new("L", (100, 100)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 2000)  # 10000 pixels > 2 × 2000
    with pytest.raises(ImageDecodeError, match=r"bomb\.png.*too large.*decompression bomb"):
        load_image(path)


def test_resize_antialiases_like_pillow() -> None:
    rng = np.random.default_rng(7)
    pixels = rng.integers(0, 256, size=(37, 53, 3), dtype=np.uint8)
    floats = torch.from_numpy(pixels).permute(2, 0, 1).float() / 255.0
    out = resize(floats, (11, 16))
    for channel in range(3):
        plane = Image.fromarray(pixels[:, :, channel].astype(np.float32) / 255.0, "F")
        expected = np.asarray(plane.resize((16, 11), Image.BILINEAR))  # Pillow's triangle filter
        np.testing.assert_allclose(out[channel].numpy(), expected, atol=1e-5)
    # uint8 is resized in uint8: Pillow's 8-bit result, within one level of the float one.
    eight_bit = resize(torch.from_numpy(pixels).permute(2, 0, 1), (11, 16))
    pillow = np.asarray(Image.fromarray(pixels).resize((16, 11), Image.BILINEAR))
    np.testing.assert_allclose(eight_bit.permute(1, 2, 0).numpy() * 255, pillow, atol=1.0 + 1e-4)
    assert float((eight_bit - out).abs().max()) <= 1 / 255 + 1e-6
    # A one-pixel checkerboard shrunk 4 times is mid-grey, not an aliased pattern.
    checker = ((np.indices((64, 64)).sum(axis=0) % 2) * 255).astype(np.uint8)
    board = torch.from_numpy(checker).expand(3, 64, 64)
    torch.testing.assert_close(
        resize(board, (16, 16)), torch.full((3, 16, 16), 0.5), atol=0.02, rtol=0
    )


def _jpeg(path, width: int, height: int, orientation: int | None = None) -> None:  # noqa: ANN001
    """A smooth left-red / right-blue JPEG of stored size ``width``×``height``."""
    image = _left_red_right_blue(width, height)
    exif = image.getexif()
    if orientation is not None:
        exif[ORIENTATION] = orientation
    image.save(path, exif=exif, quality=95)


def test_draft_decoding_reduces_by_the_largest_power_of_two_that_keeps_the_target(tmp_path) -> None:  # noqa: ANN001
    path = tmp_path / "photo.jpg"
    _jpeg(path, 400, 300)
    cases = [
        ((70, 93), (75, 100)),  # 400 // 93 = 4, 300 // 70 = 4: a quarter
        ((80, 100), (150, 200)),  # 300 // 80 = 3: only a half keeps 80 rows
        ((30, 40), (38, 50)),  # an eighth: ceil(300 / 8) = 38
        ((300, 400), (300, 400)),  # full size
        ((600, 800), (300, 400)),  # never upscaled by the decoder
    ]
    for target, expected in cases:
        decoded = decode_image(path, lambda h, w, t=target: t, reducing_gap=1)
        assert (decoded.image.height, decoded.image.width) == expected, target
        assert decoded.full_size == (300, 400) and decoded.image.mode == "RGB"
    # the default gap 2 keeps twice the target: 400 // 186 = 2, 300 // 140 = 2: a half
    assert decode_image(path, lambda h, w: (70, 93)).image.size == (200, 150)
    with pytest.raises(ValueError, match="reducing_gap: expected a number >= 1"):
        decode_image(path, lambda h, w: (70, 93), reducing_gap=0.5)
    assert load_image(path).size == (400, 300)
    png = tmp_path / "photo.png"
    _left_red_right_blue(400, 300).save(png)
    assert decode_image(png, lambda h, w: (30, 40)).image.size == (400, 300)  # not a JPEG


def test_draft_decoding_keeps_the_exif_orientation(tmp_path) -> None:  # noqa: ANN001
    path = tmp_path / "sideways.jpg"
    _jpeg(path, 400, 200, orientation=6)  # stored landscape, displayed portrait 200×400
    requested = []

    def target(height: int, width: int) -> tuple[int, int]:
        requested.append((height, width))
        return 100, 50  # upright: a quarter in both directions

    decoded = decode_image(path, target, reducing_gap=1)
    assert requested == [(400, 200)] and decoded.full_size == (400, 200)
    assert (decoded.image.height, decoded.image.width) == (100, 50)  # not 50 rows by 25
    pixels = np.asarray(decoded.image).astype(int)
    assert pixels[:40, :, 0].mean() > 200 and pixels[:40, :, 2].mean() < 60  # red on top
    assert pixels[60:, :, 2].mean() > 200 and pixels[60:, :, 0].mean() < 60


def test_truncated_jpeg_in_draft_mode_names_the_file(tmp_path) -> None:  # noqa: ANN001
    good = tmp_path / "good.jpg"
    noise = np.random.default_rng(1).integers(0, 256, (600, 800, 3), dtype=np.uint8)
    Image.fromarray(noise).save(good, quality=90)
    truncated = tmp_path / "cut.jpg"
    truncated.write_bytes(good.read_bytes()[:4000])
    with pytest.raises(ImageDecodeError, match="cut.jpg"):
        decode_image(truncated, lambda h, w: (75, 100), reducing_gap=1)


def test_draft_decoding_keeps_the_gap_on_each_side(tmp_path) -> None:  # noqa: ANN001
    """The side that limits the reduction decides it: a 640×480 JPEG for 10×80 (gap 2:
    20×160) or 60×10 (120×20) is decoded at a quarter (480 // 120 = 640 // 160 = 4), and
    a one-pixel target (gap 1) on a 12-pixel side at an eighth (ceil(12 / 8) = 2)."""
    path = tmp_path / "photo.jpg"
    _jpeg(path, 640, 480)
    for target in ((10, 80), (60, 10)):
        assert decode_image(path, lambda h, w, t=target: t).image.size == (160, 120), target
    for width, height in ((12, 64), (64, 12)):
        thin = tmp_path / f"{width}x{height}.jpg"
        _jpeg(thin, width, height)
        decoded = decode_image(thin, lambda h, w: (1, 1), reducing_gap=1)
        assert decoded.image.size == (ceil(width / 8), ceil(height / 8))


@pytest.mark.parametrize("orientation", range(2, 9))
def test_every_exif_orientation_is_undone(tmp_path, orientation: int) -> None:  # noqa: ANN001
    """The stored pixels of an asymmetric 3×2 picture come back as EXIF tag 274 says they
    are displayed (mirror, rotations, transpositions written out with numpy)."""
    stored = np.arange(18, dtype=np.uint8).reshape(3, 2, 3) * 14
    shown = {
        2: stored[:, ::-1],
        3: stored[::-1, ::-1],
        4: stored[::-1],
        5: np.rot90(stored[:, ::-1], 1),  # mirrored, then a quarter turn anticlockwise
        6: np.rot90(stored, -1),  # a quarter turn clockwise
        7: np.rot90(stored[:, ::-1], -1),  # mirrored, then a quarter turn clockwise
        8: np.rot90(stored, 1),
    }[orientation]
    image = Image.fromarray(stored)
    exif = image.getexif()
    exif[ORIENTATION] = orientation
    path = tmp_path / "o.png"
    image.save(path, exif=exif)
    np.testing.assert_array_equal(np.asarray(load_image(path)), shown)


def test_32_bit_grey_is_read_as_16_bit_and_errors_name_the_image(tmp_path) -> None:  # noqa: ANN001
    """Mode ``I`` (what Pillow gives for many 16-bit files) holds 0..65535: scaled to
    0..255, not clipped; out-of-range 16-bit and float grey name the source and the kind."""
    grey = Image.fromarray(np.array([[0, 257, 32768, 65535]], np.int32), "I")
    assert np.asarray(load_image(_saved(tmp_path / "i.tiff", grey)))[0, :, 0].tolist() == [
        0,
        1,
        128,
        255,
    ]
    negative = Image.fromarray(np.array([[-5, 10]], np.int32), "I")
    with pytest.raises(ImageDecodeError, match=r"^query: 16-bit grey pixel values must lie in"):
        image_tensor(negative, "query")
    with pytest.raises(ImageDecodeError, match=r"^image: 16-bit grey pixel values must lie in"):
        image_tensor(negative)
    bright = Image.fromarray(np.array([[0.5, 1.5]], np.float32), "F")
    with pytest.raises(ImageDecodeError, match=r"^query: float pixel values must lie in \[0, 1\]"):
        image_tensor(bright, "query")
    nan = Image.fromarray(np.array([[np.nan]], np.float32), "F")
    with pytest.raises(ImageDecodeError, match=r"^image: float pixels contain NaN"):
        image_tensor(nan)


def _saved(path, image: Image.Image):  # noqa: ANN001, ANN202
    image.save(path)
    return path


def test_image_tensor_edges() -> None:
    """One-pixel-wide pictures are images; a float above 1 is refused; a read-only array
    (what ``np.asarray`` of a PIL image gives) is taken without a warning."""
    assert image_tensor(torch.zeros(3, 5, 1)).shape == (3, 5, 1)
    with pytest.raises(ValueError, match=r"^image: a float image must lie in \[0, 1\]"):
        image_tensor(torch.full((3, 2, 2), 1.5))
    with pytest.raises(ValueError, match=r"^photo: empty image"):
        image_tensor(torch.zeros(3, 0, 4), "photo")
    frozen = np.zeros((2, 3, 3), np.uint8)
    frozen.flags.writeable = False
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tensor = image_tensor(frozen)
    tensor += 1  # a tensor of its own: the read-only array stays as it was
    assert tensor.shape == (3, 2, 3) and not frozen.any()


def test_upright_rgb_names_the_image_by_default() -> None:
    with pytest.raises(ImageDecodeError, match=r"^image: 16-bit grey pixel values"):
        upright_rgb(Image.fromarray(np.array([[-5, 10]], np.int32), "I"))


def test_scaled_size_keeps_one_pixel_sides() -> None:
    assert scaled_size(1000, 1, 100) == (100, 1)
    assert scaled_size(1, 1000, 100) == (1, 100)


def test_resized_white_stays_in_the_unit_range() -> None:
    """Anti-aliasing weights sum to 1 only up to rounding: a white picture must still give
    values <= 1 (what image_tensor accepts as a float image)."""
    for height, width in ((5, 5), (11, 9), (23, 37), (38, 17)):
        for size in ((3, 7), (11, 13), (17, 5), (29, 31)):
            out = resize(torch.full((3, height, width), 255, dtype=torch.uint8), size)
            assert out.max() <= 1.0 and out.min() >= 1.0 - 1e-6, (height, width, size)


def test_normalize_in_float64_uses_float64_constants() -> None:
    """mean/std are taken in the batch's precision: 0.1 and 0.3 are not float32 numbers."""
    batch = torch.rand(2, 3, 4, 5, dtype=torch.float64)
    expected = (batch.numpy() - 0.1) / 0.3
    np.testing.assert_array_equal(normalize(batch, (0.1,) * 3, (0.3,) * 3).numpy(), expected)


def test_normalize_builds_its_constants_on_the_batch_device() -> None:
    """The meta device stands in for an accelerator: a constant left on the CPU would not
    combine with the batch."""
    batch = torch.empty(2, 3, 4, 5, device="meta")
    assert normalize(batch, (0.1,) * 3, (0.3,) * 3).device.type == "meta"
