"""Descriptor extraction throughput: EfficientNet-Lite0 + GeM at 448 px on the CPU.

Real photos: the museum reference paintings (shared/data/museum, one per painting, up to
640 px, mixed aspect ratios). Configurations, timed in interleaved repeats with the same
thread count, the minimum wall time kept:

- ``pyinstance.extract``  the whole pipeline from files: decode (Pillow), resize, normalise,
  batch by size, backbone + head; with and without ``size_multiple=32``.
- ``plain torch``  the anchor: the same network on images already decoded and resized
  (no I/O, no resizing), one image per forward pass, written with plain torch calls.

The ratio column is throughput relative to the anchor (< 1: the pipeline's overhead).

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
from pyinstance.data import Manifest, image_tensor, normalize, resize, scaled_size


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

    prepared = []
    for path in paths:  # the anchor gets decoded, resized, normalised images for free
        image = image_tensor(path)
        image = resize(image, scaled_size(*image.shape[1:], args.max_side))
        prepared.append(normalize(image[None], backbone.input_mean, backbone.input_std))

    def plain_torch() -> None:
        with torch.inference_mode():
            for image in prepared:
                head(backbone(image))

    def pipeline(size_multiple: int | None) -> None:
        pyinstance.extract(
            paths,
            backbone,
            head,
            max_side=args.max_side,
            batch_size=args.batch_size,
            size_multiple=size_multiple,
            progress=False,
        )

    configs = {
        "plain torch (pre-decoded, batch 1)": plain_torch,
        f"pyinstance.extract (files, batch<={args.batch_size})": lambda: pipeline(None),
        f"pyinstance.extract size_multiple=32 (batch<={args.batch_size})": lambda: pipeline(32),
    }
    plain_torch()  # warm-up: oneDNN primitive creation, page cache
    best = {name: float("inf") for name in configs}
    for _ in range(args.repeats):
        for name, run in configs.items():
            start = time.perf_counter()
            run()
            best[name] = min(best[name], time.perf_counter() - start)

    anchor = len(paths) / best["plain torch (pre-decoded, batch 1)"]
    print(
        f"EfficientNet-Lite0 + GeM, {len(paths)} museum photos, longest side {args.max_side} px, "
        f"{args.threads} threads, min of {args.repeats} interleaved repeats, torch {torch.__version__}"
    )
    print(f"{'configuration':<58} {'time s':>8} {'images/s':>9} {'ratio':>6}")
    for name, seconds in best.items():
        rate = len(paths) / seconds
        print(f"{name:<58} {seconds:>8.3f} {rate:>9.2f} {rate / anchor:>6.2f}")


if __name__ == "__main__":
    main()
