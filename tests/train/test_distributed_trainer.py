"""``pyinstance train`` on 2 local CPU ranks (torchrun, gloo) against the trainer in one process.

The tiny collection of ``tiny_config`` (6 instances, one photo each, ``tripletnet_small``
without dropout, so that nothing is drawn at random outside the per-sample augmentation);
batches of 3 instances × 3 views = 9 samples, split 5 + 4 over the ranks.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch

from pyinstance.train import Trainer, load_config

WRITES_SCRIPT = Path(__file__).with_name("ddp_train_writes.py")


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """The one-process reference runs on one intra-op thread, as each rank does (the
    torchrun fixture): the comparison is of the distributed algorithm, and intra-op
    threads would reorder its float sums on top of the ranks' split."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def make_config(tiny_config: Callable[..., Path]) -> Callable[..., Path]:
    """``make(mining="online", objective="metric")``: the config of these tests."""

    def make(mining: str = "online", objective: str = "metric") -> Path:
        train = {
            "objective": objective,
            "loss": "triplet_margin" if objective == "metric" else "fcn_multiscale_ce",
            "loss_params": {"margin": 0.3} if objective == "metric" else {},
            "scales": [1.0, 0.75],
            "mining": mining,
            "miner_params": {"n_pos": 1, "n_neg": 2} if mining == "offline" else {},
            "epochs": 1,
            "instances_per_batch": 3,
            "views_per_instance": 3,
        }
        model = {"backbone_params": {"dropout": 0.0, "num_classes": 6}}
        return tiny_config(instances=6, augment={"sizes": [48]}, model=model, train=train)

    return make


def _train_here(config: Path, output: Path, max_steps: int, *, resume: bool = False) -> Trainer:
    trainer = Trainer(load_config(config, output=str(output), **{"train.max_steps": max_steps}))
    if resume:
        assert trainer.resume()
    trainer.fit()
    return trainer


def _state(output: Path) -> dict:
    return torch.load(output / "checkpoint.pt", weights_only=True)["state"]


def _assert_same_run(state: dict, reference: dict, start: dict) -> None:
    """Same step, same batch statistics, same gradients, same weight updates from ``start``.

    The gradients are compared through AdamW's first moments (linear in them). The tiny
    network's gradients are ~1e-7 and come from sums that cancel, so summation order
    (intra-op threads, the split over ranks) moves them by up to ~1e-3 of their size; a
    wrong gradient (a rank's share missing or counted twice) moves them by their own size:
    1e-2 separates the two. AdamW moves a weight by ``lr`` times about the sign of its
    moment, so a weight whose moment is at rounding level may move by up to ``2 lr`` per
    step the other way; every other weight must match within the same 1e-2.
    """
    assert state["step"] == reference["step"]
    # The statistics of the global batch: loss, number of triplets mined, active ones.
    for key, value in reference["running"].items():
        assert state["running"][key] == pytest.approx(value, rel=1e-5), key
    ours, theirs = state["optimizer"]["state"], reference["optimizer"]["state"]
    assert ours.keys() == theirs.keys()
    largest = max(float(m["exp_avg"].abs().max()) for m in theirs.values())
    assert largest > 0
    moments = {}
    for index, moment in theirs.items():
        expected, got = moment["exp_avg"], ours[index]["exp_avg"]
        assert (got - expected).norm() <= 1e-2 * expected.norm() + 1e-4 * largest, index
        moments[start["parameter_names"][index]] = expected
    # the schedule's starting rate bounds every step's (the cosine decays from it)
    groups = reference["optimizer"]["param_groups"]
    lr = max(group.get("initial_lr", group["lr"]) for group in groups)
    moved = 0.0
    for part in ("backbone", "head"):
        assert state[part].keys() == reference[part].keys()
        for name, tensor in reference[part].items():
            update = tensor - start[part][name]
            difference = state[part][name] - tensor
            moved = max(moved, float(update.abs().max()))
            moment = moments.get(f"{part}.{name}")
            clear = (
                torch.ones_like(tensor, dtype=torch.bool)
                if moment is None
                else moment.abs() >= 1e-3 * largest
            )
            tight = difference[clear].norm() <= 1e-2 * update[clear].norm() + 1e-7
            assert tight, f"{part}.{name}"
            if not bool(clear.all()):
                loose = float(difference[~clear].abs().max()) <= 2 * lr * reference["step"]
                assert loose, f"{part}.{name}"
    assert moved > 1e-3  # the steps changed the weights: the comparison means something


