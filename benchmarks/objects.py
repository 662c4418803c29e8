"""Time of every object in the photo against the single answer, on museum gallery shots.

An index of the museum references (default recipe; the object threshold does not change
the time and is set to 0.05), then, interleaved photo by photo and repeated (minimum
kept), three identifications of each photo: the single answer (the anchor), the answer
with every object (``multi=True``: the whole photo and its two zoomed halves) and the
same without zooming (the whole photo alone). Reported: ms per photo (median over the
photos) and each ratio to the anchor. Object recall and precision are measured by
``pyinstance evaluate INDEX --manifest ... --extra ... --multi`` (README, "Every object").

    python benchmarks/objects.py              # 10 photos, 3 repeats, all 287 references
    python benchmarks/objects.py --quick      # 3 photos, 1 repeat, 40 references
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from pyinstance.identification import Identifier
from pyinstance.index import DEFAULT_RECIPE, InstanceIndex
from pyinstance.objects import THRESHOLD_SETTING


def museum() -> Path:
    """``$PYINSTANCE_SHARED/data/museum``, else beside the repository, else /work/shared."""
    roots = [Path(os.environ["PYINSTANCE_SHARED"])] if "PYINSTANCE_SHARED" in os.environ else []
    roots += [Path(__file__).resolve().parents[1] / ".." / "shared", Path("/work/shared")]
    for root in roots:
        if (root / "data" / "museum" / "manifest.csv").is_file():
            return root / "data" / "museum"
    raise SystemExit("shared/data/museum not found (set PYINSTANCE_SHARED)")


def photos(folder: Path, count: int) -> list[Path]:
    """The two-painting photos first, then gallery shots (``qsd2_w2``), ``count`` in all."""
    with open(folder / "extra_queries.csv", newline="") as handle:
        chosen = [
            row["path"] for row in csv.DictReader(handle) if row["kind"] == "multiple_paintings"
        ]
    with open(folder / "manifest.csv", newline="") as handle:
        chosen += [
            row["path"]
            for row in csv.DictReader(handle)
            if row["split"] == "query" and row.get("query_set") == "qsd2_w2"
        ]
    return [folder / path for path in chosen[:count]]


def manifest(folder: Path, references: int | None, target: Path) -> Path:
    """The museum manifest, or (``references``) one of copies of its first references."""
    if references is None:
        return folder / "manifest.csv"
    with open(folder / "manifest.csv", newline="") as handle:
        rows = [row for row in csv.DictReader(handle) if row["split"] == "reference"]
    with open(target / "manifest.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "instance_id", "split"])
        for row in rows[:references]:
            name = Path(row["path"]).name
            shutil.copyfile(folder / row["path"], target / name)
            writer.writerow([name, row["instance_id"], "reference"])
    return target / "manifest.csv"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 photos, 1 repeat, 40 references")
    parser.add_argument("--photos", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    count, repeats, references = (3, 1, 40) if args.quick else (args.photos, args.repeats, None)
    folder = museum()
    with tempfile.TemporaryDirectory() as temporary:
        listing = manifest(folder, references, Path(temporary))
        index, _ = InstanceIndex.build(
            Path(temporary) / "index", listing, DEFAULT_RECIPE, progress=False
        )
        with index:
            index.set_setting(THRESHOLD_SETTING, 0.05)
            single = Identifier(index, threshold=0.0)
            multi = Identifier(index, threshold=0.0, multi=True)
            whole = Identifier(index, threshold=0.0, multi=True)
            assert whole.finder is not None
            whole.finder.zoom = False
            variants = {"single answer": single, "multi (zoom)": multi, "multi (whole only)": whole}
            chosen = photos(folder, count)
            for identifier in variants.values():  # warm-up
                identifier.identify(chosen[:1])
            best = {name: np.full(len(chosen), np.inf) for name in variants}
            for _ in range(repeats):
                for position, photo in enumerate(chosen):
                    for name, identifier in variants.items():
                        start = time.perf_counter()
                        identifier.identify([photo])
                        elapsed = (time.perf_counter() - start) * 1e3
                        best[name][position] = min(best[name][position], elapsed)
    anchor = float(np.median(best["single answer"]))
    print(f"{len(chosen)} photos, minimum of {repeats} repeats, median over the photos")
    for name, values in best.items():
        median = float(np.median(values))
        print(f"  {name:20s} {median:8.1f} ms per photo  {median / anchor:5.2f}x the single answer")


if __name__ == "__main__":
    main()
