"""End-to-end latency: a 12-megapixel JPEG on disk -> the identified instance.

Ours (``pyinstance.Identifier``: JPEG draft-mode decode, the fastest installed engine or
each of ``--engines``, ``knn_dot`` search, classifier) against the plain pipeline of the same recipe (Pillow full
decode, antialiased float resize, eager torch backbone + windows, numpy matmul + max +
argmax), both on an index of the museum references plus random references up to
``--references``, at each thread count, interleaved query by query; plus throughput with 4
queries in flight. The answers of both are checked equal before anything is timed.
``--busy`` adds each thread count beside a competing busy process (one spinning core;
``--busy-loops N``: N of them). It is started once and paused (SIGSTOP) or resumed between
queries: every (configuration, busy) pair takes its turn for every photo of every repeat,
in a shuffled order, so quiet and busy queries see the same background (timed in blocks of
one configuration's queries, the machine's drift between blocks fell on whole rows).
Before each query of ours, the plain pipeline runs and the machine stays in the pair's
state for ``SETTLE`` seconds, so that the engine's load meter sees only that state. Every
row's total and decode are also given over the same pipeline's one-thread idle median
(``÷ 1 idle``), and the verdict gives the median and quartiles of the per-query ratios
(each query over the one-thread idle query of the same photo and repeat): the target is
two threads beside a busy process at most 1; the decode, single-threaded in every row,
shows what the busy process costs code that has no threads to set.
Wall and CPU time (this process, all its threads) are reported, with the
machine's 1-minute load average: on a shared machine absolute milliseconds are inflated,
the ratio measured in the same run is what counts. After each query of ours, its decode
and its network runs (the engine on the resized batch of each scale) are timed again on
their own, in CPU time: ``decode CPU``, ``net CPU`` and ``rest CPU`` (the query's CPU minus both:
resizing, normalising, checks, search, classification, Python) say where a query's CPU
goes. The photos, the random references and the probe batches are seeded: runs compare.

    python benchmarks/latency.py                        # default recipe, 10,000 references
    python benchmarks/latency.py --recipe lite0-448     # Lite0 + GeM, 448 px, one descriptor
    python benchmarks/latency.py --busy                 # + each thread count beside a busy process
    python benchmarks/latency.py --engines openvino onnxruntime   # rows per engine
    python benchmarks/latency.py --busy --budget-twins  # + the thread budget rule reversed
    python benchmarks/latency.py --busy --ours-only     # no plain pipeline between queries
    python benchmarks/latency.py --quick                # smoke run (CI): every installed engine
"""

from __future__ import annotations

from pyinstance.idle_threads import sleep_idle_threads

# What `pyinstance` sets for its commands: idle OpenMP and OpenBLAS workers sleep instead of
# spinning (torch's, knn_dot's and numpy's pools), so threads do not burn the cores the
# others need. Before numpy and torch load.
sleep_idle_threads()

import argparse  # noqa: E402
import os  # noqa: E402
import random  # noqa: E402
import signal  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections import Counter  # noqa: E402
from concurrent.futures import ThreadPoolExecutor  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from pyinstance.data import Manifest  # noqa: E402
from pyinstance.data.images import (  # noqa: E402
    decode_image,
    image_tensor,
    normalize,
    resize,
    scaled_size,
)
from pyinstance.engine import (  # noqa: E402
    ExportedEngine,
    OnnxRuntimeEngine,
    available_engines,
    default_engine,
    openvino_engine,
)
from pyinstance.identification import Identifier  # noqa: E402
from pyinstance.index import DEFAULT_RECIPE, InstanceIndex, Recipe  # noqa: E402
from pyinstance.models.regions import DEFAULT_WINDOWS, pool_windows  # noqa: E402

#: The recipes measured: the default (Lite0 + MAC at 3 scales, PCA-whitened), the issue's
#: reference point (Lite0 + GeM at 448 px, one descriptor) and the previous default (queries
#: at 560 px scored by their best of 19 windows of one feature map).
RECIPES = {
    "default": DEFAULT_RECIPE,
    "lite0-448": Recipe(backbone="efficientnet_lite0", head="gem", dim=1280, max_side=448),
    "windows": Recipe(
        backbone="efficientnet_lite0",
        head="gem",
        dim=1280,
        max_side=448,
        query_max_side=560,
        query_windows=DEFAULT_WINDOWS,
    ),
}


