"""pyinstance.extract's batching loop with tiny modules and engines (milliseconds a test).

Every expected value is worked out here: plain-coloured pictures resize to the same colour,
so a descriptor that is the channel means of the normalised pixels is known exactly; the
progress bar, the torch threads, the training modes and the cast of the output are
observed directly.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import pyinstance
from pyinstance import extraction
from pyinstance.data import DecodedImage

MEAN = (0.25, 0.5, 0.75)
STD = (0.5, 0.25, 0.125)


class _Pixels(nn.Module):
    """A backbone with one parameter: the normalised pixels times that parameter (one)."""

    out_channels = 3
    min_input_size = 2
    input_mean = MEAN
    input_std = STD

    def __init__(self) -> None:
        super().__init__()
        self.one = nn.Parameter(torch.ones(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.one


class _ChannelMeans(nn.Module):
    """A head: the channel means (not normalised), so that a colour's value is exact."""

    in_channels = 3
    out_dim = 3

    def __init__(self) -> None:
        super().__init__()
        self.one = nn.Parameter(torch.ones(()))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return features.mean(dim=(2, 3)) * self.one


def _plain(red: int, green: int, blue: int, height: int = 6, width: int = 10) -> torch.Tensor:
    image = torch.empty(3, height, width, dtype=torch.uint8)
    for channel, value in enumerate((red, green, blue)):
        image[channel] = value
    return image


def _normalised(red: int, green: int, blue: int) -> torch.Tensor:
    """The colour's normalised channel values, worked out in float64."""
    return torch.tensor(
        [(value / 255 - m) / s for value, m, s in zip((red, green, blue), MEAN, STD, strict=True)],
        dtype=torch.float64,
    )


COLOURS = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (51, 102, 204), (255, 255, 255)]


class _MeansEngine:
    """An engine: the channel means of the pixels it is handed, recorded."""

    def __init__(self, rows_short: int = 0) -> None:
        self.batches: list[torch.Tensor] = []
        self.rows_short = rows_short

    def __call__(self, pixels: torch.Tensor) -> torch.Tensor:
        self.batches.append(pixels)
        return pixels.mean(dim=(2, 3))[: pixels.shape[0] - self.rows_short]


def test_every_image_of_several_chunks_and_batches_gets_its_own_descriptor() -> None:
    """Eleven pictures of two sizes, batches of 2 (chunks of 16), two scales: each row is
    its picture's colour at each scale (the same at both: plain colours)."""
    images = [_plain(*COLOURS[i % 5], width=10 if i % 3 else 14) for i in range(11)]
    out = pyinstance.extract(
        images, _Pixels(), _ChannelMeans(), scales=(1.0, 0.5), max_side=20, batch_size=2,
        progress=False,
    )  # fmt: skip
    assert out.shape == (11, 2, 3)
    for i in range(11):
        for scale in range(2):
            torch.testing.assert_close(
                out[i, scale].double(), _normalised(*COLOURS[i % 5]), rtol=1e-6, atol=1e-6
            )


def test_chunks_of_batch_size_times_eight_cover_every_image_once() -> None:
    """batch_size 1 makes chunks of 8: 17 pictures are three chunks (8, 8, 1)."""
    engine = _MeansEngine()
    images = [_plain(*COLOURS[i % 5]) for i in range(17)]
    out = pyinstance.extract(
        images, _Pixels(), _ChannelMeans(), max_side=10, batch_size=1, progress=False,
        engine=engine,
    )  # fmt: skip
    assert [batch.shape[0] for batch in engine.batches] == [1] * 17
    for i in range(17):
        torch.testing.assert_close(
            out[i, 0].double(), _normalised(*COLOURS[i % 5]), atol=1e-6, rtol=1e-6
        )


def test_batches_hold_at_most_batch_size_images_of_one_size() -> None:
    engine = _MeansEngine()
    images = [_plain(*COLOURS[i % 5]) for i in range(7)]
    pyinstance.extract(
        images, _Pixels(), _ChannelMeans(), max_side=10, batch_size=3, progress=False,
        engine=engine,
    )  # fmt: skip
    assert [batch.shape[0] for batch in engine.batches] == [3, 3, 1]


