"""Inference engines side by side: CNN + pooling time per image, EfficientNet-Lite0 + GeM.

Real photos (museum references, resized once to the longest side, normalised), batch 1:

- ``torch eager``         the anchor: the modules under ``torch.inference_mode``
- ``torch channels_last`` the same modules in channels-last memory format
- ``onnxruntime fp32``    ``pyinstance.engine.OnnxRuntimeEngine`` (exported once, cached)
- ``openvino fp32``       ``pyinstance.engine.OpenVinoEngine`` on the same cached graph
- ``openvino bf16``       the same in bfloat16 (CPUs with AMX or AVX-512 BF16 only)
- ``openvino int8``       the same quantised to int8 (``precision="int8"``, nncf installed)

at 448 and 640 px and at 1 and 2 intra-op threads, every engine installed. The
descriptors of every engine are checked against the anchor (max |difference| <= 1e-4;
bf16: the export check's bf16 tolerance; int8: cosine with the anchor's at least the int8
check's) BEFORE anything is timed. Each image is run as often as an engine needs to fix
its shape (at least three times) before anything is checked or timed, so the engines time
the fixed-shape sessions (int8: the int8 ones) a recurring shape gets. Repeats
are interleaved and the minimum per configuration is kept (the CPU is shared: minima are
the least noisy statistic); the ratio is anchor time / engine time at the same threads.

``--load`` adds a stream test: one process identifies a stream of images (engine + 1-NN
against 287 references) while another process burns a CPU (a busy loop), for each engine
at 1 and 2 threads, ONNX Runtime with idle threads spinning or sleeping, eager torch with
OpenMP's default and passive wait policies; each configuration runs in its own process
(the wait policy is read when OpenMP starts), idle and busy, interleaved. OpenVINO also
runs at 2 threads without the per-request thread budget (every request on both threads),
ONNX Runtime with sleeping workers with it (one thread per request while the machine is
busy; by default it keeps both), and a control, a fixed single-threaded numpy computation,
shows what the busy process costs a program that has no threads to set. ``--load-engines`` picks the engines.

``--precision`` reports museum P@1 (crops, gallery shots, all) through the whole pipeline
(index build + ``Identifier``) of the default recipe and of Lite0 + GeM at 448 px with ONNX
Runtime fp32, OpenVINO fp32, OpenVINO bf16 and OpenVINO int8 (as deployed, and with every
input size in int8: ``OpenVinoEngine.fix_after = 1``, each new size compiled, slow): a
precision would be OpenVINO's default only if it cost at most 0.01 of P@1 (the rule for
int8); bf16 cost 0.016 on Lite0 + GeM.

``--int8`` adds ONNX Runtime int8 graphs (dynamic quantisation; static per-channel QDQ
calibrated on 32 museum references, all convolutions or the 1×1 ones only): time per image
(on fixed-shape sessions, as the engine runs a recurring shape) and P@1 on the museum dev
set (references vs queries, 1-NN by dot product, crops ``qsd1_*`` and gallery shots
reported apart), next to fp32 torch and fp32 ONNX Runtime; and, with openvino and nncf
installed, OpenVINO fp32 and OpenVINO int8 (the engine's ``precision="int8"``: NNCF
post-training quantisation of the same graph, mixed preset, the GeM head kept in fp32,
calibrated on the package's sample photos, not on museum images; compiled per input shape).

    python benchmarks/engine.py                 # latency table
    python benchmarks/engine.py --load --int8 --precision   # everything (minutes)
    python benchmarks/engine.py --quick         # a smoke run in seconds (CI)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

import pyinstance
from pyinstance.data import Manifest, image_tensor, normalize, resize, scaled_size
from pyinstance.engine import (
    Engine,
    ExportedEngine,
    OnnxRuntimeEngine,
    OpenVinoEngine,
    TorchEngine,
    available_engines,
    int8,
    openvino_engine,
)
from pyinstance.engine.export import BF16_DESCRIPTOR_TOLERANCE
from pyinstance.engine.select import int8_available
from pyinstance.identification import Identifier
from pyinstance.index import DEFAULT_RECIPE, InstanceIndex, Recipe

TOLERANCE = 1e-4


def shared_data() -> Path:
    candidates = (
        [Path(os.environ["PYINSTANCE_SHARED"])] if "PYINSTANCE_SHARED" in os.environ else []
    )
    candidates += [Path(__file__).resolve().parents[1] / ".." / "shared", Path("/work/shared")]
    for candidate in candidates:
        if (candidate / "data" / "museum").is_dir():
            return candidate / "data"
    raise SystemExit("shared/data/museum not found (set PYINSTANCE_SHARED)")


def network() -> tuple[torch.nn.Module, torch.nn.Module]:
    backbone = pyinstance.get_backbone("efficientnet_lite0").eval()
    head = pyinstance.get_head("gem", in_channels=backbone.out_channels).eval()
    return backbone, head


def prepared(paths: list[Path], side: int, backbone: torch.nn.Module) -> list[torch.Tensor]:
    """Decoded, resized (longest side ``side``), normalised 1×3×H×W batches."""
    batches = []
    for path in paths:
        image = image_tensor(path)
        image = resize(image, scaled_size(*image.shape[1:], side))
        batches.append(normalize(image[None], backbone.input_mean, backbone.input_std))
    return batches


def best_times(
    engines: dict[str, Callable[[torch.Tensor], torch.Tensor]],
    images: list[torch.Tensor],
    repeats: int,
) -> dict[str, float]:
    """Minimum over interleaved repeats of the seconds per image of each engine."""
    best = dict.fromkeys(engines, float("inf"))
    for _ in range(repeats):
        for name, engine in engines.items():
            for image in images:
                start = time.perf_counter()
                engine(image)
                best[name] = min(best[name], time.perf_counter() - start)
    return best


def check_agreement(
    engines: dict[str, Callable[[torch.Tensor], torch.Tensor]],
    images: list[torch.Tensor],
    tolerances: dict[str, float],
    min_cosines: dict[str, float],
) -> dict[str, float]:
    """Max |descriptor − anchor's| of each engine; SystemExit above its tolerance, or, for
    an engine in ``min_cosines``, when a descriptor's cosine with the anchor's is lower."""
    anchor = next(iter(engines.values()))
    worst = dict.fromkeys(engines, 0.0)
    for image in images:
        expected = anchor(image)
        for name, engine in engines.items():
            got = engine(image)
            worst[name] = max(worst[name], float((got - expected).abs().max()))
            cosine = float(torch.nn.functional.cosine_similarity(got, expected).min())
            if name in min_cosines and cosine < min_cosines[name]:
                raise SystemExit(
                    f"{name}: cosine with the anchor {cosine:.3f} < {min_cosines[name]}"
                )
    for name, difference in worst.items():
        if name not in min_cosines and difference > tolerances.get(name, TOLERANCE):
            raise SystemExit(
                f"{name}: descriptors differ from the anchor by {difference:.3g} "
                f"> {tolerances.get(name, TOLERANCE)}"
            )
    return worst


def latency_table(args: argparse.Namespace, paths: list[Path], cache: Path) -> None:
    backbone, head = network()
    print(
        f"\nCNN + pooling per image, EfficientNet-Lite0 + GeM, batch 1, {len(paths)} museum "
        f"photos, min of {args.repeats} interleaved repeats (shared CPU: minima; ratios = "
        f"eager / engine at the same threads)"
    )
    print(f"{'size':>5} {'threads':>7} {'engine':<22} {'ms/image':>9} {'ratio':>6} {'max |Δ|':>9}")
    for side in args.sizes:
        images = prepared(paths, side, backbone)
        for threads in args.threads:
            engines: dict[str, Engine] = {
                "torch eager": TorchEngine(backbone, head, threads=threads),
                "torch channels_last": TorchEngine(
                    backbone, head, threads=threads, channels_last=True
                ),
            }
            if "onnxruntime" in available_engines():
                engines["onnxruntime fp32"] = OnnxRuntimeEngine(
                    backbone, head, threads=threads, cache_dir=cache
                )
            if "openvino" in available_engines():
                precisions = ["fp32"] + (["bf16"] if openvino_engine.bf16_supported() else [])
                precisions += ["int8"] if int8_available() else []
                for precision in precisions:
                    engines[f"openvino {precision}"] = OpenVinoEngine(
                        backbone, head, threads=threads, precision=precision, cache_dir=cache
                    )
            for engine in engines.values():  # a recurring shape gets its fixed-shape session
                runs = (
                    max(3, engine.sessions.fix_after) if isinstance(engine, ExportedEngine) else 3
                )
                for _ in range(runs):
                    for image in images:
                        engine(image)
            worst = check_agreement(
                engines,
                images,
                {"openvino bf16": BF16_DESCRIPTOR_TOLERANCE},
                {"openvino int8": int8.DESCRIPTOR_MIN_COSINE},
            )
            best = best_times(engines, images, args.repeats)
            anchor = best["torch eager"]
            for name, seconds in best.items():
                print(
                    f"{side:>5} {threads:>7} {name:<22} {1000 * seconds:>9.1f} "
                    f"{anchor / seconds:>6.2f} {worst[name]:>9.2g}"
                )


# -- stream under load ------------------------------------------------------------------
def control_worker(count: int) -> None:
    """The control: a fixed single-threaded computation (float32 matrix products, no engine,
    no threads), about as long as one image; print the seconds of each on stdout."""
    generator = np.random.default_rng(0)
    left, right = (generator.standard_normal((384, 384), dtype=np.float32) for _ in range(2))
    seconds = []
    for _ in range(count):
        start = time.perf_counter()
        for _ in range(24):  # about 25 ms on one core here
            left @ right
        seconds.append(time.perf_counter() - start)
    print(json.dumps(seconds))


def worker(config: dict) -> None:
    """Identify a stream of images with one engine; print the seconds of each on stdout."""
    if config["engine"] == "control":
        control_worker(config["count"])
        return
    backbone, head = network()
    if config["engine"] == "torch":
        engine: Engine = TorchEngine(backbone, head, threads=config["threads"])
    elif config["engine"] == "openvino":
        engine = OpenVinoEngine(
            backbone, head, threads=config["threads"], cache_dir=config["cache"]
        )
    else:
        engine = OnnxRuntimeEngine(
            backbone,
            head,
            threads=config["threads"],
            spinning=config["spinning"],
            cache_dir=config["cache"],
        )
    if config.get("budget") is not None:  # forced; else the engine's own rule
        engine.budgets_threads = config["budget"]
    images = prepared([Path(p) for p in config["paths"]], config["side"], backbone)
    references = torch.nn.functional.normalize(
        torch.randn(287, 1280, generator=torch.Generator().manual_seed(0)), dim=1
    )
    for image in images[:2]:  # warm-up
        engine(image)
    seconds = []
    for index in range(config["count"]):
        start = time.perf_counter()
        descriptor = engine(images[index % len(images)])
        int((references @ descriptor[0]).argmax())
        seconds.append(time.perf_counter() - start)
    print(json.dumps(seconds))


def stream_configs(threads: list[int]) -> list[dict]:
    configs = []
    for count in threads:
        configs += [
            {"label": "torch eager", "engine": "torch", "threads": count, "omp": None},
            {"label": "torch eager OMP passive", "engine": "torch", "threads": count,
             "omp": "PASSIVE"},
            {"label": "onnxruntime no spin", "engine": "onnxruntime", "threads": count,
             "spinning": False},
            {"label": "onnxruntime spinning", "engine": "onnxruntime", "threads": count,
             "spinning": True},
        ]  # fmt: skip
        if count > 1:
            configs.append({"label": "onnxruntime no spin, budget", "engine": "onnxruntime",
                            "threads": count, "spinning": False, "budget": True,
                            "reference": "onnxruntime no spin"})  # fmt: skip
        if "openvino" in available_engines():
            configs.append({"label": "openvino (default precision)", "engine": "openvino",
                            "threads": count})  # fmt: skip
            if count > 1:
                configs.append({"label": "openvino, no thread budget", "engine": "openvino",
                                "threads": count, "budget": False,
                                "reference": "openvino (default precision)"})  # fmt: skip
    control = {"label": "control: numpy, no engine", "engine": "control", "threads": 1}
    return [control] + [config for config in configs if config["engine"] in available_engines()]


def run_worker(config: dict) -> list[float]:
    env = dict(os.environ)
    env.pop("OMP_WAIT_POLICY", None)
    env["OMP_NUM_THREADS"] = str(config["threads"])
    if config.get("omp"):
        env["OMP_WAIT_POLICY"] = config["omp"]
    done = subprocess.run(
        [sys.executable, "-P", __file__, "--worker", json.dumps(config)],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"worker {config['label']} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def load_table(args: argparse.Namespace, paths: list[Path], cache: Path) -> None:
    backbone, head = network()
    OnnxRuntimeEngine(backbone, head, cache_dir=cache)  # export once, before the workers
    configs = [
        config
        for config in stream_configs(args.threads)
        if config["engine"] in ("control", *args.load_engines)
    ]
    shared = {"paths": [str(p) for p in paths], "side": args.sizes[0], "count": args.stream,
              "cache": str(cache)}  # fmt: skip
    times: dict[tuple[str, int, bool], list[float]] = {}
    busy_script = "while True: pass"
    for _ in range(args.load_repeats):
        for busy in (False, True):
            competitor = subprocess.Popen([sys.executable, "-c", busy_script]) if busy else None
            try:
                for config in configs:
                    key = (config["label"], config["threads"], busy)
                    times.setdefault(key, []).extend(run_worker({**config, **shared}))
            finally:
                if competitor is not None:
                    competitor.kill()
                    competitor.wait()
    print(
        f"\nStream of {args.stream} images at {args.sizes[0]} px (engine + 1-NN of 287), per "
        f"configuration {args.load_repeats}× interleaved, idle vs one busy-loop process "
        f"(os.cpu_count() = {os.cpu_count()}); ms per image: median / 90th percentile"
    )
    print(
        "busy ÷ 1 idle: the busy median over the same engine's one-thread idle median (the "
        "control, a single-threaded computation, shows what the busy process costs any "
        "program on this machine)"
    )
    print(f"{'engine':<28} {'threads':>7} {'idle':>15} {'busy':>15} {'busy ÷ 1 idle':>14}")
    for config in configs:
        cells = []
        for busy in (False, True):
            values = sorted(times[(config["label"], config["threads"], busy)])
            p90 = values[min(len(values) - 1, int(0.9 * len(values)))]
            cells.append(f"{1000 * statistics.median(values):>6.1f} / {1000 * p90:>6.1f}")
        one_idle = times.get((config.get("reference", config["label"]), 1, False))
        busy_median = statistics.median(times[(config["label"], config["threads"], True)])
        ratio = f"{busy_median / statistics.median(one_idle):.2f}" if one_idle else ""
        print(
            f"{config['label']:<28} {config['threads']:>7} {cells[0]:>15} {cells[1]:>15} "
            f"{ratio:>14}"
        )


# -- int8 -------------------------------------------------------------------------------
def int8_graphs(fp32: Path, calibration: list[np.ndarray], folder: Path) -> dict[str, Path]:
    """Dynamic and static (QDQ, per-channel, convolutions only) int8 versions of ``fp32``."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    prepared_graph = folder / "pre.onnx"
    quant_pre_process(str(fp32), str(prepared_graph), skip_symbolic_shape=True)
    dynamic, static = folder / "dynamic.onnx", folder / "static.onnx"
    quantize_dynamic(str(prepared_graph), str(dynamic), weight_type=QuantType.QUInt8)

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter(calibration)

        def get_next(self) -> dict[str, np.ndarray] | None:
            batch = next(self.batches, None)
            return None if batch is None else {"images": batch}

    pointwise = folder / "pointwise.onnx"
    for path, exclude in ((static, []), (pointwise, not_pointwise(prepared_graph))):
        quantize_static(
            str(prepared_graph),
            str(path),
            Reader(),
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=["Conv"],
            nodes_to_exclude=exclude,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
        )
    return {
        "onnxruntime int8 dynamic": dynamic,
        "onnxruntime int8 static": static,
        "int8 static 1×1 convs": pointwise,
    }