def museum() -> Path:
    """``$PYINSTANCE_SHARED/data/museum``, else beside the repository, else /work/shared."""
    repo = Path(__file__).resolve().parents[1]
    roots = [Path(os.environ["PYINSTANCE_SHARED"])] if "PYINSTANCE_SHARED" in os.environ else []
    for root in [*roots, repo.parent / "shared", Path("/work/shared")]:
        if (root / "data" / "museum" / "manifest.csv").is_file():
            return root / "data" / "museum"
    raise SystemExit("shared/data/museum not found (set PYINSTANCE_SHARED)")


PHONE = (4032, 3024)


def phone_jpegs(entries: list, folder: Path) -> list[Path]:
    """The query photos upscaled to 12 megapixels and saved as a phone would (quality 92)."""
    paths = []
    for number, entry in enumerate(entries):
        image = Image.open(entry.path).convert("RGB")
        size = PHONE if image.width >= image.height else PHONE[::-1]
        path = folder / f"phone{number}.jpg"
        image.resize(size, Image.Resampling.BICUBIC).save(path, quality=92)
        paths.append(path)
    return paths


def build_index(folder: Path, manifest: Manifest, references: int, recipe: Recipe) -> InstanceIndex:
    """The museum references, then random unit descriptors up to ``references`` rows."""
    start = time.perf_counter()
    index, report = InstanceIndex.build(
        folder / "index", manifest.root / "manifest.csv", recipe, progress=True, engine="auto"
    )
    seconds = time.perf_counter() - start
    print(
        f"index build ({index.describer.engine} engine, model load included): {report.added} "
        f"museum references in {seconds:.1f} s = {report.added / seconds:.2f} images/s"
    )
    extra = references - len(index)
    rng = np.random.default_rng(0)
    for start in range(0, max(extra, 0), 1000):
        rows = rng.standard_normal((min(1000, extra - start), index.recipe.dim), np.float32)
        rows /= np.linalg.norm(rows, axis=1, keepdims=True)
        ids = [f"random-{start + i}" for i in range(len(rows))]
        index.add_descriptors(rows, ids, ids, index.recipe)
    return index


class Plain:
    """The same recipe with Pillow, eager torch and numpy: what one writes without us (the
    index's fitted whitening, a small matrix product, is applied by the index)."""

    def __init__(self, index: InstanceIndex):
        self.backbone, self.head = index.describer.backbone, index.describer.head
        self.index = index
        self.recipe = index.recipe
        if self.recipe.query_windows is not None and len(self.recipe.scales) > 1:
            raise ValueError("recipe: the plain pipeline takes windows at one scale only")
        self.references = np.ascontiguousarray(index.descriptors(), dtype=np.float32)
        self.labels = index.labels()
        self.instances = index.instances

    def _describe(self, pixels: torch.Tensor, scale: float) -> torch.Tensor:
        """``1 × R × D`` descriptors of ``pixels`` resized for ``scale``."""
        size = scaled_size(*pixels.shape[1:], round(scale * self.recipe.query_side))
        batch = normalize(
            resize(pixels, size)[None], self.backbone.input_mean, self.backbone.input_std
        )
        features = self.backbone(batch)
        if self.recipe.query_windows is None:
            return self.head(features)[:, None]  # one "window": the whole image
        return pool_windows(features, self.head, self.recipe.query_windows)

    def __call__(self, path: Path) -> tuple[str, dict[str, float]]:
        start = time.perf_counter()
        pixels = image_tensor(Image.open(path).convert("RGB")).float() / 255.0
        decoded = time.perf_counter()
        with torch.inference_mode():
            per_scale = [self._describe(pixels, scale) for scale in self.recipe.scales]
            windows = torch.nn.functional.normalize(torch.stack(per_scale).mean(0), dim=-1)
        described = time.perf_counter()
        queries = windows.numpy()
        if self.recipe.postprocess:
            queries = self.index.postprocess_queries(queries)
        scores = (self.references @ queries[0].T).max(axis=1)
        best = int(np.argmax(scores))
        searched = time.perf_counter()
        ms = {
            "decode": decoded - start,
            "extract": described - decoded,
            "search": searched - described,
            "total": searched - start,
        }
        return self.instances[self.labels[best]], {k: v * 1e3 for k, v in ms.items()}