def test_an_engine_gets_normalised_float32_pixels_and_its_output_is_cast() -> None:
    engine = _MeansEngine()
    backbone, head = _Pixels(), _ChannelMeans()
    backbone.train()
    head.train()
    out = pyinstance.extract(
        [_plain(51, 102, 204), _plain(255, 0, 0)], backbone, head, max_side=10,
        dtype=torch.float64, progress=False, engine=engine,
    )  # fmt: skip
    assert out.dtype == torch.float64
    (pixels,) = engine.batches
    assert pixels.dtype == torch.float32 and pixels.shape == (2, 3, 6, 10)
    torch.testing.assert_close(
        pixels[0, :, 2, 3].double(), _normalised(51, 102, 204), atol=1e-6, rtol=0
    )
    # the engine's float32 values, widened: equal to them exactly
    assert torch.equal(out[:, 0], pixels.mean(dim=(2, 3)).double())
    # the modules are neither switched to eval nor used
    assert backbone.training and head.training


def test_an_engine_that_returns_too_few_descriptors_is_an_error() -> None:
    """Rows left unwritten would be uninitialised memory: the count is checked."""
    with pytest.raises(ValueError, match="zip"):
        pyinstance.extract(
            [_plain(255, 0, 0)] * 2, _Pixels(), _ChannelMeans(), max_side=10, progress=False,
            engine=_MeansEngine(rows_short=1),
        )  # fmt: skip


def test_a_float64_network_runs_on_float64_pixels() -> None:
    backbone, head = _Pixels().double(), _ChannelMeans().double()
    seen: list[torch.dtype] = []
    backbone.register_forward_pre_hook(lambda module, args: seen.append(args[0].dtype))
    out = pyinstance.extract([_plain(51, 102, 204)], backbone, head, max_side=10, progress=False)
    assert seen == [torch.float64] and out.dtype == torch.float32


def test_training_modes_are_restored_after_an_error(tmp_path: Path) -> None:
    backbone, head = _Pixels(), _ChannelMeans()
    backbone.train()
    head.eval()
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"not a png")
    with pytest.raises(pyinstance.data.ImageDecodeError, match="corrupt.png"):
        pyinstance.extract(
            [_plain(255, 0, 0), corrupt], backbone, head, max_side=10, progress=False
        )
    assert backbone.training is True and head.training is False
    backbone.eval()
    head.train()
    pyinstance.extract([_plain(255, 0, 0)], backbone, head, max_side=10, progress=False)
    assert backbone.training is False and head.training is True


def test_the_modules_run_in_eval_mode() -> None:
    modes: list[bool] = []
    backbone, head = _Pixels(), _ChannelMeans()
    backbone.register_forward_pre_hook(lambda module, args: modes.append(module.training))
    head.register_forward_pre_hook(lambda module, args: modes.append(module.training))
    backbone.train()
    head.train()
    pyinstance.extract([_plain(255, 0, 0)], backbone, head, max_side=10, progress=False)
    assert modes == [False, False]


def _final_counter(stderr: str) -> str:
    return stderr.replace("\r", "\n").strip().splitlines()[-1]


def test_the_progress_bar_counts_images_across_chunks(capsys) -> None:  # noqa: ANN001
    images = [_plain(*COLOURS[i % 5]) for i in range(9)]
    pyinstance.extract(images, _Pixels(), _ChannelMeans(), max_side=10, batch_size=1)
    last = _final_counter(capsys.readouterr().err)
    assert last.startswith("extract: 100%") and " 9/9 " in last and "img/s" in last
    pyinstance.extract(images, _Pixels(), _ChannelMeans(), max_side=10, progress=False)
    assert capsys.readouterr().err == ""


