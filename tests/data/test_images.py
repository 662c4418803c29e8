"""Image decoding (EXIF, RGB), resizing, normalisation, and clear errors for bad files."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from pyinstance.data import (
    ImageDecodeError,
    image_tensor,
    load_image,
    normalize,
    resize,
    scaled_size,
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