def not_pointwise(graph: Path) -> list[str]:
    """Names of the convolutions of ``graph`` that are not 1×1 (stem and depthwise): left in
    float32 by the pointwise-only int8 variant."""
    import onnx

    names = []
    for node in onnx.load(str(graph)).graph.node:
        kernel = [list(a.ints) for a in node.attribute if a.name == "kernel_shape"]
        if node.op_type == "Conv" and kernel and kernel[0] != [1, 1]:
            names.append(node.name)
    return names


@contextlib.contextmanager
def quiet_stdout() -> Iterator[None]:
    """Send file descriptor 1 to /dev/null (prints from C++ and Python alike)."""
    sys.stdout.flush()
    saved = os.dup(1)
    with open(os.devnull, "w") as null:
        os.dup2(null.fileno(), 1)
        try:
            yield
        finally:
            sys.stdout.flush()
            os.dup2(saved, 1)
            os.close(saved)


def ort_runner(path: Path, threads: int, fixed: bool) -> Callable[[torch.Tensor], torch.Tensor]:
    """Runs the graph at ``path``; ``fixed``: as the engine runs a recurring shape, a session
    per input shape with that shape fixed (the padding then fuses into the convolutions)."""
    import onnxruntime

    from pyinstance.engine.onnxruntime_engine import session_options

    sessions: dict[tuple[int, ...] | None, Any] = {}

    def run(images: torch.Tensor) -> torch.Tensor:
        shape = tuple(images.shape) if fixed else None
        if shape not in sessions:
            options = session_options(onnxruntime, threads, False, shape)
            sessions[shape] = onnxruntime.InferenceSession(
                str(path), options, providers=["CPUExecutionProvider"]
            )
        return torch.from_numpy(sessions[shape].run(None, {"images": images.numpy()})[0])

    return run


