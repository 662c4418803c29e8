"""Decoding for the largest scale only: JPEG draft mode against the full decode.

``pyinstance.extract`` decodes a JPEG file with Pillow's draft mode (libjpeg's DCT
scaling) at the smallest 1/2, 1/4 or 1/8 reduction that still covers the largest resized
size, then resizes once, anti-aliased. This script checks that the descriptors agree with
the full decode, then times both:

1. Agreement (asserted before any timing), EfficientNet-Lite0 + GeM:
   - a 12-megapixel phone-size JPEG (a museum photo upscaled to 4032×3024, quality 92);
   - the museum photos as they are (up to 640 px: at 448 px no reduction applies, so
     draft and full decode must be identical) and at half the size (224 px: 1/2 draft);
   - the museum queries as 12-megapixel JPEGs (the phone case) against the references.
   Reported: max |difference| and min cosine of the descriptors, and P@1 of both decodes
   (1-NN by dot product; crops ``qsd1_*`` and gallery shots separately).
2. Time of decode + resize to 448 px of the 12-megapixel JPEG, full against draft, in
   interleaved repeats (minimum kept); the ratio is full / draft.

Both draft policies are measured: reducing gap 2 (the default, as Pillow's ``thumbnail``:
decode at the smallest reduction still twice the target) and gap 1 (the smallest
reduction still at least the target, where libjpeg's DCT scaling does most of the work).

    python benchmarks/decode.py              # everything (a few minutes on one core)
    python benchmarks/decode.py --quick      # 6 queries and a few references, 5 repeats
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import pyinstance
from pyinstance.data import (
    Manifest,
    decode_image,
    image_tensor,
    images,
    load_image,
    resize,
    scaled_size,
)

#: Draft against full decode, same network and size: the agreement asserted before timing.
MIN_COSINE = 0.995
MAX_ABS_DIFFERENCE = 0.02
PHONE_SIZE = (4032, 3024)
#: Reducing gaps compared: the default (asserted) and the smallest reduction >= the target.
GAPS = (2.0, 1.0)


def shared_data() -> Path:
    candidates = (
        [Path(os.environ["PYINSTANCE_SHARED"])] if "PYINSTANCE_SHARED" in os.environ else []
    )
    candidates += [Path(__file__).resolve().parents[1] / ".." / "shared", Path("/work/shared")]
    for candidate in candidates:
        if (candidate / "data" / "museum").is_dir():
            return candidate / "data"
    raise SystemExit("shared/data/museum not found (set PYINSTANCE_SHARED)")


def phone_jpeg(source: Path, folder: Path) -> Path:
    """``source`` upscaled to 12 megapixels (4032 wide for landscape) as a quality-92 JPEG."""
    with Image.open(source) as opened:
        picture = opened.convert("RGB")
    size = PHONE_SIZE if picture.width >= picture.height else PHONE_SIZE[::-1]
    path = folder / f"{source.stem}_12mp.jpg"
    picture.resize(size, Image.BICUBIC).save(path, quality=92)
    return path


class Descriptors:
    """Lite0 + GeM descriptors of files decoded fully or in draft mode."""

    def __init__(self, max_side: int) -> None:
        self.backbone = pyinstance.get_backbone("efficientnet_lite0").eval()
        self.head = pyinstance.get_head("gem", in_channels=self.backbone.out_channels).eval()
        self.max_side = max_side

    def full(self, paths: Sequence[Path], max_side: int | None = None) -> torch.Tensor:
        """From fully decoded PIL images (never drafted), 8 at a time to bound memory."""
        chunks = [
            self._extract([load_image(path) for path in paths[start : start + 8]], max_side)
            for start in range(0, len(paths), 8)
        ]
        return torch.cat(chunks)

    def draft(
        self, paths: Sequence[Path], max_side: int | None = None, gap: float = 2.0
    ) -> torch.Tensor:
        """Through ``extract`` from the files, with draft reducing gap ``gap``."""
        default = images.DRAFT_REDUCING_GAP
        images.DRAFT_REDUCING_GAP = gap
        try:
            return self._extract(list(paths), max_side)
        finally:
            images.DRAFT_REDUCING_GAP = default

    def _extract(self, images: list, max_side: int | None) -> torch.Tensor:  # noqa: ANN401
        side = max_side or self.max_side
        return pyinstance.extract(images, self.backbone, self.head, max_side=side, progress=False)[
            :, 0
        ]


def agreement(full: torch.Tensor, draft: torch.Tensor) -> tuple[float, float]:
    """(max |difference|, min cosine) of matching rows (descriptors are L2-normalised)."""
    return float((full - draft).abs().max()), float((full * draft).sum(dim=1).min())


def check(name: str, full: torch.Tensor, draft: torch.Tensor, asserted: bool) -> None:
    largest, cosine = agreement(full, draft)
    print(f"  {name:<52} max |diff| {largest:.2e}  min cosine {cosine:.6f}")
    assert not asserted or cosine >= MIN_COSINE and largest <= MAX_ABS_DIFFERENCE, (
        f"{name}: draft decoding changed the descriptors beyond the tolerance "
        f"(cosine >= {MIN_COSINE}, |diff| <= {MAX_ABS_DIFFERENCE})"
    )


def precision_at_1(
    queries: torch.Tensor, references: torch.Tensor, query_ids: list, reference_ids: list
) -> np.ndarray:
    """Whether each query's nearest reference (dot product) is its instance."""
    nearest = (queries @ references.T).argmax(dim=1).numpy()
    return np.array(reference_ids)[nearest] == np.array(query_ids)


