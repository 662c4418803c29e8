"""Training the verification re-ranker: the config, a tiny end-to-end run, the command."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pyinstance.cli import main
from pyinstance.identification import Identifier
from pyinstance.index import InstanceIndex, Recipe
from pyinstance.rerank import RecipeMismatchError, read_verifier
from pyinstance.train import ConfigError, Trainer, VerificationTrainer, load_config
from pyinstance.train.verification import VERIFIER, VIEWS_CACHE
from tests.recipes import GEM_ONE_SCALE

#: Tiny photos, described small: seconds per run.
RECIPE = GEM_ONE_SCALE.with_(max_side=64)
INSTANCES = 5


@pytest.fixture(scope="module")
def collection(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A folder of blocky synthetic photos (one per instance) and its index."""
    root = tmp_path_factory.mktemp("verify")
    rng = np.random.default_rng(0)
    for item in range(INSTANCES):
        folder = root / "photos" / f"item{item}"
        folder.mkdir(parents=True)
        blocks = rng.integers(0, 256, (5, 6, 3), dtype=np.uint8)
        Image.fromarray(blocks).resize((72, 60), Image.NEAREST).save(folder / "photo.png")
    index, _ = InstanceIndex.build(root / "index", root / "photos", RECIPE, progress=False)
    index.close()
    return root / "photos", root / "index"


def write_config(tmp_path: Path, photos: Path, index: Path, **verification) -> Path:
    settings = {"index": str(index), "candidates": 3, "views": 2, "projection": 4,
                "hidden": 4, "batch": 4, "validation_fraction": 0.2, **verification}  # fmt: skip
    text = (
        f'output = "{tmp_path / "run"}"\nseed = 1\n[data]\nsource = "{photos}"\n'
        "[augment]\nsizes = [48, 64]\ncomposite = 0.5\nscene_size = 96\n"
        '[train]\nobjective = "verification"\nepochs = 3\nlr_head = 0.01\nprogress = false\n'
        "[verification]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in settings.items())
    )
    path = tmp_path / "verify.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_a_tiny_run_trains_and_serves_its_index(collection, tmp_path):
    photos, index_path = collection
    config = load_config(write_config(tmp_path, photos, index_path))
    trainer = VerificationTrainer(config)
    result = trainer.fit()
    trainer.index.close()
    assert result.model_path == tmp_path / "run" / VERIFIER
    # 5 photos × 2 views, each with its instance present and left out
    assert result.pairs == INSTANCES * 2 * 2
    assert [row["epoch"] for row in result.epochs] == [1, 2, 3]
    assert all(np.isfinite(row["loss"]) for row in result.epochs)
    assert {"train_top1", "train_auroc", "val_top1"} <= set(result.epochs[-1])
    saved = read_verifier(result.model_path)
    assert saved.k == 3 and saved.info["pairs"] == result.pairs
    with InstanceIndex.open(index_path) as index:
        assert Recipe.from_dict(saved.recipe).same_descriptors(index.recipe)
        identifier = Identifier(index, reranker=result.model_path, threshold=0)
        (answer,) = identifier.identify([next(photos.glob("item2/*.png"))])
        assert 0.0 <= answer.confidence <= 1.0 and answer.instance is not None
    assert (tmp_path / "run" / "metrics.jsonl").is_file()
    assert (tmp_path / "run" / VIEWS_CACHE).is_file()


def test_the_views_cache_is_reused_only_for_the_same_set_up(collection, tmp_path):
    photos, index_path = collection
    first = VerificationTrainer(load_config(write_config(tmp_path, photos, index_path)))
    queries, codes = first.describe_views()
    assert queries.shape[:2] == (INSTANCES * 2, 1) and codes.tolist() == [
        0,
        0,
        1,
        1,
        2,
        2,
        3,
        3,
        4,
        4,
    ]
    cache = tmp_path / "run" / VIEWS_CACHE
    stamp = cache.stat().st_mtime_ns
    again, _ = first.describe_views()
    assert cache.stat().st_mtime_ns == stamp and np.array_equal(again, queries)
    more = VerificationTrainer(load_config(write_config(tmp_path, photos, index_path, views=3)))
    assert more.describe_views()[0].shape[0] == INSTANCES * 3
    first.index.close()
    more.index.close()


