"""Two local CPU ranks (torchrun, gloo) against one process on the same global batches."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest
import torch

from pyinstance.train.distributed import LocalContext

STEPS_SCRIPT = Path(__file__).with_name("ddp_steps.py")


def _load_steps() -> ModuleType:
    spec = importlib.util.spec_from_file_location("ddp_steps", STEPS_SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


steps = _load_steps()


def _results(folder: Path, world_size: int) -> list[dict]:
    return [torch.load(folder / f"rank{r}.pt", weights_only=False) for r in range(world_size)]


@pytest.fixture(scope="module")
def two_ranks(torchrun, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict]]:
    """One 2-rank job: gather, shard, broadcast, a training step, extraction, a checkpoint."""
    folder = tmp_path_factory.mktemp("two_ranks")
    scenarios = ["gather", "shard", "collectives", "step", "extract", "save"]
    torchrun(2, [str(STEPS_SCRIPT), str(folder), *scenarios], cwd=folder)
    return folder, _results(folder, 2)


def _one_process_steps(batches: int) -> tuple[list[dict], torch.nn.Module]:
    model = steps.new_model()
    optimizer = steps.new_optimizer(model)
    context = LocalContext()
    done = [steps.train_step(context, model, optimizer, steps.BATCHES[b]) for b in range(batches)]
    return done, model


def test_gather_concatenates_uneven_rows_in_rank_order_with_summed_gradients(two_ranks) -> None:
    _, ranks = two_ranks
    expected_rows = torch.cat([torch.full((2, 3), 0.0), torch.full((3, 3), 1.0)])
    expected_rows += torch.tensor([0, 1, 0, 1, 2.0])[:, None]
    for rank, result in enumerate(ranks):
        gathered, grad, weights = (result["gather"][k] for k in ("gathered", "grad", "weights"))
        assert torch.equal(gathered, expected_rows)
        own = slice(0, 2) if rank == 0 else slice(2, 5)
        # Every rank's loss has this rank's rows in it: the gradient is their sum.
        assert torch.equal(grad, 2 * weights[own])


def test_shards_are_contiguous_uneven_and_cover_the_batch(two_ranks) -> None:
    _, ranks = two_ranks
    assert ranks[0]["shard"] == [[0], [0, 1, 2], [0, 1, 2, 3]]
    assert ranks[1]["shard"] == [[1], [3, 4], [4, 5, 6, 7]]


def test_batches_smaller_than_the_group_and_scalars_are_refused_on_every_rank(two_ranks) -> None:
    _, ranks = two_ranks
    for result in ranks:
        shard, gather, extraction = result["refused"]
        assert shard.startswith("items: a global batch of 1 cannot be split over 2 ranks")
        assert gather.startswith("local: expected a tensor with a leading row dimension")
        assert extraction.startswith("count: expected at least one item per rank (2), got 1")


def test_broadcasts_give_every_rank_rank_zeros_values_and_sums_add_every_rank(
    two_ranks,
) -> None:
    _, ranks = two_ranks
    for result in ranks:
        assert result["broadcast"] == {"rank": 0}
        assert torch.equal(result["buffers"], torch.ones(2))
        assert torch.equal(result["sum"], torch.tensor([3.0, 4.0]))


def test_sum_gradients_adds_every_ranks_share_and_counts_a_missing_one_as_zero(two_ranks) -> None:
    _, ranks = two_ranks
    for result in ranks:
        weight, bias, only_rank_1, unused = result["gradients"]
        assert torch.equal(weight, torch.tensor([[3.0, 3.0]]))  # inputs 1 and 2
        assert torch.equal(bias, torch.tensor([2.0]))
        assert torch.equal(only_rank_1, torch.tensor([3.0]))
        assert unused is None


def test_one_step_on_two_ranks_equals_one_process_on_the_global_batch(two_ranks) -> None:
    _, ranks = two_ranks
    (reference,), _ = _one_process_steps(1)
    start = torch.cat([p.detach().flatten() for p in steps.new_model().parameters()])
    update = reference["parameters"] - start
    assert (
        update.abs().max() > 1e-3
    )  # the step moved the parameters: the comparison means something
    assert reference["triplets"].shape[1] > 0
    for result in ranks:
        step = result["step"]
        assert torch.equal(step["labels"], steps.LABELS[steps.BATCHES[0]])
        assert torch.equal(step["triplets"], reference["triplets"])
        torch.testing.assert_close(step["loss"], reference["loss"])
        torch.testing.assert_close(step["parameters"] - start, update, rtol=1e-5, atol=1e-7)


def test_extraction_split_across_ranks_gathers_every_descriptor_in_order(two_ranks) -> None:
    _, ranks = two_ranks
    _, model = _one_process_steps(1)
    with torch.no_grad():
        descriptors = model.eval()(steps.images())
    for result in ranks:
        torch.testing.assert_close(result["extract"], descriptors)


def test_only_rank_zero_writes_the_checkpoint(two_ranks) -> None:
    folder, _ = two_ranks
    assert sorted(p.name for p in folder.iterdir()) == ["checkpoint.pt", "rank0.pt", "rank1.pt"]


def test_a_two_rank_checkpoint_resumes_in_one_process(two_ranks) -> None:
    folder, _ = two_ranks
    model = steps.new_model()
    optimizer = steps.new_optimizer(model)
    state = torch.load(folder / "checkpoint.pt", weights_only=True)
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    resumed = steps.train_step(LocalContext(), model, optimizer, steps.BATCHES[1])
    (_, reference), _ = _one_process_steps(2)
    assert torch.equal(resumed["triplets"], reference["triplets"])
    torch.testing.assert_close(resumed["parameters"], reference["parameters"])


def test_a_one_process_checkpoint_resumes_on_two_ranks(torchrun, tmp_path: Path) -> None:
    model = steps.new_model()
    optimizer = steps.new_optimizer(model)
    steps.train_step(LocalContext(), model, optimizer, steps.BATCHES[0])
    torch.save(steps.checkpoint(model, optimizer), tmp_path / "checkpoint.pt")
    torchrun(2, [str(STEPS_SCRIPT), str(tmp_path), "resume"], cwd=tmp_path)
    (_, reference), _ = _one_process_steps(2)
    for result in _results(tmp_path, 2):
        assert result["world_size"] == 2
        assert torch.equal(result["resume"]["triplets"], reference["triplets"])
        torch.testing.assert_close(result["resume"]["parameters"], reference["parameters"])
