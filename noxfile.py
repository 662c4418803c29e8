"""Developer sessions: ``nox`` runs the tests; ``nox -s lint build cuda plugins bench quality mutation``
the rest (``mutation`` is slow: run it by hand, it is not part of CI)."""

from __future__ import annotations

import glob
import json
import os
import shutil
import sys
from pathlib import Path

import nox

nox.options.sessions = ["tests"]
nox.options.default_venv_backend = "venv"
nox.options.reuse_existing_virtualenvs = False

ROOT = Path(__file__).parent
PYTHON = f"{sys.version_info.major}.{sys.version_info.minor}"
# The CPU build of torch (available offline); the package itself declares a normal range.
TORCH = "torch==2.13.0"
#: Benchmarks that measure identification quality on the museum set (no --quick mode).
QUALITY_MEASUREMENTS = {
    "recipes.py",
    "postprocess.py",
    "postprocess_index.py",
    "classify_museum.py",
    "quality.py",
    "whitening_size.py",
}
BUILD_TOOLS = ["scikit-build-core>=0.10", "pybind11>=2.12", "cmake>=3.24", "ninja"]


def _install_pyinstance(session: nox.Session, extras: str = "", **env: str) -> None:
    """Build and install pyinstance (non-editable) into the session's virtualenv."""
    session.install(TORCH, *BUILD_TOOLS)
    target = f".[{extras}]" if extras else "."
    # A build folder per session: CMake caches are tied to one interpreter.
    build_env = {"SKBUILD_BUILD_DIR": str(ROOT / "build" / f"nox-{session.name}"), **env}
    session.install("--no-build-isolation", target, env=build_env)


@nox.session(python=PYTHON)
def tests(session: nox.Session) -> None:
    """Build pyinstance as users get it (CUDA when a compiler is found) and run pytest."""
    _install_pyinstance(session, "test,fast")
    session.run("pytest", *session.posargs)


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    """ruff (lint + format check) and clang-format on csrc/."""
    session.install("ruff", "clang-format")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
    sources = sorted(
        glob.glob("csrc/**/*.cpp", recursive=True)
        + glob.glob("csrc/**/*.h", recursive=True)
        + glob.glob("csrc/**/*.cu", recursive=True)
        + glob.glob("csrc/**/*.cuh", recursive=True)
    )
    session.run("clang-format", "--dry-run", "--Werror", *sources)


@nox.session(python=PYTHON)
def build(session: nox.Session) -> None:
    """Wheel + sdist; install the wheel into a fresh venv and call a compiled function."""
    session.install("build")
    dist = ROOT / "dist"
    shutil.rmtree(dist, ignore_errors=True)
    session.run(
        "python",
        "-m",
        "build",
        "--outdir",
        str(dist),
        env={"PYINSTANCE_CUDA": os.environ.get("PYINSTANCE_CUDA", "OFF")},
    )
    wheels = sorted(dist.glob("*.whl"))
    sdists = sorted(dist.glob("*.tar.gz"))
    if len(wheels) != 1 or len(sdists) != 1:
        session.error(f"expected one wheel and one sdist in {dist}, got {wheels + sdists}")
    fresh = Path(session.create_tmp()) / "fresh-venv"
    shutil.rmtree(fresh, ignore_errors=True)
    session.run(sys.executable, "-m", "venv", str(fresh), external=True)
    python = str(fresh / "bin" / "python")
    session.run(python, "-m", "pip", "install", "-q", TORCH, str(wheels[0]), external=True)
    session.run(
        python, str(ROOT / "tests" / "smoke_installed.py"), external=True, env={"PYTHONPATH": ""}
    )


@nox.session(python=PYTHON)
def cuda(session: nox.Session) -> None:
    """Configure with PYINSTANCE_CUDA=ON and compile every .cu file; our warnings are errors."""
    session.install("pybind11>=2.12", "cmake>=3.24", "ninja")
    build_dir = ROOT / "build" / "cuda-check"
    pybind11_dir = session.run("python", "-m", "pybind11", "--cmakedir", silent=True).strip()
    archs = os.environ.get("CMAKE_CUDA_ARCHITECTURES")
    session.run(
        "cmake", "-S", str(ROOT), "-B", str(build_dir), "-G", "Ninja",
        "-DPYINSTANCE_CUDA=ON", "-DPYINSTANCE_CUDA_WERROR=ON",
        f"-Dpybind11_DIR={pybind11_dir}", "-DSKBUILD_PROJECT_VERSION=0.1.0",
        *([f"-DCMAKE_CUDA_ARCHITECTURES={archs}"] if archs else []),
        external=True,
    )  # fmt: skip
    session.run("cmake", "--build", str(build_dir), "--target", "_C_cuda", external=True)
    # The module must import on a machine without a GPU or libcudart.so.
    session.run(
        "python", "-c",
        "import json, _C_cuda; info = _C_cuda.build_info(); "
        "print(json.dumps(info)); assert _C_cuda.device_count() == len(info['devices'])",
        env={"PYTHONPATH": str(build_dir)},
    )  # fmt: skip


