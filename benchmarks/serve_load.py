"""Load test of ``pyinstance serve`` on 127.0.0.1 while a curator changes the collection.

Builds an index of the opencv-pairs references (or uses ``--index``, copied first), starts
``pyinstance serve`` in a subprocess, then sends ``--requests`` identify requests (JPEG
bodies of the 7 query photos, ``--concurrency`` in flight) while a curator repeatedly adds
an instance of two photos in one request (one commit) and removes it again.

Counted:
- errors: any answer but 200 (and any connection failure) — must be 0;
- half-applied answers — must be 0: an answer whose index version is not one the curator's
  commits produced, whose top instances include the curator's instance in a version
  without it, or, for the query photo the curator added, miss it in a version with it;
- latency p50 / p95 of identify, and identify requests per second.

Bounded: at most 600 requests and ``--max-seconds`` (120 s) of load, 127.0.0.1 only.

    python benchmarks/serve_load.py                    # 500 requests, 8 in flight
    python benchmarks/serve_load.py --requests 100     # quicker
    python benchmarks/serve_load.py --quick            # smoke run (CI)
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
from PIL import Image


def shared() -> Path:
    """``$PYINSTANCE_SHARED``, else ``shared/`` beside the repository, else /work/shared."""
    repo = Path(__file__).resolve().parents[1]
    candidates = (
        [Path(os.environ["PYINSTANCE_SHARED"])]
        if "PYINSTANCE_SHARED" in os.environ
        else [repo.parent / "shared", Path("/work/shared")]
    )
    for candidate in candidates:
        if (candidate / "data" / "opencv-pairs").is_dir():
            return candidate
    raise SystemExit("shared/data/opencv-pairs not found (set PYINSTANCE_SHARED)")


TOKEN = "load-test-token"
CURATOR_INSTANCE = "curator-added"
MAX_REQUESTS = 600


def jpeg(path: Path, side: int = 640) -> bytes:
    """``path`` as a phone-like JPEG upload (longest side ``side``)."""
    image = Image.open(path).convert("RGB")
    image.thumbnail((side, side))
    out = io.BytesIO()
    image.save(out, "JPEG", quality=90)
    return out.getvalue()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def build_index(pairs: Path, target: Path) -> None:
    from pyinstance.index import DEFAULT_RECIPE, InstanceIndex

    index, _ = InstanceIndex.build(
        target, pairs / "manifest.csv", DEFAULT_RECIPE.with_(max_side=224), progress=False
    )
    index.close()


async def run_load(
    url: str, queries: list[tuple[str, bytes]], curator_photos: list[bytes], args
) -> dict:
    latencies: list[float] = []
    answers: list[tuple[str, dict]] = []
    errors: list[str] = []
    versions_with: set[int] = set()
    versions_without: set[int] = set()
    done = asyncio.Event()
    counter = iter(range(args.requests))
    auth = {"Authorization": f"Bearer {TOKEN}"}
    limits = httpx.Limits(max_connections=args.concurrency + 2)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:
        versions_without.add((await client.get("/healthz")).json()["version"])
        deadline = time.monotonic() + args.max_seconds

        async def visitor() -> None:
            for i in counter:
                if time.monotonic() > deadline:
                    break
                name, body = queries[i % len(queries)]
                start = time.perf_counter()
                try:
                    response = await client.post(
                        "/v1/identify", content=body, headers={"Content-Type": "image/jpeg"}
                    )
                except httpx.HTTPError as error:
                    errors.append(f"{name}: {type(error).__name__}: {error}")
                    continue
                latencies.append(time.perf_counter() - start)
                if response.status_code != 200:
                    errors.append(f"{name}: {response.status_code} {response.text[:200]}")
                else:
                    answers.append((name, response.json()))

        async def curator() -> int:
            changes = 0
            files = [
                ("files", (f"p{i}.jpg", b, "image/jpeg")) for i, b in enumerate(curator_photos)
            ]
            while not done.is_set():
                added = await client.post(
                    f"/v1/instances/{CURATOR_INSTANCE}/images", files=files, headers=auth
                )
                if added.status_code not in (200, 201):
                    errors.append(f"curator add: {added.status_code} {added.text[:200]}")
                    break
                versions_with.add(added.json()["version"])
                await asyncio.sleep(args.pause)
                removed = await client.delete(f"/v1/instances/{CURATOR_INSTANCE}", headers=auth)
                if removed.status_code != 200:
                    errors.append(f"curator remove: {removed.status_code} {removed.text[:200]}")
                    break
                versions_without.add(removed.json()["version"])
                changes += 2
                await asyncio.sleep(args.pause)
            return changes

        start = time.perf_counter()
        curating = asyncio.create_task(curator())
        await asyncio.gather(*(visitor() for _ in range(args.concurrency)))
        elapsed = time.perf_counter() - start
        done.set()
        changes = await curating

    half_applied = []
    for name, answer in answers:
        shown = {m["instance"] for m in answer["top_k"]}
        version = answer["version"]
        if version in versions_with:
            wrong = name == args.curator_query and CURATOR_INSTANCE not in shown
        elif version in versions_without:
            wrong = CURATOR_INSTANCE in shown
        else:
            wrong = True  # a version no commit produced
        if wrong:
            half_applied.append((name, version, sorted(shown)))
    ms = np.array(latencies) * 1e3
    return {
        "requests": len(latencies),
        "ok": len(answers),
        "errors": len(errors),
        "error_examples": errors[:5],
        "half_applied": len(half_applied),
        "half_applied_examples": half_applied[:5],
        "curator_commits": changes,
        "versions_seen": len({a["version"] for _, a in answers}),
        "answers_with_curator_instance": sum(a["version"] in versions_with for _, a in answers),
        "p50_ms": float(np.percentile(ms, 50)) if ms.size else None,
        "p95_ms": float(np.percentile(ms, 95)) if ms.size else None,
        "requests_per_s": len(latencies) / elapsed,
        "seconds": elapsed,
        "concurrency": args.concurrency,
        "server_workers": args.workers,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--index", type=Path, help="an index to serve (copied; default: built)")
    parser.add_argument("--requests", type=int, default=500, help=f"at most {MAX_REQUESTS}")
    parser.add_argument("--concurrency", type=int, default=8, help="requests in flight")
    parser.add_argument("--workers", type=int, default=2, help="server identification threads")
    parser.add_argument("--max-seconds", type=float, default=120.0, help="at most 120")
    parser.add_argument("--pause", type=float, default=0.5, help="curator's pause (s)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: 40 requests, 4 in flight, 60 s at most"
    )
    args = parser.parse_args()
    if args.quick:
        args.requests, args.concurrency, args.max_seconds = 40, 4, 60.0
    if not 1 <= args.requests <= MAX_REQUESTS:
        parser.error(f"--requests: expected 1..{MAX_REQUESTS}")
    if not 0 < args.max_seconds <= 120:
        parser.error("--max-seconds: expected (0, 120]")
    if args.concurrency < 1 or args.workers < 1:
        parser.error("--concurrency and --workers: expected >= 1")
    pairs = shared() / "data" / "opencv-pairs"
    with open(pairs / "manifest.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    queries = [
        (Path(r["path"]).name, jpeg(pairs / r["path"])) for r in rows if r["split"] == "query"
    ]
    args.curator_query = "aloeR.jpg"
    curator_photos = [
        jpeg(pairs / "query" / "aloeR.jpg"),
        jpeg(pairs / "reference" / "aloeL.jpg", 600),
    ]

    with tempfile.TemporaryDirectory(prefix="serve-load-") as folder:
        index = Path(folder) / "index"
        if args.index:
            shutil.copytree(args.index, index)
        else:
            build_index(pairs, index)
        token = Path(folder) / "token"
        token.write_text(TOKEN)
        port = free_port()
        log = open(Path(folder) / "server.log", "wb")  # noqa: SIM115 - closed below
        server = subprocess.Popen(
            [sys.executable, "-P", "-m", "pyinstance.cli", "serve", str(index), "--port", str(port)]
            + ["--token-file", str(token), "--workers", str(args.workers)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            for _ in range(600):
                if server.poll() is not None:
                    raise SystemExit((Path(folder) / "server.log").read_text())
                try:
                    if httpx.get(url + "/healthz", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    time.sleep(0.2)
            results = asyncio.run(run_load(url, queries, curator_photos, args))
        finally:
            server.terminate()
            server.wait(timeout=30)
            log.close()
    print(json.dumps(results, indent=2))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    print(
        f"\n{results['requests']} identify requests, {args.concurrency} in flight, "
        f"{results['curator_commits']} curator commits: errors {results['errors']}, "
        f"half-applied {results['half_applied']}; p50 {results['p50_ms']:.0f} ms, "
        f"p95 {results['p95_ms']:.0f} ms, {results['requests_per_s']:.2f} requests/s"
    )
    return 0 if results["errors"] == 0 and results["half_applied"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
