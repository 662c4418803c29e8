"""Descriptor extraction throughput: EfficientNet-Lite0 + GeM at 448 px on the CPU.

Real photos: the museum reference paintings (shared/data/museum, one per painting, up to
640 px, mixed aspect ratios). Configurations, timed in interleaved repeats with the same
thread count, the minimum wall time kept:

- ``pyinstance.extract``  the whole pipeline from files: decode (Pillow), resize, normalise,
  batch by size, backbone + head; with and without ``size_multiple=32``.
- ``plain torch``  the anchor: the same network on images already decoded and resized
  (no I/O, no resizing), batched like the pipeline (images grouped by resized size, at
  most ``--batch-size`` per forward pass), written with plain torch calls; one anchor per
  sizing (with and without ``size_multiple``).

Before timing, each pipeline configuration's descriptors must equal its anchor's (cosine
similarity >= 1 - 1e-5 for every image): a speed-up only counts for the same result.
The ratio column is throughput relative to the anchor of the same sizing (< 1: the
pipeline's overhead).

    python benchmarks/extract.py            # 48 images at 448 px, 3 repeats
    python benchmarks/extract.py --quick    # a smoke run in seconds
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import torch

import pyinstance
from pyinstance.data import Manifest, decode_image, image_tensor, normalize, resize, scaled_size


def shared_data() -> Path:
    candidates = (
        [Path(os.environ["PYINSTANCE_SHARED"])] if "PYINSTANCE_SHARED" in os.environ else []
    )
    candidates += [Path(__file__).resolve().parents[1] / ".." / "shared", Path("/work/shared")]
    for candidate in candidates:
        if (candidate / "data" / "museum").is_dir():
            return candidate / "data"
    raise SystemExit("shared/data/museum not found (set PYINSTANCE_SHARED)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=48, help="museum reference photos used")
    parser.add_argument("--max-side", type=int, default=448)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--quick", action="store_true", help="4 images at 224 px, 1 repeat")
    args = parser.parse_args()
    if args.quick:
        args.images, args.max_side, args.repeats = 4, 224, 1
    torch.set_num_threads(args.threads)

    manifest = Manifest.read(shared_data() / "museum" / "manifest.csv").filter(split="reference")
    paths = manifest.paths[: args.images]
    backbone = pyinstance.get_backbone("efficientnet_lite0").eval()
    head = pyinstance.get_head("gem", in_channels=backbone.out_channels).eval()

    def sized(height: int, width: int, multiple: int | None) -> tuple[int, int]:
        size = scaled_size(height, width, args.max_side)
        if multiple is None:
            return size
        return tuple(max(multiple, round(side / multiple) * multiple) for side in size)

    def prepare(multiple: int | None) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Decoded, resized, normalised batches (what the anchor gets for free), grouped by
        size as the pipeline groups them, and the image order they hold."""
        by_size: dict[tuple[int, int], list[tuple[int, torch.Tensor]]] = {}
        for index, path in enumerate(paths):
            decoded = decode_image(path, lambda h, w: sized(h, w, multiple))
            image = resize(image_tensor(decoded.image), sized(*decoded.full_size, multiple))
            by_size.setdefault(tuple(image.shape[1:]), []).append((index, image))
        batches, order = [], []
        for group in by_size.values():
            for first in range(0, len(group), args.batch_size):
                chunk = group[first : first + args.batch_size]
                order += [index for index, _ in chunk]
                pixels = torch.stack([image for _, image in chunk])
                batches.append(normalize(pixels, backbone.input_mean, backbone.input_std))
        return batches, torch.tensor(order).argsort()

    def plain_torch(prepared: tuple[list[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        batches, inverse = prepared
        with torch.inference_mode():
            return torch.cat([head(backbone(batch)) for batch in batches])[inverse]

    def pipeline(size_multiple: int | None) -> torch.Tensor:
        return pyinstance.extract(
            paths,
            backbone,
            head,
            max_side=args.max_side,
            batch_size=args.batch_size,
            size_multiple=size_multiple,
            progress=False,
        )[:, 0]

    batch = f"batch<={args.batch_size}"
    prepared = {multiple: prepare(multiple) for multiple in (None, 32)}
    anchors = {
        None: f"plain torch (pre-decoded, {batch})",
        32: f"plain torch size_multiple=32 (pre-decoded, {batch})",
    }
    configs = {
        anchors[None]: lambda: plain_torch(prepared[None]),
        f"pyinstance.extract (files, {batch})": lambda: pipeline(None),
        anchors[32]: lambda: plain_torch(prepared[32]),
        f"pyinstance.extract size_multiple=32 (files, {batch})": lambda: pipeline(32),
    }
    anchor_of = {name: anchors[32 if "32" in name else None] for name in configs}
    # Equal results first (this also warms up: oneDNN primitive creation, page cache).
    results = {name: run() for name, run in configs.items()}
    for name, descriptors in results.items():
        expected = results[anchor_of[name]]
        agreement = torch.nn.functional.cosine_similarity(descriptors, expected, dim=1)
        if descriptors.shape != expected.shape or not bool((agreement >= 1 - 1e-5).all()):
            raise SystemExit(
                f"{name}: descriptors differ from {anchor_of[name]!r} "
                f"(lowest cosine similarity {float(agreement.min()):.6f}); not timing"
            )
    print("descriptors checked: every configuration equals its anchor (cosine >= 1 - 1e-5)")
    best = {name: float("inf") for name in configs}
    for _ in range(args.repeats):
        for name, run in configs.items():
            start = time.perf_counter()
            run()
            best[name] = min(best[name], time.perf_counter() - start)

    print(
        f"EfficientNet-Lite0 + GeM, {len(paths)} museum photos, longest side {args.max_side} px, "
        f"{args.threads} threads, min of {args.repeats} interleaved repeats, torch {torch.__version__}"
    )
    print(f"{'configuration':<62} {'time s':>8} {'images/s':>9} {'ratio':>6}")
    for name, seconds in best.items():
        rate = len(paths) / seconds
        ratio = best[anchor_of[name]] / seconds
        print(f"{name:<62} {seconds:>8.3f} {rate:>9.2f} {ratio:>6.2f}")


if __name__ == "__main__":
    main()