@nox.session(python=PYTHON)
def plugins(session: nox.Session) -> None:
    """Install pyinstance and plugins/pyinstance-example side by side; both components work."""
    _install_pyinstance(session, "test", PYINSTANCE_CUDA="OFF")
    session.install("./plugins/pyinstance-example")
    session.run("pyinstance", "plugins")
    session.run("pytest", "plugins/pyinstance-example/tests", *session.posargs)


@nox.session(python=PYTHON)
def bench(session: nox.Session) -> None:
    """Side-by-side benchmarks against faiss, pytorch-metric-learning and plain torch."""
    _install_pyinstance(session, "bench,fast", PYINSTANCE_CUDA="OFF")
    quick = "--quick" in session.posargs
    for script in sorted(glob.glob("benchmarks/*.py")):
        if quick and Path(script).name in QUALITY_MEASUREMENTS:
            continue  # minutes of CNN extraction on the museum set: not a smoke run
        session.run("python", script, *session.posargs)


@nox.session(python=PYTHON)
def quality(session: nox.Session) -> None:
    """The comparison table on the museum set (benchmarks/quality.py; about 30 min on 2 loaded
    cores with onnxruntime, ``-- --quick`` a subset): writes benchmarks/results/quality.{md,json,png}. Arguments go to
    the script (``--data DIR``, ``--runs DIR`` for the trained models, ``--only GROUP``)."""
    _install_pyinstance(session, "bench,fast", PYINSTANCE_CUDA="OFF")
    session.run("python", "benchmarks/quality.py", *session.posargs)