def with_cpu(run, *args) -> tuple[str | None, dict[str, float]]:
    """``run(*args)`` with the CPU milliseconds of this process (all threads) added."""
    start = time.process_time()
    answer, ms = run(*args)
    return answer, ms | {"cpu": (time.process_time() - start) * 1e3}


def ours(identifier: Identifier, path: Path) -> tuple[str | None, dict[str, float]]:
    (answer,) = identifier.identify([path])
    return answer.instance, answer.ms


def stage_cpu(identifier: Identifier, path: Path) -> dict[str, float]:
    """CPU ms of two stages of ``ours`` on ``path``, timed apart from the pipeline right
    after it: the decode (``decode cpu``) and the network on the resized batch of every
    scale of the recipe (``net cpu``, the engine's own runs: its per-request thread
    budget, the fixed-shape sessions)."""
    describer = identifier.index.describer
    engine = describer._feature_engine or describer._descriptor_engine
    start = time.process_time()
    decoded = decode_image(path, identifier._target)
    decoded_at = time.process_time()
    cpu = {"decode cpu": (decoded_at - start) * 1e3}
    if engine is not None:
        recipe, image = describer.recipe, image_tensor(decoded.image)
        # As the Identifier: windows, or a query side of its own with one descriptor per
        # image, take the query at one scale; otherwise every scale of the recipe.
        one_scale = recipe.query_windows is not None or (
            recipe.query_max_side is not None and recipe.descriptors_per_image == 1
        )
        batches = []
        for scale in (1.0,) if one_scale else recipe.scales:
            size = scaled_size(*decoded.full_size, round(scale * recipe.query_side))
            pixels = resize(image, size)[None]
            mean, std = describer.backbone.input_mean, describer.backbone.input_std
            batches.append(normalize(pixels, mean, std))
        start = time.process_time()
        for batch in batches:
            engine(batch)
        cpu["net cpu"] = (time.process_time() - start) * 1e3
    return cpu


class BusyProcess:
    """Competing processes that keep ``loops`` cores busy (Python busy loops), started at the
    first :meth:`set` to busy and paused (SIGSTOP) whenever the machine should be idle, so
    that quiet and busy queries take turns query by query. A context manager: the processes
    are killed on exit."""

    def __init__(self, loops: int = 1) -> None:
        self.loops = loops
        self._processes: list[subprocess.Popen] = []
        self._running = False

    def set(self, busy: bool) -> None:
        """Resume (or start) or pause the busy loops."""
        if busy == self._running:
            return
        if not self._processes:
            command = [sys.executable, "-c", "while True: pass"]
            self._processes = [subprocess.Popen(command) for _ in range(self.loops)]
        else:
            for process in self._processes:
                process.send_signal(signal.SIGCONT if busy else signal.SIGSTOP)
        self._running = busy

    def __enter__(self) -> BusyProcess:
        return self

    def __exit__(self, *exc_info: object) -> None:
        for process in self._processes:
            process.kill()
            process.wait()


