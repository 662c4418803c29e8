"""benchmarks/quality.py: its rows, cache keys, table writer, skipped models, and a --quick
run on a tiny synthetic manifest whose numbers must equal `pyinstance evaluate`'s."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import pyinstance
from pyinstance.calibration import calibrate
from pyinstance.eval.evaluate import evaluate
from pyinstance.index import InstanceIndex
from pyinstance.models.regions import DEFAULT_WINDOWS
from tests.recipes import PREVIOUS_DEFAULT

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "quality.py"


def _load():
    spec = importlib.util.spec_from_file_location("quality_bench", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["quality_bench"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


quality = _load()


def _models(tmp_path: Path) -> dict[str, Path]:
    return quality.model_files(tmp_path / "runs", {})


def test_rows_cover_every_method_of_the_issue(tmp_path):
    rows = quality.build_rows(_models(tmp_path))
    names = [r.name for r in rows]
    assert len(names) == len(set(names)), "row names must be unique"
    grid = [r for r in rows if r.group == quality.GRID_GROUP]
    assert {(r.spec.backbone, r.spec.head, r.spec.scales) for r in grid} == {
        (b, h, s)
        for b in quality.BACKBONES
        for h in quality.HEADS
        for s in (quality.ONE_SCALE, quality.MULTI_SCALE)
    }
    assert all(r.spec.on_grid for r in grid)
    reductions = {
        r.postprocess["multiscale"]["reduction"] for r in rows if "multiscale" in r.postprocess
    }
    assert reductions == set(pyinstance.postprocess.REDUCTIONS)
    steps = {key for r in rows for key in r.postprocess}
    assert {"whiten", "dba", "qe", "multiscale", "scale_weights"} <= steps
    assert any(r.postprocess.get("qe", {}).get("alpha") for r in rows), "α-QE"
    thresholded = [
        (r.classifier, r.classifier_options.get("transform")) for r in rows if r.threshold
    ]
    assert {c for c, _ in thresholded} == {
        "nn", "knn_vote", "knn_weighted", "mean_knn", "alpha_mean_knn", "instance_mean"
    }  # fmt: skip
    assert {t for c, t in thresholded if c == "knn_weighted"} == set(pyinstance.classify.TRANSFORMS)
    trained = {r.trained for r in rows if r.trained}
    assert trained == set(quality.MODELS)
    for row in rows:
        if row.trained:
            assert row.spec.model == str(tmp_path / "runs" / quality.MODELS[row.trained][0])


def test_the_default_rows_are_the_library_default():
    descriptors = quality.Descriptors(None, Path("unused"), 1, 1)
    row = quality.Row(quality.DEFAULT_NAME, "g", quality.DEFAULT, quality.DEFAULT_POSTPROCESS)
    recipe = quality.row_recipe(row, descriptors)
    assert recipe.same_descriptors(
        pyinstance.DEFAULT_RECIPE.with_(weights_sha256=recipe.weights_sha256)
    )
    assert quality.DEFAULT.on_grid  # described by the shared multi-head pass
    off = quality._with_default_whitening({"whiten": None, "dba": {"k": 1}})
    assert off == {"dba": {"k": 1}}


def test_quick_is_a_subset_and_only_filters(tmp_path):
    rows = quality.build_rows(_models(tmp_path))
    quick = quality.select_rows(rows, quick=True, only=None)
    assert 0 < len(quick) < len(rows) / 5
    assert not any(r.trained for r in quick)
    multi = quality.select_rows(rows, quick=False, only=["multi-scale"])
    assert multi and all(r.group == "multi-scale" for r in multi)
    with pytest.raises(SystemExit, match="unknown group"):
        quality.select_rows(rows, quick=False, only=["no such group"])


def test_model_overrides_and_training_time(tmp_path):
    given = tmp_path / "elsewhere.pt"
    files = quality.model_files(tmp_path / "runs", {"siamese": given, "fcn": None})
    assert files["siamese"] == given
    assert files["fcn"] == tmp_path / "runs" / "museum-topk-fcn" / "model.pt"
    runs = tmp_path / "runs"
    for log, seconds in (
        ("museum-topk-fcn/metrics.jsonl", [10.0, 30.0]),
        ("museum-topk/metrics.jsonl", [5.0, 70.0]),
    ):
        (runs / log).parent.mkdir(parents=True)
        lines = [json.dumps({"epoch": i, "seconds": s}) for i, s in enumerate(seconds)]
        (runs / log).write_text("\n".join(lines) + "\n")
    topk = runs / "museum-topk" / "model.pt"
    assert quality.training_seconds(topk, "topk") == 100.0  # both stages
    assert quality.training_seconds(runs / "museum-topk-fcn" / "model.pt", "fcn") == 30.0
    assert quality.training_seconds(runs / "museum-siamese" / "model.pt", "siamese") is None
    # the first stage's log kept beside the two-stage model comes first
    (runs / "museum-topk" / "stage1-metrics.jsonl").write_text('{"seconds": 1.0}\n')
    assert quality.training_seconds(topk, "topk") == 71.0


def test_cache_key_changes_with_what_made_the_descriptors(tmp_path):
    spec = {"backbone": "efficientnet_lite0", "head": "gem", "model": None}
    key = quality.cache_key("grid", spec, "data1")
    assert key == quality.cache_key("grid", dict(spec), "data1")
    assert key.startswith("grid-")
    assert key != quality.cache_key("grid", spec | {"head": "mac"}, "data1")
    assert key != quality.cache_key("grid", spec, "data2")
    assert key != quality.cache_key("queries", spec, "data1")
    model = tmp_path / "model.pt"
    model.write_bytes(b"one")
    first = quality.cache_key("refs", spec | {"model": str(model)}, "data1")
    model.write_bytes(b"other weights")
    assert first != quality.cache_key("refs", spec | {"model": str(model)}, "data1")


def _record(name, group, p1, micro_ap, **extra):
    numbers = {"p1_answer": p1, "map": p1, "micro_ap": micro_ap, "auroc_unknown": 0.5}
    return {
        "name": name,
        "group": group,
        "all": numbers,
        "groups": {"crop": numbers, "gallery": numbers},
        "dim": 1280,
        "extraction_ms": 12.0,
        "search_ms": 0.5,
        "threshold": None,
        "trained": None,
        **extra,
    }


def test_markdown_table_bolds_the_best_and_lists_skipped_rows(tmp_path):
    results = [
        _record("a", "g1", 0.9, 0.8),
        _record("b", "g1", 0.95, 0.7),
        _record("t", "trained", 0.99, 0.99, trained="siamese", training_s=600.0),
        {"name": "c", "group": "trained", "skipped": "model file x.pt not found"},
    ]
    meta = {
        "command": "python -P benchmarks/quality.py", "data": "d", "references": 3, "queries": 4,
        "unknown_queries": 1, "torch_threads": 1, "load_start": 1.0, "load_end": 2.0,
        "far": 0.05, "views": 1, "engine": "torch", "seconds": 90.0, "cpu_seconds": 60.0,
    }  # fmt: skip
    path = tmp_path / "quality.md"
    quality.write_markdown(results, meta, path)
    text = path.read_text()
    assert "torch engine, 1 thread(s); 1.5 min in all (1.0 min of CPU)" in text
    assert "| a | 0.900 | 0.900 | 0.900 | 0.900 | 0.800 |" in text
    assert "| b | 0.950 | 0.950 | 0.950 | 0.950 | 0.700 |" in text
    assert "| t | **0.990** |" in text and "10 min" in text
    assert "| c | skipped: model file x.pt not found |" in text
    assert "Best row without training (P@1 all, then micro-AP, then mAP): **b**" in text
    assert quality.best_untrained(results)["name"] == "b"
    # the default against the previous default and the best trained row
    results += [
        _record(quality.DEFAULT_NAME, "d", 0.95, 0.9),
        _record(quality.PREVIOUS_NAME, "q", 0.9, 0.85),
    ]
    quality.write_markdown(results, meta, path)
    text = path.read_text()
    assert f"| {quality.PREVIOUS_NAME} | -0.050 | -0.050 | -0.050 | -0.050 | -0.050 |" in text
    assert "| the best trained row (t) | +0.040 | +0.040 | +0.040 | +0.040 | +0.090 |" in text


def test_a_missing_model_skips_its_row_without_extracting(tmp_path, capsys):
    row = quality.Row(
        "trained x", "trained", quality.Spec(model=str(tmp_path / "no.pt")), trained="siamese"
    )
    (record,) = quality.run([row], descriptors=None, work=tmp_path, far=0.05)
    assert record["skipped"] == f"model file {tmp_path / 'no.pt'} not found"
    assert "skipped trained x" in capsys.readouterr().out


# --------------------------------------------------------------------------- a real run


def _pattern(rng: np.random.Generator, size=(224, 176)) -> Image.Image:
    blocks = rng.integers(0, 256, (6, 5, 3), dtype=np.uint8)
    image = Image.fromarray(blocks).resize(size, Image.Resampling.NEAREST)
    return image.rotate(float(rng.uniform(0, 8)), fillcolor=(128, 128, 128))


@pytest.fixture(scope="module")
def tiny_manifest(tmp_path_factory) -> Path:
    """Five instances (one reference each), crops and wall shots of them, an unknown."""
    root = tmp_path_factory.mktemp("tiny")
    rng = np.random.default_rng(0)
    (root / "ref").mkdir()
    (root / "q").mkdir()
    lines = ["path,instance_id,split,query_set"]
    extra = ["path,instance_ids,kind,query_set"]
    for i in range(5):
        image = _pattern(rng)
        image.save(root / "ref" / f"i{i}.jpg")
        lines.append(f"ref/i{i}.jpg,i{i},reference,-")
        image.crop((20, 15, 200, 160)).save(root / "q" / f"crop{i}.jpg")
        lines.append(f"q/crop{i}.jpg,i{i},query,qsd1_w1")
        wall = Image.new("RGB", (320, 260), (200, 190, 170))
        wall.paste(image.resize((150, 118)), (60 + 10 * i, 50))
        wall.save(root / "q" / f"wall{i}.jpg")
        lines.append(f"q/wall{i}.jpg,i{i},query,qsd2_w2")
    _pattern(rng).save(root / "q" / "unknown.jpg")
    extra.append("q/unknown.jpg,,not_in_collection,qsd1_w4")
    (root / "manifest.csv").write_text("\n".join(lines) + "\n")
    (root / "extra_queries.csv").write_text("\n".join(extra) + "\n")
    return root


@pytest.mark.slow
def test_quick_run_writes_the_table_and_agrees_with_evaluate(tiny_manifest, tmp_path):
    out = tmp_path / "results"
    quality.main(
        ["--quick", "--data", str(tiny_manifest), "--out", str(out), "--cache", str(tmp_path / "c"),
         "--runs", str(tmp_path / "runs")]
    )  # fmt: skip
    report = json.loads((out / "quality.json").read_text())
    assert (out / "quality.png").stat().st_size > 10_000
    assert "lite0 mac 448 " in (out / "quality.md").read_text()
    rows = {r["name"]: r for r in report["rows"]}
    assert {r.name for r in quality.select_rows(quality.build_rows({}), True, None)} == set(rows)
    assert report["meta"]["queries"] == 11 and report["meta"]["unknown_queries"] == 1
    manifest, extra = tiny_manifest / "manifest.csv", tiny_manifest / "extra_queries.csv"
    for name, recipe in (
        (quality.DEFAULT_NAME, pyinstance.DEFAULT_RECIPE),
        ("lite0 mac 448", pyinstance.Recipe(backbone="efficientnet_lite0", head="mac", dim=1280)),
    ):
        index, _ = InstanceIndex.build(tmp_path / name, manifest, recipe, progress=False)
        with index:
            expected = evaluate(index, manifest, extra, groups=quality.GROUPS).metrics
        got = rows[name]

        def nan(value):
            return float("nan") if value is None else value  # JSON holds NaN as null

        for key in ("p_at_1", "map", "micro_ap", "auroc_unknown", "recall_at_5"):
            assert nan(got["all"][key]) == pytest.approx(expected[key], abs=1e-6, nan_ok=True)
            for group in ("crop", "gallery"):
                assert nan(got["groups"][group][key]) == pytest.approx(
                    expected["named_groups"][group][key], abs=1e-6, nan_ok=True
                ), (name, group, key)
        # with the nearest neighbour, the answer's P@1 is the ranking's
        assert got["all"]["p1_answer"] == pytest.approx(expected["p_at_1"])
    thresholded = [r for r in report["rows"] if r["threshold"] is not None]
    assert thresholded and all(0.0 <= r["threshold"] <= 1.0 for r in thresholded)
    # the threshold rows fit as `pyinstance calibrate` does (post-processing refitted per fold)
    index, _ = InstanceIndex.build(tmp_path / "calibrated", manifest, progress=False)
    with index:
        fit = calibrate(index, views=1)
    row = rows[f"default, nn, threshold @ FAR {quality.TARGET_FAR}"]
    assert row["threshold"] == pytest.approx(fit.threshold, abs=1e-4)
    assert row["threshold_fit"]["far"] == pytest.approx(fit.far)
    # a second run reads every descriptor from the cache
    quality.main(
        ["--quick", "--data", str(tiny_manifest), "--out", str(out), "--cache", str(tmp_path / "c"),
         "--runs", str(tmp_path / "runs")]
    )  # fmt: skip
    assert json.loads((out / "quality.json").read_text())["meta"]["extraction_seconds"] == {}


class _Refusing:
    """Descriptors whose describer the library refuses to build."""

    data = None

    def describer(self, spec):
        raise ValueError("recipe.model: holds another head")


def test_a_row_the_library_refuses_is_recorded_with_the_reason(tmp_path, capsys):
    row = quality.Row("refused", "g", quality.Spec())
    (record,) = quality.run([row], descriptors=_Refusing(), work=tmp_path, far=0.05)
    assert record["skipped"] == "failed: ValueError: recipe.model: holds another head"
    assert "skipped refused: failed: ValueError: recipe.model" in capsys.readouterr().out


def test_the_previous_default_row_describes_as_the_tests_pinned_recipe() -> None:
    spec, recipe = quality.PREVIOUS_DEFAULT, PREVIOUS_DEFAULT
    assert (spec.backbone, spec.head, spec.scales, spec.max_side, spec.model) == (
        recipe.backbone,
        recipe.head,
        recipe.scales,
        recipe.max_side,
        recipe.model,
    )
    assert (spec.query_side, spec.windows) == (recipe.query_max_side, True)
    assert recipe.query_windows == DEFAULT_WINDOWS and recipe.postprocess == {}