def test_mined_candidates_are_the_nearest_references(collection, tmp_path):
    photos, index_path = collection
    trainer = VerificationTrainer(load_config(write_config(tmp_path, photos, index_path)))
    queries, codes = trainer.describe_views()
    pairs = trainer.mine(queries, codes)
    references, labels = trainer.index.descriptors(), trainer.index.labels()
    trainer.index.close()
    for m in range(len(pairs)):
        view = m // 2
        similarity = references @ queries[view, 0]
        if m % 2 == 0:  # present: the 3 nearest references
            expected = np.argsort(-similarity, kind="stable")[:3]
        else:  # its instance left out: the 3 nearest others
            others = np.flatnonzero(labels != codes[view])
            expected = others[np.argsort(-similarity[others], kind="stable")[:3]]
        assert np.allclose(pairs.candidates[m].numpy(), references[expected], atol=1e-6)
        assert pairs.labels[m].tolist() == (labels[expected] == codes[view]).astype(float).tolist()


def test_a_verifier_is_refused_for_an_index_of_another_recipe(collection, tmp_path):
    photos, index_path = collection
    result = VerificationTrainer(load_config(write_config(tmp_path, photos, index_path, views=1)))
    model = result.fit().model_path
    result.index.close()
    other, _ = InstanceIndex.build(
        tmp_path / "other", photos, RECIPE.with_(max_side=80), progress=False
    )
    with other, pytest.raises(RecipeMismatchError) as error:
        Identifier(other, reranker=model, threshold=0)
    assert "max_side 64" in str(error.value) and "max_side 80" in str(error.value)


def test_the_config_is_validated(collection, tmp_path):
    photos, index_path = collection
    path = write_config(tmp_path, photos, index_path)
    with pytest.raises(ConfigError, match="verification.index: required by train.objective"):
        load_config(path, **{"verification.index": ""})
    with pytest.raises(ConfigError, match="verification.candidates: expected >= 1"):
        load_config(path, **{"verification.candidates": 0})
    with pytest.raises(ConfigError, match="verification.validation_fraction: expected a value"):
        load_config(path, **{"verification.validation_fraction": 0.9})
    with pytest.raises(ConfigError, match="unknown key\\(s\\) verification.margin"):
        load_config(path, **{"verification.margin": 1})
    with pytest.raises(ConfigError, match="verification.views: expected an integer"):
        load_config(path, **{"verification.views": "4"})
    with pytest.raises(ValueError, match="'verification' trains an index's re-ranker"):
        Trainer(load_config(path))
    metric = load_config(path, **{"train.objective": "metric"})
    with pytest.raises(ValueError, match="VerificationTrainer needs objective = 'verification'"):
        VerificationTrainer(metric)


def test_photos_of_instances_outside_the_index_are_refused(collection, tmp_path):
    photos, index_path = collection
    stranger = tmp_path / "photos"
    for name, colour in (("item0", (200, 10, 30)), ("newcomer", (10, 200, 30))):
        (stranger / name).mkdir(parents=True)
        Image.new("RGB", (64, 64), colour).save(stranger / name / "a.png")
    config = load_config(write_config(tmp_path, stranger, index_path))
    with pytest.raises(ValueError, match="instance\\(s\\) newcomer are not in the index"):
        VerificationTrainer(config)


def test_the_train_command_runs_the_verification_objective(collection, tmp_path, capsys):
    photos, index_path = collection
    path = write_config(tmp_path, photos, index_path)
    assert main(["train", str(path), "--epochs", "1", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["model"] == str(tmp_path / "run" / VERIFIER)
    assert summary["pairs"] == INSTANCES * 2 * 2 and len(summary["epochs"]) == 1
    assert main(["train", str(path), "--max-steps", "2"]) == 2  # bad input: EXIT_ERROR
    assert "--max-steps: not for objective 'verification'" in capsys.readouterr().err