#: Tests that exercise a module, where not every test under tests/<package>/ (the default).
MUTATION_TESTS = {
    # tests/test_extract_units.py: the batching loop, engines, progress, threads and modes
    # with tiny modules (milliseconds a test).
    "pyinstance/extraction.py": ["tests/test_extract.py", "tests/test_extract_units.py"],
    # Not tests/test_identify.py (~160 s: it builds an index of real photos with the
    # pretrained network): these files test the modules on a palette index described by a
    # fake describer (tests/pipeline_fakes.py), every answer worked out by hand.
    "pyinstance/identification.py": [
        "tests/test_identification_units.py",
        "tests/test_identifier_init_units.py",
    ],
    "pyinstance/calibration.py": [
        "tests/test_calibration_units.py",
        "tests/test_calibration_whitened.py",
    ],
    "pyinstance/objects.py": ["tests/test_objects_units.py"],
    # The hooks run once per registry: tests/builtin/test_registrations.py reads a fresh
    # registry in each test (the folder's other files use the loaded one, or build networks).
    **{
        f"pyinstance/builtin/{name}.py": ["tests/builtin/test_registrations.py"]
        for name in (
            "backbones",
            "classifiers",
            "heads",
            "losses",
            "miners",
            "region_head",
            "rerankers",
        )
    },
    # Not tests/eval/test_report.py: it reaches the metrics only through rendering a report
    # (headless Chromium, seconds per mutant); every metric has its own tests here.
    "pyinstance/eval/metrics.py": [
        "tests/eval/test_metrics.py",
        "tests/eval/test_metrics_mutants.py",
        "tests/eval/test_evaluate.py",
    ],
    # The folder's backbone tests (pretrained EfficientNet, FCN) reach these modules only
    # through whole networks (seconds per mutant); these files test them directly.
    "pyinstance/models/pooling.py": [
        "tests/models/test_pooling.py",
        "tests/models/test_regions.py",
    ],
    "pyinstance/models/weights.py": ["tests/models/test_weights.py"],
    # Not the whole of tests/eval/: test_report.py renders in headless Chromium and the
    # fixture of test_evaluate.py runs a network (seconds per mutant); these files test the
    # modules' own functions on hand-made outcomes (test_evaluate.py also runs `evaluate`).
    "pyinstance/eval/evaluate.py": [
        "tests/eval/test_evaluate.py",
        "tests/eval/test_evaluate_units.py",
        "tests/eval/test_evaluate_fake.py",
    ],
    "pyinstance/eval/objects.py": ["tests/eval/test_objects_metrics.py"],
    "pyinstance/eval/report.py": ["tests/eval/test_report_units.py"],
    # The Reranking stage's tests live with the re-rankers (tests/rerank/test_stage.py); no
    # test under tests/classify/ reaches it, so without this entry mutmut finds nothing to run.
    # tests/classify/ as a whole is fast, but under load every file counts: these are the
    # files that call fit_threshold, reject and threshold_for_far.
    "pyinstance/classify/openset.py": [
        "tests/classify/test_openset.py",
        "tests/classify/test_openset_whitened.py",
        "tests/classify/test_openset_searches.py",
    ],
    "pyinstance/classify/rerank.py": [
        "tests/rerank/test_stage.py",
        "tests/rerank/test_stage_answers.py",
        "tests/classify",
    ],
    # The losses' implementation (models/_losses/) has no mirrored folder; these files test
    # each loss against an oracle written in the test (test_losses_pml.py: against
    # pytorch-metric-learning).
    **{
        f"pyinstance/models/_losses/{name}.py": [
            "tests/models/test_losses.py",
            "tests/models/test_losses_classification.py",
            "tests/models/test_losses_pairs.py",
            "tests/models/test_losses_triplet.py",
            "tests/models/test_losses_pml.py",
            "tests/models/test_losses_small_batches.py",
            "tests/models/test_losses_dtypes.py",
            "tests/models/test_losses_inputs_answers.py",
        ]
        for name in ("inputs", "pairs", "triplet", "classification", "combined")
    },
    # Not the folder's backbone tests (whole pretrained networks, seconds per mutant).
    "pyinstance/models/miners.py": [
        "tests/models/test_miners.py",
        "tests/models/test_miners_answers.py",
    ],
    "pyinstance/models/regions.py": [
        "tests/models/test_regions.py",
        "tests/models/test_regions_answers.py",
    ],
    # Not the folder's whole-network tests (pretrained EfficientNet, VGG FCN: seconds per
    # mutant): these files test each module with tiny modules and hand-computed answers.
    "pyinstance/models/contracts.py": ["tests/models/test_contracts.py"],
    "pyinstance/models/region_head.py": [
        "tests/models/test_region_head.py",
        "tests/models/test_region_head_answers.py",
    ],
    "pyinstance/models/fcn.py": ["tests/models/test_pooled_dilated_conv.py"],
    "pyinstance/models/backbone.py": ["tests/models/test_backbone_base.py"],
    # test_resnet_blocks.py: each block against its definition (F.conv2d, the batch-norm
    # formula) with non-trivial norms, tiny channel counts; weights files on ResNet-18.
    "pyinstance/models/resnet.py": [
        "tests/models/test_resnet_small.py",
        "tests/models/test_resnet_blocks.py",
    ],
    # Top-level modules of the mut-misc lane: each has its own test files (no mirrored folder).
    "pyinstance/plugins.py": ["tests/test_plugins.py", "tests/test_plugins_answers.py"],
    "pyinstance/_validate.py": ["tests/test_validate.py", "tests/test_validate_answers.py"],
    "pyinstance/_files.py": ["tests/test_files.py", "tests/test_files_answers.py"],
    # The loader, the lazy exports and the hook specifications: fast unit files. Not the
    # tests that start a Python subprocess: it imports the installed package, never the
    # mutated copy (and no package at all where pyinstance is not installed).
    "pyinstance/_backend.py": [
        "tests/test_backend.py",
        "tests/test_backend_answers.py",
        "--deselect=tests/test_backend.py::test_unknown_isa_cap_gives_a_message_not_a_traceback",
        "--deselect=tests/test_backend.py::test_import_works_when_the_cuda_module_cannot_load",
    ],
    "pyinstance/__init__.py": [
        "tests/test_import.py",
        "tests/test_import_answers.py",
        "--deselect=tests/test_import.py::test_hookimpl_import_loads_no_extension_torch_pil_or_tqdm",
        "--deselect=tests/test_import.py::test_public_names_load_on_first_use",
    ],
    # In-process, with fake build facts and registries (tests/test_cli.py also starts
    # subprocesses: seconds per mutant).
    "pyinstance/cli.py": ["tests/test_cli_answers.py", "tests/test_command_parsers.py"],
    "pyinstance/idle_threads.py": ["tests/test_idle_threads.py"],
    "pyinstance/commands/__init__.py": [
        "tests/test_cli_answers.py",
        "tests/test_command_parsers.py",
    ],
    # In-process over a fake index, identifier and calibration (tests/test_identify.py and
    # tests/test_cli.py run the real pipeline or a subprocess: seconds to minutes a mutant).
    "pyinstance/commands/identify.py": [
        "tests/test_identify_command_units.py",
        "tests/test_command_parsers.py",
    ],
    # In-process over fakes and parse-only (running these commands for real needs an index).
    "pyinstance/commands/evaluate.py": [
        "tests/test_command_parsers.py",
        "tests/test_evaluate_command_units.py",
    ],
    "pyinstance/commands/demo.py": [
        "tests/test_command_parsers.py",
        "tests/test_demo_command_units.py",
    ],
    "pyinstance/demo/page.py": ["tests/demo/test_page.py", "tests/demo/test_page_answers.py"],
    # Not tests/demo/test_queries.py: its fixture changes the whole bundled collection.
    "pyinstance/demo/queries.py": [
        "tests/demo/test_queries_answers.py",
        "tests/demo/test_queries_measured.py",
    ],
    **{
        f"pyinstance/models/{name}.py": [
            "tests/models/test_trained_tripletnet_answers.py",
            "tests/models/test_trained_file_answers.py",
        ]
        for name in ("trained", "tripletnet")
    },
    # Not test_efficientnet.py (pretrained networks run on real photos, seconds a mutant).
    "pyinstance/models/efficientnet.py": [
        "tests/models/test_efficientnet_units.py",
        "tests/models/test_efficientnet_answers.py",
    ],
    # Not test_torchvision_layout.py (builds the 138 M-parameter VGG-16): this file builds
    # the full networks on the meta device and the shared layout as a tiny real network.
    "pyinstance/models/vgg.py": ["tests/models/test_vgg_small.py"],
    # Not the whole of tests/rerank/: test_wiring.py builds a real index (minutes).
    **{
        f"pyinstance/rerank/{name}.py": [
            "tests/rerank/test_verifier.py",
            "tests/rerank/test_verifier_answers.py",
        ]
        for name in ("__init__", "model", "verifier")
    },
    # Not the whole of tests/data/: test_images.py decodes real pictures; each of these
    # modules has its own file.
    "pyinstance/data/manifest.py": [
        "tests/data/test_manifest.py",
        "tests/data/test_manifest_answers.py",
        "tests/data/test_manifest_csv.py",
    ],
    "pyinstance/data/augment.py": [
        "tests/data/test_augment.py",
        "tests/data/test_augment_answers.py",
        "tests/data/test_augment_colour.py",
        "tests/data/test_augment_resampling.py",
    ],
    # The hand-worked answers only: test_composite.py's hypothesis tests cost seconds for
    # every surviving mutant and check properties, not values.
    "pyinstance/data/composite.py": ["tests/data/test_composite_answers.py"],
    # Without the built-ins' largest networks (vgg16 alone runs 25 s): every surviving
    # check_backbone / check_head mutant would run them all; the small ones stay.
    "pyinstance/testing.py": [
        "tests/test_testing.py",
        "tests/test_testing_losses.py",
        "tests/test_testing_limits.py",
        "tests/test_builtin_contracts.py",
        "tests/classify/test_check_classifier.py",
        "tests/rerank/test_check_reranker.py",
        "tests/test_testing_probes.py",
        *(
            f"--deselect=tests/test_builtin_contracts.py::"
            f"test_builtin_component_honours_its_contract[{component}]"
            for component in (
                "backbone:vgg16",
                "backbone:resnet152",
                "backbone:resnet101",
                "backbone:resnet50",
                "backbone:resnet34",
                "head:topk_region",
            )
        ),
    ],
    # tests/index/ holds CLI, crash and concurrency tests that spawn processes or build
    # networks (seconds to minutes a mutant); these files test each module directly.
    "pyinstance/index/neighbours.py": [
        "tests/index/test_neighbours.py",
        "tests/index/test_search.py",
    ],
    # test_screened_search.py: the int8 screen only changes speed, never an answer; only its
    # count of screened calls notices a search that stops using it.
    "pyinstance/index/search.py": [
        "tests/index/test_search.py",
        "tests/index/test_search_edges.py",
        "tests/index/test_search_windows.py",
        "tests/index/test_screened_search.py",
    ],
    "pyinstance/index/screen_cache.py": [
        "tests/index/test_screen_cache_units.py",
        "tests/index/test_screened_search.py",
    ],
    # Not tests/test_threshold_stale.py (calibrates real indexes, seconds per mutant): a
    # stand-in index gives every record and message by hand.
    "pyinstance/index/thresholds.py": ["tests/index/test_thresholds_units.py"],
    "pyinstance/index/sources.py": ["tests/index/test_sources.py"],
    "pyinstance/index/report.py": ["tests/index/test_add_report.py"],
    "pyinstance/index/processed.py": [
        "tests/index/test_processed_units.py",
        "tests/index/test_processed_state.py",
        "tests/index/test_postprocess.py",
    ],
    # Tiny modules in the plugin registry's place (milliseconds a test); not test_images.py
    # (EfficientNet-Lite0 on photos, seconds a test).
    "pyinstance/index/describer.py": ["tests/index/test_describer_units.py"],
    # In-process runs with tiny networks and parse-only tests (a second a run); not
    # test_cli.py or test_cli_engine.py (EfficientNet-Lite0 on photos, seconds a test).
    # test_cli_part1/2/3.py: the parsers (help, defaults, types), the helpers' and summaries'
    # values, and build/add/remove/refit/compact/info's printed answers (tiny networks).
    "pyinstance/index/cli.py": [
        "tests/index/test_cli_units.py",
        "tests/index/test_cli_part1.py",
        "tests/index/test_cli_part2.py",
        "tests/index/test_cli_part3.py",
    ],
    # Indexes filled with add_descriptors (no network); not test_images.py or test_cli*.py.
    "pyinstance/index/instance_index.py": [
        "tests/index/test_instance_index_units.py",
        "tests/index/test_instance_index_describe.py",
        "tests/index/test_instance_index_life.py",
        "tests/index/test_postprocess.py",
        "tests/index/test_store.py",
        "tests/index/test_metadata.py",
        "tests/index/test_pinned.py",
        "tests/index/test_store_lookup.py",
    ],
    "pyinstance/index/metadata.py": [
        "tests/index/test_metadata.py",
        "tests/index/test_metadata_fields.py",
        "tests/index/test_store_metadata.py",
    ],
    "pyinstance/index/recipe.py": [
        "tests/index/test_recipe.py",
        "tests/index/test_recipe_fields.py",
        "tests/index/test_pinned.py",
    ],
    # Not test_crash.py (SIGKILLed writer processes, a minute a run), test_concurrency.py or
    # the CLI tests (processes); test_store_units.py checks the crash clean-up directly.
    "pyinstance/index/store.py": [
        "tests/index/test_store.py",
        "tests/index/test_store_lookup.py",
        "tests/index/test_store_units.py",
        "tests/index/test_store_helpers.py",
        "tests/index/test_store_open.py",
        "tests/index/test_store_plumbing.py",
        "tests/index/test_store_metadata.py",
        "tests/index/test_pinned.py",
        "tests/index/test_metadata.py",
        "tests/index/test_postprocess.py",
        "tests/index/test_search.py",
        "tests/index/test_search_edges.py",
        "tests/index/test_screened_search.py",
    ],
    # The kernels' Python wrappers (argument checks, dispatch): each
    # wrapper's own test file (and the screened search's, which goes through knn_dot) on the
    # generic ISA only, without the slowest kernel-correctness runs (hypothesis searches,
    # many tiles, torch's opcheck, the comparison with pytorch-metric-learning). The
    # wrappers' answers stay checked against the references by the deterministic tests; the
    # deselected ones test the C++ kernels (every ISA), not mutated here.
    **{
        f"pyinstance/ops/{name}.py": [
            *files,
            "tests/ops/test_wrapper_edges.py",
            "-k",
            "not avx2 and not avx512",
            *(
                f"--deselect=tests/ops/{test}"
                for test in (
                    "test_knn_dot.py::test_property_exact",
                    "test_knn_dot.py::test_large_k_many_queries",
                    "test_knn_screen.py::test_screened_equals_plain_on_random_problems",
                    "test_topk_region_pool.py::test_opcheck",
                    "test_topk_region_pool.py::test_hypothesis_against_reference",
                    "test_triplet_mine.py::test_batch_hard_matches_pytorch_metric_learning",
                    "test_triplet_mine.py::test_matches_reference_across_many_tiles",
                    "test_triplet_mine.py::test_positive_pairs_of_mixed_class_sizes_match",
                    "test_triplet_mine.py::test_sampler_matches_python_and_is_distinct_sorted",
                )
            ),
        ]
        for name, files in (
            (
                "knn_dot",
                [
                    "tests/ops/test_knn_dot.py",
                    "tests/ops/test_knn_dot_answers.py",
                    "tests/ops/test_knn_screen.py",
                ],
            ),
            (
                "knn_screen",
                ["tests/ops/test_knn_screen.py", "tests/ops/test_knn_screen_answers.py"],
            ),
            (
                "topk_region_pool",
                [
                    "tests/ops/test_topk_region_pool.py",
                    "tests/ops/test_topk_region_pool_answers.py",
                ],
            ),
            (
                "triplet_mine",
                ["tests/ops/test_triplet_mine.py", "tests/ops/test_triplet_mine_answers.py"],
            ),
        )
    },
    # The references are the kernels' oracle: only hand-worked answers check them (a
    # reference that agrees with a kernel with the same bug proves nothing), and those two
    # files run in seconds where the four kernel files take a minute a mutant under load.
    "pyinstance/ops/_reference.py": [
        "tests/ops/test_reference_answers.py",
        "tests/ops/test_topk_region_pool_answers.py",
    ],
    # The argument checks' and the array layer's own tests (every bound, input kind, check
    # and error; the cupy stand-in): the wrappers' tests reach them only through kernels
    # (seconds a mutant under load).
    "pyinstance/ops/_args.py": ["tests/ops/test_args.py", "tests/ops/test_args_answers.py"],
    "pyinstance/ops/_arrays.py": [
        "tests/ops/test_arrays.py",
        "tests/ops/test_wrapper_edges.py",
        "tests/ops/test_arrays_answers.py",
    ],
    # tests/train/ trains networks and launches torchrun jobs (seconds to minutes a mutant);
    # these files test each module on dicts, fake indexes and tiny tensors.
    # test_config.py writes photos for every config: only the dict-based answers file.
    "pyinstance/train/config.py": ["tests/train/test_config_answers.py"],
    "pyinstance/train/verification.py": ["tests/train/test_verification_units.py"],
    "pyinstance/train/checkpoint.py": ["tests/train/test_run_files.py"],
    "pyinstance/train/metrics.py": ["tests/train/test_run_files.py"],
    "pyinstance/train/sampler.py": [
        "tests/train/test_sampler.py",
        "tests/train/test_run_files.py",
    ],
    "pyinstance/train/views.py": [
        "tests/train/test_run_files.py",
        "tests/train/test_view_maker.py",
    ],
    # test_data.py and test_setup.py read image folders and build whole trainers, and
    # validation.py is reached only through training runs: these files test each module on
    # tiny files and fakes.
    "pyinstance/train/data.py": ["tests/train/test_data_answers.py"],
    "pyinstance/train/setup.py": ["tests/train/test_setup_answers.py"],
    "pyinstance/train/validation.py": ["tests/train/test_validation_answers.py"],
    "pyinstance/train/trainer.py": [
        "tests/train/test_trainer_units.py",
        "tests/train/test_trainer_steps.py",
    ],
    # Not test_distributed_ranks.py / _trainer.py (torchrun jobs, seconds to minutes each):
    # the helpers in one process and DistributedContext in a process group of one rank.
    "pyinstance/train/distributed.py": [
        "tests/train/test_distributed.py",
        "tests/train/test_distributed_group.py",
    ],
    # tests/train/test_command.py trains networks; these run the command over fake trainers.
    "pyinstance/commands/train.py": ["tests/train/test_command_units.py"],
    "pyinstance/train/preview.py": [
        "tests/train/test_preview.py",
        "tests/train/test_preview_answers.py",
        "--deselect=tests/train/test_preview.py::test_runs_as_a_module",  # a subprocess
    ],
    # tests/serve/ runs the service over a real index (a network per app, seconds to minutes
    # per mutant) and in subprocesses and a browser; these files test it over fakes.
    **{
        f"pyinstance/serve/{name}.py": [
            "tests/serve/test_app_units.py",
            "tests/serve/test_serve_units.py",
            "tests/serve/test_collection_units.py",
            "tests/serve/test_heatmap_units.py",
            "tests/serve/test_app_pages.py",
            "tests/serve/test_heatmap_route.py",
        ]
        for name in (
            "collection",
            "errors",
            "heatmap",
            "metrics",
            "review",
            "upload_folder",
            "uploads",
        )
    },
    # The files that reach app.py (tests/serve/test_serve_units.py, test_collection_units.py
    # and test_heatmap_units.py test the other serve modules without it).
    "pyinstance/serve/app.py": [
        "tests/serve/test_app_units.py",
        "tests/serve/test_app_answers.py",
        "tests/serve/test_app_curation.py",
        "tests/serve/test_app_pages.py",
        "tests/serve/test_heatmap_route.py",
    ],
    # Not the whole of tests/engine/: it exports EfficientNet-Lite0 and compiles bf16 models
    # (seconds per test, and every engine test reaches the shared engine code); these files
    # test each module on tiny networks and fakes, answers checked against eager torch.
    "pyinstance/engine/base.py": ["tests/engine/test_base_units.py"],
    "pyinstance/engine/torch_engine.py": ["tests/engine/test_base_units.py"],
    "pyinstance/engine/_traceable.py": ["tests/engine/test_base_units.py"],
    "pyinstance/engine/select.py": ["tests/engine/test_select_units.py"],
    "pyinstance/engine/cpu_load.py": [
        "tests/engine/test_thread_budget.py",
        "tests/engine/test_cpu_load_units.py",
    ],
    "pyinstance/engine/sessions.py": [
        "tests/engine/test_sessions.py",
        "tests/engine/test_sessions_units.py",
    ],
    "pyinstance/engine/export.py": ["tests/engine/test_export_units.py"],
    # Fake runtimes (test_export_units.py, test_exported_units.py: the thread budget, bf16,
    # a subclass's fix_after) and the cache on the tiny network with ONNX Runtime; not the
    # real OpenVINO engines (a compile per engine: seconds a mutant under load).
    "pyinstance/engine/exported.py": [
        "tests/engine/test_export_units.py",
        "tests/engine/test_exported_units.py",
        "tests/engine/test_cache.py",
    ],
    "pyinstance/engine/int8.py": [
        "tests/engine/test_int8_units.py",
        "tests/engine/test_int8_cache_units.py",
    ],
    "pyinstance/engine/sample_photos.py": ["tests/engine/test_int8_units.py"],
    "pyinstance/engine/onnxruntime_engine.py": ["tests/engine/test_onnxruntime_units.py"],
    # Not test_openvino.py's EfficientNet-Lite0 bf16 export (seconds a mutant): the tiny
    # network's bf16 engine in test_openvino_units.py compiles with the bf16 hint instead.
    "pyinstance/engine/openvino_engine.py": [
        "tests/engine/test_openvino_units.py",
        "tests/engine/test_openvino.py",
        "tests/engine/test_openvino_int8.py",
        "--deselect=tests/engine/test_openvino.py::"
        "test_bf16_is_within_its_tolerance_and_far_from_fp32_exactness",
    ],
    # Not tests/serve/test_command.py (it builds an index): create_app and uvicorn replaced.
    "pyinstance/commands/serve.py": ["tests/serve/test_command_units.py"],
}