class Config:
    """One measured configuration: an engine at a thread count (each with or without a busy
    process), with the engine's own per-request thread budget rule or, ``budget`` given,
    that rule forced (:data:`~pyinstance.engine.exported.ExportedEngine.budgets_threads`),
    and ONNX Runtime's worker placement or, ``places`` given, that forced
    (:mod:`pyinstance.engine.placement`)."""

    def __init__(
        self,
        index_path: Path,
        plain: Plain,
        photos: list[Path],
        engine: str,
        threads: int,
        budget: bool | None = None,
        places: bool | None = None,
    ):
        self.threads = threads
        self.index = InstanceIndex.open(index_path)
        self.engine = self.index.describer.set_engine(engine, threads=threads)
        if self.engine != engine:
            raise SystemExit(f"engine {engine!r} fell back to {self.engine!r}")
        describer = self.index.describer
        for network in (describer._descriptor_engine, describer._feature_engine):
            if budget is not None and isinstance(network, ExportedEngine):
                network.budgets_threads = budget
            if places is not None and isinstance(network, OnnxRuntimeEngine):
                network.places_workers = places
        rule = "" if budget is None else " budget" if budget else " no budget"
        rule += "" if places is None else " placed" if places else " unplaced"
        self.label = f"{self.engine} {threads}{rule}"
        network = describer._feature_engine or describer._descriptor_engine
        #: Whether the exported-graph engine drops to one thread under load (None: the
        #: torch engine, which has no budget).
        self.budgets = network.budgets_threads if isinstance(network, ExportedEngine) else None
        self.precision = getattr(network, "precision", "fp32")
        self.identifier = Identifier(self.index, threshold=0)
        torch.set_num_threads(threads)
        # A recurring shape gets its fixed-shape session after ``fix_after`` runs.
        warm_up = network.sessions.fix_after if isinstance(network, ExportedEngine) else 1
        for photo in photos:  # equal answers before timing (and a warm-up)
            assert ours(self.identifier, photo)[0] == plain(photo)[0], photo
            for _ in range(warm_up):
                ours(self.identifier, photo)

    def runs(self) -> Counter[int]:
        """Batches the exported-graph engine ran so far, per intra-op thread count it chose."""
        describer = self.index.describer  # its engines, if any: descriptors and feature maps
        runs: Counter[int] = Counter()
        for engine in (describer._descriptor_engine, describer._feature_engine):
            if isinstance(engine, ExportedEngine):
                runs += engine.sessions.runs
        return runs

    def throughput(self, photos: list[Path]) -> float:
        """Queries per second with 4 in flight."""
        torch.set_num_threads(self.threads)
        with ThreadPoolExecutor(4) as pool:
            start = time.perf_counter()
            list(pool.map(self.identifier.identify, [[p] for p in photos * 2]))
            return 2 * len(photos) / (time.perf_counter() - start)


def forced_rule(label: str) -> str:
    """The thread rules a configuration's ``label`` forces (``"budget"``, ``"no
    budget"``, ``"unplaced"``...), or ``""`` for the engine's own."""
    return label.split(" ", 2)[2] if label.count(" ") >= 2 else ""


#: Seconds the machine spends in a (configuration, busy) pair's state before ours runs:
#: beside the plain pipeline's run, enough for the engine's load meter (which reads the time
#: since its previous request) to see only that state.
SETTLE = 0.3


def measure(configs, plain, photos, busy: list[bool], repeats: int, loops: int = 1):
    """Per-query stage times of ours and plain (None: ours only) in every (config, busy)
    pair, the pairs taking turns in a shuffled (seeded) order for every photo of every
    repeat, the busy process paused or resumed between them; the 1-minute load average seen
    by each pair, the engine's runs per thread count, and ours' throughput with 4 queries in
    flight (one reading per repeat)."""
    pairs = [(config, is_busy) for config in configs for is_busy in busy]
    times = {(c.label, b): {"ours": [], "plain": []} for c, b in pairs}
    loads: dict[tuple[str, bool], list[float]] = {key: [] for key in times}
    runs: dict[tuple[str, bool], Counter[int]] = {key: Counter() for key in times}
    speeds: dict[tuple[str, bool], list[float]] = {key: [] for key in times}
    order = random.Random(0)
    with BusyProcess(loops) as spinner:
        for _ in range(repeats):
            for photo in photos:
                for config, is_busy in order.sample(pairs, len(pairs)):
                    key = (config.label, is_busy)
                    spinner.set(is_busy)
                    torch.set_num_threads(config.threads)
                    loads[key].append(os.getloadavg()[0])
                    if plain is not None:
                        times[key]["plain"].append(with_cpu(plain, photo)[1])
                    time.sleep(SETTLE)
                    before = config.runs()
                    measured = with_cpu(ours, config.identifier, photo)[1]
                    runs[key] += config.runs() - before  # the query's runs only
                    times[key]["ours"].append(measured | stage_cpu(config.identifier, photo))
            for config, is_busy in order.sample(pairs, len(pairs)):
                spinner.set(is_busy)
                time.sleep(SETTLE)
                speeds[(config.label, is_busy)].append(config.throughput(photos))
    return times, loads, runs, speeds