def precision_at_1(
    run: Callable[[torch.Tensor], torch.Tensor],
    references: list[torch.Tensor],
    queries: list[torch.Tensor],
    reference_ids: list[str],
    query_ids: list[str],
    run_references: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> np.ndarray:
    """Per query: 1 if its nearest reference (dot product) has its instance id, else 0;
    the references described by ``run_references`` if given, else by ``run``."""
    gallery = torch.cat([(run_references or run)(image) for image in references])
    hits = []
    for image, instance in zip(queries, query_ids, strict=True):
        nearest = int((gallery @ run(image)[0]).argmax())
        hits.append(reference_ids[nearest] == instance)
    return np.asarray(hits, dtype=float)


def int8_table(args: argparse.Namespace, manifest: Manifest, cache: Path) -> None:
    backbone, head = network()
    side = args.sizes[0]
    references = manifest.filter(split="reference")
    queries = manifest.filter(split="query")
    if args.quick:  # a few queries and their references, plus distractors
        queries = queries[:4]
        wanted = set(queries.instance_ids)
        kept = [i for i, e in enumerate(references) if e.instance_id in wanted or i < 8]
        references = Manifest([references[i] for i in kept], references.root)
    reference_images = prepared(references.paths, side, backbone)
    query_images = prepared(queries.paths, side, backbone)
    fp32 = OnnxRuntimeEngine(backbone, head, threads=1, cache_dir=cache)
    calibration = [image.numpy() for image in reference_images[:: max(1, len(references) // 32)]]
    with tempfile.TemporaryDirectory() as folder:
        runners: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
            "torch eager": TorchEngine(backbone, head, threads=1),
            "onnxruntime fp32": fp32,
        }
        logging.disable(logging.WARNING)  # the quantiser logs each tensor it leaves alone
        with quiet_stdout():  # and prints tensor shapes
            graphs = int8_graphs(fp32.path, calibration, Path(folder))
        logging.disable(logging.NOTSET)
        timed = dict(runners)
        for name, path in graphs.items():
            runners[name] = ort_runner(path, 1, fixed=False)  # museum shapes: one session
            timed[name] = ort_runner(path, 1, fixed=True)
        if "openvino" in available_engines():
            openvino_fp32 = OpenVinoEngine(backbone, head, threads=1, precision="fp32",
                                           cache_dir=cache)  # fmt: skip
            runners["openvino fp32"] = timed["openvino fp32"] = openvino_fp32
            if int8_available():
                logging.disable(logging.WARNING)
                with quiet_stdout():
                    quantised = OpenVinoEngine(
                        backbone, head, threads=1, precision="int8", cache_dir=cache
                    )
                logging.disable(logging.NOTSET)
                quantised.sessions.fix_after = 1  # every shape in int8 from its first run
                runners["openvino int8"] = timed["openvino int8"] = quantised
            else:
                print("openvino int8: skipped (pip install nncf)")
        timing_images = reference_images[:4]
        for run in timed.values():  # fixed-shape (int8) sessions built before timing
            for image in timing_images:
                run(image)
        best = best_times(timed, timing_images, args.repeats)
        crops = np.asarray([(s or "").startswith("qsd1") for s in queries.query_sets])
        print(
            f"\nint8 vs fp32 at {side} px, 1 thread, batch 1 (min of {args.repeats} repeats); "
            f"P@1 on museum: {len(references)} references, {int(crops.sum())} crops (qsd1_*), "
            f"{int((~crops).sum())} gallery shots; cosine = min over queries vs torch"
        )
        print(
            f"{'engine':<26} {'ms/image':>9} {'ratio':>6} {'P@1 crops':>10} "
            f"{'P@1 gallery':>12} {'P@1 all':>8} {'min cos':>8}"
        )
        anchor = runners["torch eager"]
        for name, run in runners.items():
            hits = precision_at_1(
                run, reference_images, query_images, references.instance_ids, queries.instance_ids
            )
            cosine = min(float((run(q) * anchor(q)).sum()) for q in query_images)
            print(
                f"{name:<26} {1000 * best[name]:>9.1f} {best['torch eager'] / best[name]:>6.2f} "
                f"{hits[crops].mean():>10.3f} {hits[~crops].mean():>12.3f} {hits.mean():>8.3f} "
                f"{cosine:>8.4f}"
            )
        if "openvino int8" in runners:  # as deployed: an index of mixed sizes stays fp32
            hits = precision_at_1(
                runners["openvino int8"],
                reference_images,
                query_images,
                references.instance_ids,
                queries.instance_ids,
                run_references=runners["openvino fp32"],
            )
            print(
                f"{'int8 queries, fp32 index':<26} {'':>9} {'':>6} {hits[crops].mean():>10.3f} "
                f"{hits[~crops].mean():>12.3f} {hits.mean():>8.3f}"
            )


# -- bf16 against fp32 through the whole pipeline -----------------------------------------
#: Recipes whose museum P@1 decides OpenVINO's default precision (as in benchmarks/latency.py).
PRECISION_RECIPES = {
    "default": DEFAULT_RECIPE,
    "lite0-448": Recipe(backbone="efficientnet_lite0", head="gem", dim=1280, max_side=448),
}


def pipeline_hits(
    folder: Path,
    manifest: Manifest,
    recipe: Recipe,
    engine: str,
    precision: str | None,
    fix_after: int | None = None,
) -> np.ndarray:
    """Per museum query: 1 if ``pyinstance.Identifier`` (threshold 0) names its instance,
    the index built and the queries described by ``engine`` in ``precision``
    (``fix_after``: OpenVINO's runs of a size before its fixed-size session)."""
    variable = openvino_engine.PRECISION_VARIABLE
    default = os.environ.get(variable)
    default_fix_after = OpenVinoEngine.fix_after
    if precision is not None:
        os.environ[variable] = precision
    if fix_after is not None:
        OpenVinoEngine.fix_after = fix_after
    try:
        index, _ = InstanceIndex.build(
            folder, manifest.root / "manifest.csv", recipe, engine=engine
        )
        with index:
            assert index.describer.engine == engine, index.describer.engine
            identifier = Identifier(index, threshold=0)
            queries = manifest.filter(split="query")
            answers = identifier.identify(queries.paths)
    finally:
        OpenVinoEngine.fix_after = default_fix_after
        if default is None:
            os.environ.pop(variable, None)
        else:
            os.environ[variable] = default
    return np.asarray(
        [a.instance == i for a, i in zip(answers, queries.instance_ids, strict=True)], float
    )


def precision_table(manifest: Manifest) -> None:
    """Museum P@1 of each recipe with ONNX Runtime fp32 and OpenVINO fp32, bf16 and int8
    (int8 as deployed: sizes that recur 8 times in int8, the others in fp32; and every
    size in int8, each compiled on its first run: slow)."""
    configs = []
    if "onnxruntime" in available_engines():
        configs.append(("onnxruntime", None, None, "onnxruntime fp32"))
    if "openvino" in available_engines():
        configs.append(("openvino", "fp32", None, "openvino fp32"))
        if openvino_engine.bf16_supported():
            configs.append(("openvino", "bf16", None, "openvino bf16"))
        if int8_available():
            configs.append(("openvino", "int8", None, "openvino int8"))
            configs.append(("openvino", "int8", 1, "int8, every size"))
    queries = manifest.filter(split="query")
    crops = np.asarray([(s or "").startswith("qsd1") for s in queries.query_sets])
    print(
        f"\nMuseum P@1 through the pipeline (index build + identify, threshold 0): "
        f"{len(manifest.filter(split='reference'))} references, {int(crops.sum())} crops "
        f"(qsd1_*), {int((~crops).sum())} gallery shots"
    )
    print(f"{'recipe':<10} {'engine':<18} {'P@1 crops':>10} {'P@1 gallery':>12} {'P@1 all':>8}")
    with tempfile.TemporaryDirectory() as folder:
        for recipe_name, recipe in PRECISION_RECIPES.items():
            for number, (engine, precision, fix_after, label) in enumerate(configs):
                hits = pipeline_hits(
                    Path(folder) / f"{recipe_name}-{number}",
                    manifest,
                    recipe,
                    engine,
                    precision,
                    fix_after,
                )
                print(
                    f"{recipe_name:<10} {label:<18} {hits[crops].mean():>10.3f} "
                    f"{hits[~crops].mean():>12.3f} {hits.mean():>8.3f}"
                )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=4, help="museum photos timed")
    parser.add_argument("--sizes", type=int, nargs="+", default=[448, 640])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--load", action="store_true", help="stream test under a busy process")
    parser.add_argument("--stream", type=int, default=20, help="images per stream worker")
    parser.add_argument("--load-repeats", type=int, default=2)
    parser.add_argument(
        "--load-engines",
        nargs="+",
        choices=available_engines(),
        default=available_engines(),
        help="engines of the stream test (default: every one installed); the control always runs",
    )
    parser.add_argument("--int8", action="store_true", help="int8 speed and museum P@1")
    parser.add_argument(
        "--precision", action="store_true", help="museum P@1 of fp32, bf16 and int8 (minutes)"
    )
    parser.add_argument("--quick", action="store_true", help="1 image, 224 px, 1 repeat")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(json.loads(args.worker))
        return
    if args.quick:
        args.images, args.sizes, args.repeats, args.stream, args.load_repeats = 1, [224], 1, 3, 1
    manifest = Manifest.read(shared_data() / "museum" / "manifest.csv")
    paths = manifest.filter(split="reference").paths[: args.images]
    warnings.simplefilter("ignore")  # quantiser and exporter notices
    print(
        f"torch {torch.__version__}, pyinstance {pyinstance.__version__}, "
        f"os.cpu_count() {os.cpu_count()}, load average {os.getloadavg()[0]:.1f}"
    )
    with tempfile.TemporaryDirectory() as cache_folder:
        cache = Path(cache_folder)
        latency_table(args, paths, cache)
        if args.load:
            load_table(args, paths, cache)
        if args.int8:
            int8_table(args, manifest, cache)
    if args.precision:
        precision_table(manifest)


if __name__ == "__main__":
    main()