def report_p1(name: str, hits: np.ndarray, query_sets: list) -> str:
    crops = np.array([str(q).startswith("qsd1") for q in query_sets])
    parts = [
        f"{kind} {hits[chosen].mean():.3f} ({chosen.sum()})" if chosen.any() else f"{kind} -"
        for kind, chosen in (("crops", crops), ("gallery", ~crops))
    ]
    return f"  {name:<24} P@1 " + "  ".join(parts)


def best_time(runs: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    best = {name: float("inf") for name in runs}
    for run in runs.values():
        run()  # warm-up: page cache, allocator
    for _ in range(repeats):
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-side", type=int, default=448)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--quick", action="store_true", help="6 queries, their references and 6 others; 5 repeats"
    )
    args = parser.parse_args()
    if args.quick:
        args.repeats = 5
    torch.set_num_threads(args.threads)
    museum = Manifest.read(shared_data() / "museum" / "manifest.csv")
    references = museum.filter(split="reference")
    queries = museum.filter(split="query")
    if args.quick:  # six queries, their references and six others
        queries = queries[:6]
        wanted = set(queries.instance_ids)
        kept = [i for i, e in enumerate(references) if e.instance_id in wanted or i < 6]
        references = Manifest([references[i] for i in kept], references.root)
    model = Descriptors(args.max_side)
    print(
        f"EfficientNet-Lite0 + GeM at {args.max_side} px, {args.threads} thread(s), "
        f"torch {torch.__version__}"
    )

    with tempfile.TemporaryDirectory() as folder:
        phone = phone_jpeg(references.paths[0], Path(folder))
        phone_queries = [phone_jpeg(path, Path(folder)) for path in queries.paths]
        files = references.paths + queries.paths
        half = args.max_side // 2
        full = {
            "phone": model.full([phone]),
            "stored": model.full(files),
            "half": model.full(files, half),
            "phone queries": model.full(phone_queries),
        }
        drafts = {}
        for gap in GAPS:
            asserted = gap == images.DRAFT_REDUCING_GAP
            print(
                f"1. Descriptors, draft (reducing gap {gap:g}) against full decode"
                + (
                    f" (asserted: cosine >= {MIN_COSINE}, |diff| <= {MAX_ABS_DIFFERENCE})"
                    if asserted
                    else " (reported only: not the default)"
                )
            )
            draft = {
                "phone": model.draft([phone], gap=gap),
                "stored": model.draft(files, gap=gap),
                "half": model.draft(files, half, gap=gap),
                "phone queries": model.draft(phone_queries, gap=gap),
            }
            drafts[gap] = draft
            check("12-megapixel JPEG", full["phone"], draft["phone"], asserted)
            check(
                f"museum photos as stored ({len(files)})", full["stored"], draft["stored"], asserted
            )
            check(f"museum photos at {half} px", full["half"], draft["half"], asserted)
            check(
                f"museum queries as 12-megapixel JPEGs ({len(queries)})",
                full["phone queries"],
                draft["phone queries"],
                asserted,
            )

        reference_ids, query_ids = references.instance_ids, queries.instance_ids
        n_refs = len(references)
        stored_references = full["stored"][:n_refs]
        print("   P@1 on the museum queries, 1-NN among the references (as stored, full decode)")
        rows = [("stored, full decode", full["stored"][n_refs:])]
        rows += [(f"stored, draft gap {gap:g}", drafts[gap]["stored"][n_refs:]) for gap in GAPS]
        rows += [("12 MP, full decode", full["phone queries"])]
        rows += [(f"12 MP, draft gap {gap:g}", drafts[gap]["phone queries"]) for gap in GAPS]
        for name, descriptors in rows:
            hits = precision_at_1(descriptors, stored_references, query_ids, reference_ids)
            print(report_p1(name, hits, queries.query_sets))

        with Image.open(phone) as opened:
            stored = (opened.height, opened.width)
        target = scaled_size(*stored, args.max_side)

        def full_decode() -> torch.Tensor:
            return resize(image_tensor(load_image(phone)), target)

        def draft_decode(gap: float) -> torch.Tensor:
            decoded = decode_image(phone, lambda height, width: target, reducing_gap=gap)
            return resize(image_tensor(decoded.image), target)

        runs: dict[str, Callable[[], object]] = {"full decode": full_decode}
        for gap in GAPS:
            reduced = decode_image(phone, lambda height, width: target, reducing_gap=gap).image
            difference = float((full_decode() - draft_decode(gap)).abs().mean())
            name = f"draft gap {gap:g} ({reduced.width}×{reduced.height})"
            print(f"   {name}: mean |pixel difference| after resize {difference:.4f}")
            runs[name] = lambda gap=gap: draft_decode(gap)
        print(
            f"2. Decode + resize of a {stored[1]}×{stored[0]} JPEG to {target[1]}×{target[0]}, "
            f"min of {args.repeats} interleaved repeats"
        )
        best = best_time(runs, args.repeats)
        print(f"  {'configuration':<32} {'ms':>8} {'full / this':>12}")
        for name, seconds in best.items():
            print(f"  {name:<32} {seconds * 1e3:>8.1f} {best['full decode'] / seconds:>12.2f}")


if __name__ == "__main__":
    main()