def test_with_an_engine_resizing_and_normalising_run_on_one_thread(monkeypatch) -> None:  # noqa: ANN001
    seen: list[tuple[str, int]] = []
    real_resize, real_normalize = extraction.resize, extraction.normalize

    def resize(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        seen.append(("resize", torch.get_num_threads()))
        return real_resize(image, size)

    def normalize(batch: torch.Tensor, mean, std) -> torch.Tensor:  # noqa: ANN001
        seen.append(("normalize", torch.get_num_threads()))
        return real_normalize(batch, mean, std)

    def engine(pixels: torch.Tensor) -> torch.Tensor:
        seen.append(("engine", torch.get_num_threads()))
        return pixels.mean(dim=(2, 3))

    monkeypatch.setattr(extraction, "resize", resize)
    monkeypatch.setattr(extraction, "normalize", normalize)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        images = [_plain(255, 0, 0)]
        pyinstance.extract(
            images, _Pixels(), _ChannelMeans(), max_side=10, progress=False, engine=engine
        )
        assert seen == [("resize", 1), ("normalize", 1), ("engine", 2)]
        seen.clear()
        pyinstance.extract(images, _Pixels(), _ChannelMeans(), max_side=10, progress=False)
        assert seen == [("resize", 2), ("normalize", 2)]
    finally:
        torch.set_num_threads(before)


def test_mean_and_std_default_to_imagenet_per_channel() -> None:
    """A backbone without input_mean / input_std: ImageNet's, each on its own channel."""
    red = np.zeros((4, 4, 3), np.uint8)
    red[..., 2] = 255
    out = pyinstance.extract([red], _BareBackbone(), _ChannelMeans(), max_side=4, progress=False)
    want = torch.tensor(
        [(0 - 0.485) / 0.229, (0 - 0.456) / 0.224, (1 - 0.406) / 0.225], dtype=torch.float64
    )
    torch.testing.assert_close(out[0, 0].double(), want, atol=1e-6, rtol=1e-6)


class _BareBackbone(nn.Module):
    """The identity with a parameter, no normalisation constants of its own."""

    out_channels = 3
    min_input_size = 2

    def __init__(self) -> None:
        super().__init__()
        self.one = nn.Parameter(torch.ones(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.one


def test_by_default_batches_hold_at_most_eight_images() -> None:
    """Nine pictures of one size with the default batch_size (8): batches of 8 and 1."""
    engine = _MeansEngine()
    images = [_plain(*COLOURS[i % 5]) for i in range(9)]
    out = pyinstance.extract(
        images, _Pixels(), _ChannelMeans(), max_side=10, progress=False, engine=engine
    )
    assert [batch.shape[0] for batch in engine.batches] == [8, 1]
    for i in range(9):
        torch.testing.assert_close(
            out[i, 0].double(), _normalised(*COLOURS[i % 5]), atol=1e-6, rtol=1e-6
        )


def test_a_head_without_values_is_refused_by_name_before_anything_moves() -> None:
    """A head on the 'meta' device (no engine) is named; the backbone stays where it was."""
    backbone = _Pixels()
    with pytest.raises(ValueError, match=r"^head: its parameters are on the 'meta' device"):
        pyinstance.extract(
            [_plain(255, 0, 0)], backbone, _ChannelMeans().to("meta"), max_side=10,
            device="cpu", progress=False,
        )  # fmt: skip
    assert backbone.one.device.type == "cpu"
    # with an engine the head only gives sizes: a head without values is fine
    out = pyinstance.extract(
        [_plain(255, 0, 0)], backbone, _ChannelMeans().to("meta"), max_side=10,
        progress=False, engine=_MeansEngine(),
    )  # fmt: skip
    torch.testing.assert_close(out[0, 0].double(), _normalised(255, 0, 0), atol=1e-6, rtol=1e-6)


def test_a_size_multiple_above_the_limit_is_refused_before_any_image_is_read(
    tmp_path: Path,
) -> None:
    """Refused by name at once (the file is never opened): not after resizing a picture to
    16385×16385 pixels."""
    never_read = tmp_path / "never-read.png"
    never_read.write_bytes(b"not a png")
    limit = extraction.MAX_RESIZED_SIDE
    with pytest.raises(
        ValueError,
        match=rf"^size_multiple: expected a positive integer <= {limit}, got {limit + 1}$",
    ):
        pyinstance.extract(
            [never_read], _Pixels(), _ChannelMeans(), max_side=10, size_multiple=limit + 1,
            progress=False,
        )  # fmt: skip


def test_a_decoded_image_handed_over_is_named_by_its_position() -> None:
    """A :class:`DecodedImage` from the caller is checked like any picture; the error names
    its place in ``images``."""
    empty = DecodedImage(Image.new("RGB", (0, 0)), (0, 0))
    with pytest.raises(ValueError, match=r"^images\[1\]: empty image of shape \(3, 0, 0\)$"):
        pyinstance.extract(
            [_plain(255, 0, 0), empty], _Pixels(), _ChannelMeans(), max_side=10, progress=False
        )


def test_with_an_engine_modules_without_values_preprocess_on_the_cpu() -> None:
    """With an engine the modules may hold no values ('meta'); by default the pictures are
    then prepared on the CPU (not copied to 'meta', where they would hold no values either)."""
    backbone, head = _Pixels().to("meta"), _ChannelMeans().to("meta")
    engine = _MeansEngine()
    out = pyinstance.extract(
        [_plain(255, 0, 0)], backbone, head, max_side=10, progress=False, engine=engine
    )
    assert [batch.device.type for batch in engine.batches] == ["cpu"]
    torch.testing.assert_close(out[0, 0].double(), _normalised(255, 0, 0), atol=1e-6, rtol=1e-6)