#: CPU ms of single stages of ours, timed apart from the pipeline (:func:`stage_cpu`).
STAGE_CPU = ("decode cpu", "net cpu")


def stage_columns(median: dict[str, float]) -> str:
    """Decode, network and everything else (CPU − both) in CPU ms; blank for plain."""
    if "decode cpu" not in median:
        return " | | "
    if "net cpu" not in median:  # the torch engine: no separate network run timed
        return f"{median['decode cpu']:.1f} | | "
    rest = median["cpu"] - median["decode cpu"] - median["net cpu"]
    return f"{median['decode cpu']:.1f} | {median['net cpu']:.1f} | {rest:.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--references", type=int, default=10_000)
    parser.add_argument("--recipe", choices=sorted(RECIPES), default="default")
    parser.add_argument("--queries", type=int, default=6, help="12 MP photos timed")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved repeats")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument(
        "--engines",
        nargs="+",
        choices=available_engines(),
        help="engines of ours, each a row per thread count (default: the fastest installed "
        "for each thread count, engine='auto')",
    )
    parser.add_argument(
        "--busy", action="store_true", help="also each thread count beside a busy process"
    )
    parser.add_argument(
        "--precision",
        choices=openvino_engine.PRECISIONS,
        help="what the openvino engine computes in (default: its own default, "
        "$PYINSTANCE_OPENVINO_PRECISION)",
    )
    parser.add_argument(
        "--busy-loops",
        type=int,
        default=1,
        help="busy-loop processes beside the busy rows (default 1: one core kept busy)",
    )
    parser.add_argument(
        "--ours-only",
        action="store_true",
        help="time ours only (the plain pipeline still checks the answers before timing): "
        "nothing but ours and the busy process runs between the timed queries",
    )
    parser.add_argument(
        "--budget-twins",
        action="store_true",
        help="also every multi-thread row with the engine's thread budget rule reversed "
        "(drop to one thread under load or not)",
    )
    parser.add_argument(
        "--placement-twins",
        action="store_true",
        help="also every multi-thread ONNX Runtime row with its workers left where the kernel "
        "puts them (not kept off the caller's core)",
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: 2 queries, 1 repeat")
    args = parser.parse_args()
    if args.quick:
        args.queries, args.repeats, args.threads, args.busy = 2, 1, [1], False
        args.engines = [e for e in available_engines() if e != "torch"] or ["torch"]
    if args.engines is None:
        args.engines = list(dict.fromkeys(default_engine(threads) for threads in args.threads))
    if args.precision is not None:
        os.environ[openvino_engine.PRECISION_VARIABLE] = args.precision
    recipe = RECIPES[args.recipe]
    manifest = Manifest.read(museum() / "manifest.csv")
    entries = [e for e in manifest if e.split == "query"][: args.queries]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        photos = phone_jpegs(entries, folder)
        index = build_index(folder, manifest, args.references, recipe)
        plain = Plain(index)  # keeps ``index`` open: it whitens the plain queries
        configs = [
            Config(folder / "index", plain, photos, engine, threads)
            for engine in args.engines
            for threads in args.threads
        ]
        if args.budget_twins:  # the opposite thread budget rule, for every multi-thread row
            configs += [
                Config(folder / "index", plain, photos, c.engine, c.threads, not c.budgets)
                for c in list(configs)
                if c.threads > 1 and c.budgets is not None
            ]
        if args.placement_twins:
            configs += [
                Config(folder / "index", plain, photos, c.engine, c.threads, places=False)
                for c in list(configs)
                if c.threads > 1 and c.engine == "onnxruntime" and not forced_rule(c.label)
            ]
        precisions = {c.engine: c.precision for c in configs}
        print(
            f"{len(configs[0].index)} references; engines "
            + ", ".join(f"{name} ({precision})" for name, precision in precisions.items())
        )
        busy = [False, True] if args.busy else [False]
        times, loads, runs, speeds = measure(
            configs, None if args.ours_only else plain, photos, busy, args.repeats, args.busy_loops
        )
        threads_of = {config.label: config.threads for config in configs}
        for config in configs:
            config.index.close()
        index.close()
    title = (
        f"End to end from a {PHONE[0]}×{PHONE[1]} JPEG, recipe {args.recipe} "
        f"({recipe.describe()}), {args.repeats} interleaved repeats of {len(photos)} queries"
    )
    report(title, times, loads, runs, speeds, threads_of)


def medians(measured: list[dict[str, float]]) -> dict[str, float]:
    """The median of every stage timed in ``measured`` (one dict per query)."""
    keys = ("decode", "extract", "search", "total", "cpu", *STAGE_CPU)
    return {k: statistics.median(t[k] for t in measured) for k in keys if k in measured[0]}


def report(title: str, times, loads, runs, speeds, threads_of: dict[str, int]) -> None:
    """The table (one row per configuration and pipeline) and, per engine, the busy-load
    verdict: two threads beside a busy process against one thread alone."""
    median = {key: {who: medians(m) for who, m in both.items() if m} for key, both in times.items()}
    alone = {  # engine -> its one-thread idle configuration
        label.split()[0]: (label, is_busy)
        for label, is_busy in median
        if threads_of[label] == 1 and not is_busy
    }
    print(
        f"\n{title}, median ms per query by stage (CPU: this process, all threads; load: "
        "1-minute average; ÷ 1 idle: over the same pipeline's one-thread idle median, total "
        "and decode (a stage no thread setting touches: what the busy process costs code "
        "with no threads to set); q/s: ours with 4 queries in flight, median of the "
        "repeats; used: the engine's network runs at 1 / 2 ... threads, its per-request budget):"
    )
    print(
        "| engine | threads | load | pipeline | decode | extract | search | total | CPU "
        "| plain ÷ ours | total ÷ 1 idle | decode ÷ 1 idle | q/s, 4 in flight | used "
        "| decode CPU | net CPU | rest CPU |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    to_idle = {  # (configuration, pipeline) -> total and decode over its one-thread idle row
        (key, who): (m["total"] / base[who]["total"], m["decode"] / base[who]["decode"])
        for key, both in median.items()
        if (base := median.get(alone.get(key[0].split()[0])))
        for who, m in both.items()
    }
    for (label, is_busy), both in median.items():
        engine, threads = label.split()[0], threads_of[label]
        rule = forced_rule(label)
        row = f"{engine} | {threads}{' ' + rule if rule else ''}{' + busy' if is_busy else ''}"
        load = statistics.mean(loads[(label, is_busy)])
        for who, m in both.items():
            ratios = to_idle.get(((label, is_busy), who))
            slower = f"{ratios[0]:.2f} | {ratios[1]:.2f}" if ratios else " | "
            if who == "plain":
                extra = f" | {slower} | | "
            else:
                used = " / ".join(f"{runs[(label, is_busy)][n]}" for n in range(1, threads + 1))
                speed = statistics.median(speeds[(label, is_busy)])
                ratio = f"{both['plain']['total'] / m['total']:.2f}×" if "plain" in both else ""
                extra = f"{ratio} | {slower} | {speed:.2f} | {used}"
            print(
                f"| {row} | {load:.1f} | {who} | {m['decode']:.1f} | {m['extract']:.1f} | "
                f"{m['search']:.1f} | {m['total']:.1f} | {m['cpu']:.1f} | {extra} | "
                f"{stage_columns(m)} |"
            )
    for ((label, is_busy), who), (total, decode) in to_idle.items():
        if who == "ours" and is_busy and threads_of[label] > 1:
            idle = times[alone[label.split()[0]]]["ours"]
            paired = [
                q["total"] / i["total"]
                for q, i in zip(times[(label, is_busy)]["ours"], idle, strict=True)
            ]
            low, middle, high = statistics.quantiles(paired, n=4) if len(paired) > 1 else paired * 3
            rule = f" ({forced})" if (forced := forced_rule(label)) else ""
            print(
                f"\n{label.split()[0]}{rule}, {threads_of[label]} threads beside a busy "
                f"process: {total:.2f}× the one-thread idle time; per query {middle:.2f}× "
                f"(quartiles {low:.2f}–{high:.2f}) (target: at most 1); its single-threaded "
                f"decode {decode:.2f}×."
            )


if __name__ == "__main__":
    main()