# Modules whose tests fork badly under mutmut's default runner (see _narrowed_pyproject).
FORKSERVER_MODULES = (
    "pyinstance/engine/",
    "pyinstance/ops/",
    "pyinstance/index/describer.py",
    "pyinstance/index/cli.py",
    "pyinstance/train/trainer.py",
)


def _mutation_tests(session: nox.Session, module: str) -> list[str]:
    """The test files or folders that exercise ``module`` (a path under pyinstance/)."""
    if module in MUTATION_TESTS:
        return MUTATION_TESTS[module]
    package = Path(module).parent
    tests = Path("tests", *package.parts[1:])
    if package == Path("pyinstance") or not (ROOT / tests).is_dir():
        session.error(f"{module}: no tests/ folder mirrors it; add it to MUTATION_TESTS")
    return [str(tests)]


def _mutation_workdir(module: str, compiled: Path) -> Path:
    """A copy of the package and tests in which mutmut mutates ``module`` only.

    mutmut reads its settings from pyproject.toml in the working directory, so each module
    gets a folder (build/mutation/<module>) whose pyproject.toml narrows ``only_mutate`` and
    the tests; the folder is kept between runs, so mutmut's results cache stays valid.
    """
    work = ROOT / "build" / "mutation" / module.removesuffix(".py").replace("/", ".")
    work.mkdir(parents=True, exist_ok=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.so")
    shutil.copytree(ROOT / "pyinstance", work / "pyinstance", ignore=ignore, dirs_exist_ok=True)
    shutil.copytree(ROOT / "tests", work / "tests", ignore=ignore, dirs_exist_ok=True)
    # mutmut imports pyinstance from its mutated copy: give that copy the compiled module.
    shutil.copy2(compiled, work / "pyinstance" / compiled.name)
    return work


def _narrowed_pyproject(module: str, tests: list[str]) -> str:
    """pyproject.toml with [tool.mutmut]'s only_mutate and test selection set to one module."""
    text = (ROOT / "pyproject.toml").read_text()
    for key, values in (("only_mutate", [module]), ("pytest_add_cli_args_test_selection", tests)):
        start = text.index(f"\n{key} = [") + 1
        end = text.index("]", start) + 1
        text = text[:start] + f"{key} = {json.dumps(values)}" + text[end:]
    if module.startswith(FORKSERVER_MODULES):
        # OpenVINO's telemetry forks a process that mutmut's fork runner reaps by mistake
        # (KeyError on its pid), and a kernel's OpenMP threads started by the clean run hang
        # a forked worker that calls a kernel again: run each mutant from a fork server.
        text = text.replace(
            "[tool.mutmut]\n", '[tool.mutmut]\nprocess_isolation = "forkserver"\n', 1
        )
    return text


@nox.session(python=PYTHON)
def mutation(session: nox.Session) -> None:
    """Mutation testing with mutmut over the Python modules named in ``[tool.mutmut]``.

    ``nox -s mutation -- pyinstance/eval/metrics.py [more modules]`` mutates those modules,
    one at a time, each against the tests that mirror it (tests/<package>/ or
    MUTATION_TESTS), in build/mutation/<module>/. Without modules it mutates every module in
    ``only_mutate`` against all tests: hours. Other arguments go to ``mutmut run`` (mutant
    name globs). One mutant at a time (mutmut's --max-children 1, MUTMUT_CHILDREN to change);
    survivors are listed at the end, ``mutmut show <name>`` (in the module's folder) prints
    one's diff. Each survivor deserves a test that kills it, or a note on why it is
    equivalent (docs/mutation.md).
    """
    modules = [arg for arg in session.posargs if arg.endswith(".py")]
    names = [arg for arg in session.posargs if not arg.endswith(".py")]
    for module in modules:
        if not (ROOT / module).is_file() or not module.startswith("pyinstance/"):
            session.error(f"{module}: expected a module path under pyinstance/")
    _install_pyinstance(session, "test,mutation", PYINSTANCE_CUDA="OFF")
    compiled = Path(
        session.run(
            "python", "-P", "-c", "import pyinstance._C as c; print(c.__file__)", silent=True
        ).strip()
    )
    children = os.environ.get("MUTMUT_CHILDREN", "1")
    shared = ROOT.parent / "shared"
    env = {"PYINSTANCE_SHARED": str(shared)} if shared.is_dir() else {}
    run = ["mutmut", "run", "--max-children", children, *names]
    if not modules:
        # mutmut copies pyinstance/ (with the compiled module) into mutants/ at the root.
        copied = ROOT / "pyinstance" / compiled.name
        shutil.copy2(compiled, copied)
        try:
            session.run(*run, env=env)
        finally:
            copied.unlink(missing_ok=True)
        session.run("mutmut", "results")
        return
    for module in modules:
        work = _mutation_workdir(module, compiled)
        (work / "pyproject.toml").write_text(
            _narrowed_pyproject(module, _mutation_tests(session, module))
        )
        with session.chdir(work):
            session.run(*run, env=env)
            session.run("mutmut", "results")


@nox.session(name="train-museum", python=PYTHON)
def train_museum(session: nox.Session) -> None:
    """Fine-tune on the museum set (configs/museum-siamese.toml), then evaluate the model.

    Writes runs/museum-siamese/model.pt (kept out of git), an index built with it and the
    evaluation of the museum queries (runs/museum-siamese/evaluation.json). Pass another
    config as ``nox -s train-museum -- configs/museum-topk-fcn.toml configs/museum-topk.toml``
    (several run in order: the two stages of the top-k region recipe); the last one's model
    is evaluated.
    """
    _install_pyinstance(session, PYINSTANCE_CUDA="OFF")
    configs = session.posargs or ["configs/museum-siamese.toml"]
    for config in configs:
        session.run("pyinstance", "train", config)
    last = Path(configs[-1])
    folder = ROOT / "runs" / last.stem
    data = Path(os.environ.get("PYINSTANCE_SHARED", "/work/shared")) / "data" / "museum"
    shutil.rmtree(folder / "index", ignore_errors=True)
    session.run(
        "pyinstance", "index", "build", str(data / "manifest.csv"), "-o", str(folder / "index"),
        "--model", str(folder / "model.pt"), "--query-max-side", "448", "--windows", "none",
        "--engine", "torch", "--no-progress",
    )  # fmt: skip
    session.run(
        "pyinstance", "evaluate", str(folder / "index"), "--manifest", str(data / "manifest.csv"),
        "--json", str(folder / "evaluation.json"), "--engine", "torch",
    )  # fmt: skip