def _train_on_two_ranks(torchrun, config: Path, output: Path, max_steps: int) -> str:
    """``torchrun --nproc_per_node=2 -m pyinstance train CONFIG``; its standard output."""
    command = ["-m", "pyinstance", "train", str(config), "--output", str(output)]
    return torchrun(2, [*command, "--max-steps", str(max_steps)], cwd=output.parent).stdout


def _parameter_names(trainer: Trainer) -> dict[int, str]:
    """The optimiser's parameter indices -> their state-dict names (``part.name``)."""
    names = {id(p): f"backbone.{n}" for n, p in trainer.backbone.named_parameters()}
    names |= {id(p): f"head.{n}" for n, p in trainer.head.named_parameters()}
    order = [p for group in trainer.optimizer.param_groups for p in group["params"]]
    return {index: names[id(p)] for index, p in enumerate(order)}


def _reference(config: Path, folder: Path, steps: int) -> tuple[dict, dict]:
    """The initial weights and the checkpoint after ``steps`` steps in one process."""
    trainer = Trainer(load_config(config, output=str(folder / "unused")))
    start = trainer.state_dict()
    start["parameter_names"] = _parameter_names(trainer)
    _train_here(config, folder / f"{steps}-steps", steps)
    return start, _state(folder / f"{steps}-steps")


def test_one_step_on_two_ranks_equals_one_process_and_only_rank_zero_writes(
    torchrun, make_config, tmp_path: Path
) -> None:
    config = make_config()
    start, one_step = _reference(config, tmp_path, 1)
    output = tmp_path / "run"
    command = ["train", str(config), "--output", str(output), "--max-steps", "1", "--json"]
    done = torchrun(2, [str(WRITES_SCRIPT), str(tmp_path), *command], cwd=tmp_path)
    assert done.stdout.count('"steps": 1') == 1  # one report, from rank 0
    _assert_same_run(_state(output), one_step, start)
    assert (tmp_path / "writes-rank1.txt").read_text() == ""
    written = set((tmp_path / "writes-rank0.txt").read_text().split())
    assert {"checkpoint.pt", "model.pt"} <= written
    assert sorted(p.name for p in output.iterdir()) == ["checkpoint.pt", "model.pt"]


def test_a_two_rank_checkpoint_resumes_in_one_process(torchrun, make_config, tmp_path) -> None:
    config = make_config()
    start, two_steps = _reference(config, tmp_path, 2)
    output = tmp_path / "run"
    _train_on_two_ranks(torchrun, config, output, 1)
    trainer = _train_here(config, output, 2, resume=True)
    assert trainer.step == 2
    _assert_same_run(_state(output), two_steps, start)


def test_a_one_process_checkpoint_resumes_on_two_ranks(torchrun, make_config, tmp_path) -> None:
    config = make_config()
    start, two_steps = _reference(config, tmp_path, 2)
    output = tmp_path / "run"
    _train_here(config, output, 1)
    assert "resumed at step 1" in _train_on_two_ranks(torchrun, config, output, 2)
    _assert_same_run(_state(output), two_steps, start)


@pytest.mark.parametrize(
    "options",
    [{"mining": "offline"}, {"objective": "classifier"}],
    ids=["offline-mining", "classifier-objective"],
)
def test_offline_mining_and_the_classifier_objective_on_two_ranks_equal_one_process(
    torchrun, make_config, tmp_path: Path, options: dict[str, str]
) -> None:
    config = make_config(**options)
    start, reference = _reference(config, tmp_path, 1)
    output = tmp_path / "run"
    _train_on_two_ranks(torchrun, config, output, 1)
    # Offline: the triplet batches mined on descriptors extracted in parts by the ranks.
    assert reference["epoch_batches"]
    assert _state(output)["epoch_batches"] == reference["epoch_batches"]
    # Classifier: the loss logged is the global batch's, the ranks' shares summed.
    _assert_same_run(_state(output), reference, start)
