"""Post-processing through the product's path: ``pyinstance index build`` with each
post-processing option, then ``pyinstance evaluate`` on the museum set; one table row each.

Every variant is the default recipe plus the options shown (the multi-scale rows also
describe references and queries at scales 1, 1/√2 and 1/2 without query windows). The
table: P@1 on the crops (``qsd1_w1``, ``qsd1_w3``) and gallery shots (``qsd2_w2``,
``qsd2_w3``, ``qsd1_w4``), the extra CSV's hue/noise copies of those included; P@1 of the
manifest's 63 photos alone; mAP and micro-AP over all queries (nearest neighbour, no
threshold).

    python -P benchmarks/postprocess_index.py [--work DIR] [--only default,white | --quick] [--museum DIR]

Indexes and JSON already in ``--work`` are reused (delete them to measure again).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

MULTI = ["--scales", "1,0.7071,0.5", "--windows", "none"]
VARIANTS = {
    "default": [],
    "white": ["--whiten"],
    "white256s05": ["--whiten", "--whiten-dim", "256", "--shrinkage", "0.5"],
    "dba1": ["--dba", "1"],
    "aqe2": ["--qe", "2"],
    "qe3a3": ["--qe", "3", "--alpha-qe", "3"],
    "white_qe": ["--whiten", "--qe", "3", "--alpha-qe", "3"],
    "ms_mean": MULTI,
    "ms_rowmax": [*MULTI, "--matrix-scoring", "row_max_sum"],
    "ms_max": [*MULTI, "--matrix-scoring", "max"],
    "ms_w532": [*MULTI, "--scale-weights", "0.5,0.3,0.2"],
    "ms_w721": [*MULTI, "--scale-weights", "0.7,0.2,0.1"],
    # the whitening-set path fed the references themselves: must equal the `white` row
    "white_from_refs": ["--whiten", "--whiten-from", "{museum}/reference"],
}
GROUPS = ["--group", "crop=qsd1_w1,qsd1_w3", "--group", "gallery=qsd2_w2,qsd2_w3,qsd1_w4"]


def pyinstance(*args: str) -> None:
    command = [sys.executable, "-P", "-m", "pyinstance.cli", *args]
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, env=os.environ)


def measure(name: str, work: Path, museum: Path) -> dict:
    index, out = work / f"{name}.idx", work / f"{name}.json"
    if not index.exists():
        manifest = str(museum / "manifest.csv")
        options = [option.format(museum=museum) for option in VARIANTS[name]]
        pyinstance("index", "build", manifest, "-o", str(index), "--no-progress", *options)
    if not out.exists():
        extra = str(museum / "extra_queries.csv")
        evaluate = ["evaluate", str(index), "--manifest", str(museum / "manifest.csv")]
        pyinstance(*evaluate, "--extra", extra, "--json", str(out), *GROUPS)
    return json.loads(out.read_text())


def row(name: str, data: dict) -> str:
    groups, kinds = data["named_groups"], data["kinds"]
    cells = [
        groups["crop"]["p_at_1"],
        groups["gallery"]["p_at_1"],
        kinds["query"]["p_at_1"],
        data["map"],
        data["micro_ap"],
    ]
    options = " ".join(VARIANTS[name]) or "(default recipe)"
    return f"| `{options}` | " + " | ".join(f"{value:.3f}" for value in cells) + " |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--work",
        type=Path,
        default=Path(__file__).resolve().parent.parent / "build" / "postprocess_index",
        help="folder for indexes and JSON (default: %(default)s)",
    )
    parser.add_argument("--only", help="comma-separated variants (default: all)")
    parser.add_argument("--quick", action="store_true", help="only the default recipe and --whiten")
    shared = Path(os.environ.get("PYINSTANCE_SHARED", "/work/shared"))
    parser.add_argument("--museum", type=Path, default=shared / "data" / "museum")
    args = parser.parse_args()
    names = args.only.split(",") if args.only else list(VARIANTS)
    if args.quick and not args.only:
        names = ["default", "white"]
    unknown = [name for name in names if name not in VARIANTS]
    if unknown:
        raise SystemExit(f"--only: unknown variant(s) {unknown}; expected some of {list(VARIANTS)}")
    args.work.mkdir(parents=True, exist_ok=True)
    museum = args.museum
    if not (museum / "manifest.csv").is_file():
        raise SystemExit(f"--museum: no manifest.csv in {str(museum)!r} (set PYINSTANCE_SHARED)")
    print("| build options | P@1 crop | P@1 gallery | P@1 manifest | mAP | micro-AP |")
    print("|---|---|---|---|---|---|")
    for name in names:
        print(row(name, measure(name, args.work, museum)), flush=True)


if __name__ == "__main__":
    main()
