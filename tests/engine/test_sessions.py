"""Sessions of one graph: a recurring input shape gets a checked fixed-shape session."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from pyinstance.engine import onnxruntime_engine, sessions
from pyinstance.engine.sessions import SessionPool, within

from .conftest import requires_onnxruntime


class FakeSession:
    """Adds ``offset`` to its input; records its runs."""

    def __init__(self, offset: float = 0.0, fail: bool = False):
        self.offset, self.fail, self.runs = offset, fail, 0

    def get_inputs(self) -> list[SimpleNamespace]:
        return [SimpleNamespace(name="images")]

    def run(self, outputs: None, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        if self.fail:
            raise RuntimeError("cannot fix this shape")
        self.runs += 1
        return [feeds["images"] + self.offset]


def pool_with(fixed: FakeSession) -> tuple[SessionPool, FakeSession, list]:
    dynamic = FakeSession()
    made: list = []

    def make(threads: int, shape: tuple[int, ...] | None) -> FakeSession:
        made.append((threads, shape))
        return dynamic if shape is None else fixed

    return SessionPool(make, within(lambda expected: 1e-4), (dynamic, 1)), dynamic, made


def test_a_recurring_shape_gets_its_own_session() -> None:
    fixed = FakeSession()
    pool, dynamic, made = pool_with(fixed)
    batch = np.ones((1, 3, 8, 6), np.float32)
    for _ in range(sessions.FIX_AFTER + 2):
        np.testing.assert_array_equal(pool.run(batch, 1), batch)
    assert made == [(1, (1, 3, 8, 6))]
    assert pool.fixed_shapes == [(1, (1, 3, 8, 6))]
    # Built and checked against the dynamic session on the FIX_AFTER-th run, used after.
    assert dynamic.runs == sessions.FIX_AFTER and fixed.runs == 3


def test_thread_counts_have_their_own_sessions() -> None:
    pool, _, made = pool_with(FakeSession())
    pool.run(np.ones((1, 3, 4, 4), np.float32), 2)
    pool.run(np.ones((1, 3, 4, 5), np.float32), 1)  # another shape: none recurs yet
    assert made == [(2, None)]
    assert pool.dynamic(2) is pool.dynamic(2)
    assert pool.runs == {1: 1, 2: 1}


@pytest.mark.parametrize("fixed", [FakeSession(offset=0.5), FakeSession(fail=True)])
def test_a_fixed_session_that_differs_or_fails_is_never_used(fixed, caplog) -> None:  # noqa: ANN001
    pool, _, made = pool_with(fixed)
    batch = np.zeros((2, 3, 5, 5), np.float32)
    with caplog.at_level(logging.WARNING, logger=sessions.__name__):
        outputs = [pool.run(batch, 1) for _ in range(sessions.FIX_AFTER + 3)]
    for output in outputs:
        np.testing.assert_array_equal(output, batch)
    assert pool.fixed_shapes == [] and len(made) == 1
    assert len(caplog.records) == 1 and "not fixing input shape (2, 3, 5, 5)" in caplog.text


def run_each(pool: SessionPool, shapes: list[tuple[int, ...]], times: int) -> None:
    for shape in shapes:
        for _ in range(times):
            pool.run(np.zeros(shape, np.float32), 1)


def test_a_full_pool_keeps_the_sessions_in_use_and_new_shapes_run_the_dynamic_graph() -> None:
    pool, dynamic, made = pool_with(FakeSession())
    shapes = [(1, 3, 4, 4 + i) for i in range(sessions.MAX_FIXED_SESSIONS + 2)]
    run_each(pool, shapes, sessions.FIX_AFTER)
    assert pool.fixed_shapes == [(1, s) for s in shapes[: sessions.MAX_FIXED_SESSIONS]]
    assert made == [(1, s) for s in shapes[: sessions.MAX_FIXED_SESSIONS]]
    before = dynamic.runs
    run_each(pool, shapes[-2:], 3)  # they recur, but every session held is in use
    assert dynamic.runs == before + 6 and len(made) == sessions.MAX_FIXED_SESSIONS


def test_shapes_that_come_back_in_turn_are_not_built_again_and_again() -> None:
    """More recurring shapes than sessions, in turn (the scales of portrait and landscape
    photos): the first ones keep their sessions, the rest run the dynamic graph; no build
    drops a session that the next runs need (each build costs tenths of a second)."""
    pool, _, made = pool_with(FakeSession())
    shapes = [(1, 3, 4, 4 + i) for i in range(sessions.MAX_FIXED_SESSIONS + 2)]
    for _ in range(3 * sessions.STALE_AFTER):
        run_each(pool, shapes, 1)
    assert made == [(1, s) for s in shapes[: sessions.MAX_FIXED_SESSIONS]]
    assert sorted(pool.fixed_shapes) == [(1, s) for s in shapes[: sessions.MAX_FIXED_SESSIONS]]


def test_a_session_unused_for_stale_after_runs_makes_room_for_a_new_shape(monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.setattr(sessions, "MAX_FIXED_SESSIONS", 2)
    monkeypatch.setattr(sessions, "STALE_AFTER", 5)
    pool, _, made = pool_with(FakeSession())
    old, kept, new = (1, 3, 4, 4), (1, 3, 4, 5), (1, 3, 4, 6)
    run_each(pool, [old, kept], 2)  # runs 1-4: both fixed; old last ran at run 2
    run_each(pool, [new], 3)  # runs 5-7: new recurs; at run 7 old unused for 5: not stale yet
    assert pool.fixed_shapes == [(1, old), (1, kept)]
    run_each(pool, [new], 1)  # run 8: old unused for 6 runs > 5: dropped for new
    assert pool.fixed_shapes == [(1, kept), (1, new)]
    assert made == [(1, old), (1, kept), (1, new)]


def test_a_stale_session_stays_while_there_is_room(monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.setattr(sessions, "MAX_FIXED_SESSIONS", 3)
    monkeypatch.setattr(sessions, "STALE_AFTER", 2)
    pool, _, _ = pool_with(FakeSession())
    old, new = (1, 3, 4, 4), (1, 3, 4, 5)
    run_each(pool, [old, new], 2)  # new fixed at run 4, old unused for 2 runs: not stale
    run_each(pool, [(1, 3, 4, 6), (1, 3, 4, 6)], 1)  # runs 5-6: a third shape, a free place
    assert pool.fixed_shapes == [(1, old), (1, new), (1, (1, 3, 4, 6))]  # old stale, kept


def test_the_stale_session_goes_before_a_fresh_one_thread_companion(monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.setattr(sessions, "MAX_FIXED_SESSIONS", 3)
    monkeypatch.setattr(sessions, "STALE_AFTER", 2)
    pool, _, _ = pool_with(FakeSession())
    stale, used = (1, 3, 4, 4), (1, 3, 4, 5)
    run_each(pool, [stale, used], 2)  # runs 1-4
    pool.run(np.zeros(used, np.float32), 1)  # run 5: stale last ran at run 2
    new = np.zeros((1, 3, 4, 6), np.float32)
    pool.run(new, 2)  # run 6
    pool.run(new, 2)  # run 7: (2, new) and its companion (1, new) need two places
    assert sorted(pool.fixed_shapes) == [(1, used), (1, new.shape), (2, new.shape)]


def test_a_shape_on_several_threads_needs_a_place_for_its_one_thread_session(monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.setattr(sessions, "MAX_FIXED_SESSIONS", 2)
    pool, _, made = pool_with(FakeSession())
    held, new = np.zeros((1, 3, 4, 4), np.float32), np.zeros((1, 3, 4, 5), np.float32)
    for _ in range(sessions.FIX_AFTER):
        pool.run(held, 1)
    for _ in range(sessions.FIX_AFTER + 2):
        pool.run(new, 2)  # (2, new) and (1, new): two places, one free
    assert pool.fixed_shapes == [(1, held.shape)]
    assert made == [(1, held.shape), (2, None)]  # the two-thread dynamic session only


def test_a_shape_whose_one_thread_session_is_held_needs_one_place(monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.setattr(sessions, "MAX_FIXED_SESSIONS", 2)
    pool, _, made = pool_with(FakeSession())
    batch = np.zeros((1, 3, 4, 4), np.float32)
    for _ in range(sessions.FIX_AFTER):
        pool.run(batch, 1)
    pool.run(batch, 2)  # the shape recurs: (2, batch) fits in the one free place
    assert pool.fixed_shapes == [(1, batch.shape), (2, batch.shape)]
    assert made == [(1, batch.shape), (2, None), (2, batch.shape)]  # no second (1, batch)


@requires_onnxruntime
def test_fixed_shape_session_of_a_real_graph_matches_and_fuses_the_padding(tmp_path) -> None:  # noqa: ANN001
    from pyinstance.models.efficientnet import SameConv2d
    from pyinstance.models.pooling import GeM

    torch.manual_seed(0)
    backbone = torch.nn.Sequential(SameConv2d(3, 8, 3, stride=2), torch.nn.ReLU6())
    backbone.out_channels, backbone.min_input_size = 8, 8
    engine = onnxruntime_engine.OnnxRuntimeEngine(backbone, GeM(8), cache_dir=tmp_path)
    import onnx

    pads = [node for node in onnx.load(engine.path).graph.node if node.op_type == "Pad"]
    assert pads and all("" not in node.input for node in pads)  # fusable into the Conv
    images = torch.rand(1, 3, 45, 38)
    outputs = [engine(images) for _ in range(sessions.FIX_AFTER + 1)]
    assert engine.sessions.fixed_shapes == [(1, (1, 3, 45, 38))]
    with torch.inference_mode():
        expected = GeM(8)(backbone.eval()(images))
    for output in outputs:
        torch.testing.assert_close(output, expected, atol=1e-5, rtol=0)


def test_a_shape_recurs_whatever_thread_count_ran_it() -> None:
    pool, _, made = pool_with(FakeSession())
    batch = np.ones((1, 3, 6, 4), np.float32)
    pool.run(batch, 1)
    pool.run(batch, 3)  # the second run of the shape: fixed for 3 threads (and for 1)
    assert made == [(3, None), (3, (1, 3, 6, 4)), (1, (1, 3, 6, 4))]
    assert sorted(pool.fixed_shapes) == [(1, (1, 3, 6, 4)), (3, (1, 3, 6, 4))]


def test_fixing_a_shape_for_several_threads_readies_it_for_one_thread() -> None:
    fixed = FakeSession()
    pool, dynamic, made = pool_with(fixed)
    batch = np.ones((1, 3, 5, 7), np.float32)
    for _ in range(sessions.FIX_AFTER):
        pool.run(batch, 2)
    runs = dynamic.runs
    np.testing.assert_array_equal(pool.run(batch, 1), batch)  # the budget dropped to 1
    assert dynamic.runs == runs and (1, None) not in made  # no dynamic run, no new session
    assert pool.fixed_shapes[-1] == (1, (1, 3, 5, 7))


def test_fix_after_is_checked_and_counts_the_runs_of_a_shape() -> None:
    dynamic = FakeSession()
    with pytest.raises(ValueError, match="fix_after: expected a positive int"):
        SessionPool(lambda threads, shape: dynamic, within(lambda expected: 1e-4), (dynamic, 1), 0)
    pool = SessionPool(
        lambda threads, shape: FakeSession(), within(lambda e: 1e-4), (dynamic, 1), 4
    )
    batch = np.ones((1, 3, 4, 4), np.float32)
    for _ in range(3):
        pool.run(batch, 1)
    assert pool.fixed_shapes == []
    pool.run(batch, 1)
    assert pool.fixed_shapes == [(1, (1, 3, 4, 4))]
