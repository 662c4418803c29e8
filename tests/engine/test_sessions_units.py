"""The session pool's bookkeeping with fake sessions: what is built, in which order it is
kept, what is refused and what the warnings say."""

from __future__ import annotations

import logging
from collections.abc import Callable
from types import SimpleNamespace

import numpy as np
import pytest

from pyinstance.engine import sessions
from pyinstance.engine.sessions import SessionPool, within


class Session:
    """Adds ``offset`` to its input (or gives an empty output, or fails)."""

    def __init__(self, offset: float = 0.0, empty: bool = False, fail: bool = False):
        self.offset, self.empty, self.fail = offset, empty, fail

    def get_inputs(self) -> list[SimpleNamespace]:
        return [SimpleNamespace(name="images")]

    def run(self, outputs: None, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        if self.fail:
            raise RuntimeError("cannot fix this shape")
        batch = feeds["images"]
        if self.empty:
            return [np.zeros((batch.shape[0], 0), np.float32)]
        return [batch + self.offset]


def _pool(fixed: Session | None = None, tolerance=lambda expected: 1e-4, fix_after=2, dynamic=None):  # noqa: ANN001, ANN202
    dynamic = dynamic or Session()
    made: list = []

    def make(threads: int, shape: tuple[int, ...] | None) -> Session:
        made.append((threads, shape))
        if shape is None:
            return Session(dynamic.offset, dynamic.empty)
        return fixed or Session()

    return SessionPool(make, within(tolerance), (dynamic, 1), fix_after), made


@pytest.mark.parametrize("fix_after", [2.0, True, 0, -3])
def test_fix_after_must_be_a_positive_int(fix_after) -> None:  # noqa: ANN001
    with pytest.raises(ValueError, match="fix_after: expected a positive int"):
        _pool(fix_after=fix_after)


def test_fix_after_one_fixes_a_shape_on_its_first_run() -> None:
    pool, made = _pool(fix_after=1)
    pool.run(np.ones((1, 3, 4, 4), np.float32), 1)
    assert made == [(1, (1, 3, 4, 4))] and pool.fixed_shapes == [(1, (1, 3, 4, 4))]


def test_each_thread_count_gets_one_dynamic_session() -> None:
    pool, made = _pool()
    two = pool.dynamic(2)
    assert pool.dynamic(2) is two and pool.dynamic(2) is two
    three = pool.dynamic(3)
    assert three is not two and pool.dynamic(3) is three
    assert made == [(2, None), (3, None)]


def test_runs_are_counted_per_thread_count() -> None:
    pool, _ = _pool(fix_after=100)
    for threads in (1, 1, 2, 1):
        pool.run(np.ones((1, 3, 4, 4), np.float32), threads)
    assert pool.runs == {1: 3, 2: 1}


def test_a_shape_fixed_on_one_thread_is_not_rebuilt_for_it_when_fixed_for_three() -> None:
    pool, made = _pool()
    batch = np.ones((1, 3, 4, 6), np.float32)
    pool.run(batch, 1)
    pool.run(batch, 1)
    pool.run(batch, 3)
    assert made == [(1, (1, 3, 4, 6)), (3, None), (3, (1, 3, 4, 6))]


def test_the_one_thread_companion_is_kept_as_the_oldest_use() -> None:
    pool, _ = _pool()
    first, second = np.ones((1, 3, 4, 4), np.float32), np.ones((1, 3, 5, 5), np.float32)
    for _ in range(2):
        pool.run(first, 1)
    for _ in range(2):
        pool.run(second, 3)
    # (1, second) was not asked for: it goes first in line to be dropped.
    assert pool.fixed_shapes == [(1, (1, 3, 5, 5)), (1, (1, 3, 4, 4)), (3, (1, 3, 5, 5))]


def test_a_dropped_fixed_shape_that_recurs_is_fixed_again(monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.setattr(sessions, "STALE_AFTER", 0)  # a session not run this run may go
    pool, made = _pool()
    shapes = [(1, 3, 4, 4 + i) for i in range(sessions.MAX_FIXED_SESSIONS + 1)]
    for shape in shapes:
        for _ in range(2):
            pool.run(np.zeros(shape, np.float32), 1)
    assert (1, shapes[0]) not in pool.fixed_shapes
    pool.run(np.zeros(shapes[0], np.float32), 1)  # it recurs: fixed at once, no counting again
    assert pool.fixed_shapes[-1] == (1, shapes[0])
    assert made.count((1, shapes[0])) == 2


def test_a_session_that_differs_by_exactly_the_tolerance_is_used() -> None:
    pool, _ = _pool(fixed=Session(offset=0.25), tolerance=lambda expected: 0.25)
    batch = np.ones((1, 3, 4, 4), np.float32)
    for _ in range(3):
        pool.run(batch, 1)
    assert pool.fixed_shapes == [(1, (1, 3, 4, 4))]


def test_the_tolerance_is_computed_from_the_dynamic_output() -> None:
    seen: list = []

    def tolerance(expected: np.ndarray) -> float:
        seen.append(expected.copy())
        return 0.1 * float(np.abs(expected).max())

    pool, _ = _pool(fixed=Session(offset=0.5), tolerance=tolerance)
    batch = np.full((1, 3, 4, 4), 10.0, np.float32)
    outputs = [pool.run(batch, 1) for _ in range(3)]
    np.testing.assert_array_equal(outputs[-1], batch + 0.5)  # the fixed session's answer
    assert pool.fixed_shapes == [(1, (1, 3, 4, 4))]
    np.testing.assert_array_equal(seen[0], batch)


def test_an_empty_output_is_no_difference() -> None:
    pool, _ = _pool(fixed=Session(empty=True), dynamic=Session(empty=True))
    batch = np.ones((2, 3, 4, 4), np.float32)
    for _ in range(3):
        assert pool.run(batch, 1).shape == (2, 0)
    assert pool.fixed_shapes == [(1, (2, 3, 4, 4))]


def test_the_warnings_name_the_shape_the_error_and_the_difference(caplog) -> None:  # noqa: ANN001
    batch = np.zeros((2, 3, 5, 5), np.float32)
    with caplog.at_level(logging.WARNING, logger=sessions.__name__):
        failing, _ = _pool(fixed=Session(fail=True))
        differing, _ = _pool(fixed=Session(offset=0.5))
        for pool in (failing, differing):
            for _ in range(2):
                pool.run(batch, 1)
    assert [record.getMessage() for record in caplog.records] == [
        "not fixing input shape (2, 3, 5, 5): RuntimeError: cannot fix this shape",
        "not fixing input shape (2, 3, 5, 5): its session differs from the dynamic one by 0.5 "
        "(shape (2, 3, 5, 5) vs (2, 3, 5, 5))",
    ]


def _runs(pool: SessionPool, *widths: int) -> None:
    for width in widths:
        pool.run(np.zeros((1, 3, 4, width), np.float32), 1)


def test_interleaved_shapes_are_counted_each() -> None:
    pool, _ = _pool()
    _runs(pool, 4, 5, 4)
    assert pool.fixed_shapes == [(1, (1, 3, 4, 4))]


def test_the_counts_start_again_when_a_new_shape_finds_them_full(monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.setattr(sessions, "_MAX_COUNTED", 3)
    pool, _ = _pool()
    _runs(pool, 4, 5, 6, 4)  # full, but 4 is counted already: its second run
    assert pool.fixed_shapes == [(1, (1, 3, 4, 4))]
    pool, _ = _pool()
    _runs(pool, 4, 5, 6, 7, 4)  # 7 found them full: counting starts again, 4 seen once
    assert pool.fixed_shapes == []
    _runs(pool, 4)
    assert pool.fixed_shapes == [(1, (1, 3, 4, 4))]


def test_the_recurring_shapes_are_forgotten_when_full(monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.setattr(sessions, "_MAX_COUNTED", 2)
    monkeypatch.setattr(sessions, "MAX_FIXED_SESSIONS", 1)
    monkeypatch.setattr(sessions, "STALE_AFTER", 0)
    pool, made = _pool()
    _runs(pool, 4, 4, 5, 5, 6, 6)  # 6 recurs with 4 and 5 remembered: they are forgotten
    assert pool.fixed_shapes == [(1, (1, 3, 4, 6))]
    _runs(pool, 4)  # counted again from one, not fixed at once
    assert pool.fixed_shapes == [(1, (1, 3, 4, 6))] and made.count((1, (1, 3, 4, 4))) == 1


def _while_building(first: np.ndarray, meanwhile: Callable[[SessionPool], None]) -> list:
    """Run ``first`` on a pool (fix_after 1) in a thread whose first fixed-shape build
    blocks; call ``meanwhile(pool)`` during that build; the sessions made."""
    import threading

    release, started = threading.Event(), threading.Event()
    made: list = []

    def make(threads: int, shape: tuple[int, ...] | None) -> Session:
        made.append((threads, shape))
        if shape is not None and len(made) == 1:
            started.set()
            release.wait(60)
        return Session()

    pool = SessionPool(make, within(lambda expected: 1e-4), (Session(), 1), 1)
    builder = threading.Thread(target=pool.run, args=(first, 1))
    builder.start()
    assert started.wait(60)
    meanwhile(pool)
    release.set()
    builder.join(60)
    assert pool.fixed_shapes == [(1, first.shape)]
    return made


def test_a_shape_being_fixed_is_not_built_twice_at_once() -> None:
    batch = np.ones((1, 3, 4, 4), np.float32)

    def again(pool: SessionPool) -> None:  # the dynamic session answers
        np.testing.assert_array_equal(pool.run(batch, 1), batch)

    assert _while_building(batch, again) == [(1, batch.shape)]


def test_a_session_being_built_takes_its_place_in_a_full_pool(monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.setattr(sessions, "MAX_FIXED_SESSIONS", 1)
    first, second = np.ones((1, 3, 4, 4), np.float32), np.ones((1, 3, 4, 5), np.float32)

    def another(pool: SessionPool) -> None:  # recurs (fix_after 1); the one place is taken
        pool.run(second, 1)

    assert _while_building(first, another) == [(1, first.shape)]


def test_within_compares_the_largest_difference_with_the_tolerance_of_expected() -> None:
    seen = []
    agrees = within(lambda expected: seen.append(expected.copy()) or 0.5)
    expected = np.array([[1.0, -2.0]], np.float32)
    assert agrees(expected + np.array([[0.5, -0.5]], np.float32), expected)
    assert not agrees(expected + np.array([[0.0, 0.51]], np.float32), expected)
    assert agrees(np.zeros((2, 0), np.float32), np.zeros((2, 0), np.float32))
    np.testing.assert_array_equal(seen[0], expected)


def test_the_agreement_sees_both_outputs_and_the_kept_session_answers_at_once() -> None:
    calls = []

    def agrees(got: np.ndarray, expected: np.ndarray) -> bool:
        calls.append((got.copy(), expected.copy()))
        return True

    made = []

    def make(threads: int, shape: tuple[int, ...] | None) -> Session:
        made.append(shape)
        return Session(offset=0.0 if shape is None else 3.0)

    pool = SessionPool(make, agrees, (Session(), 1), 1)
    batch = np.ones((1, 3, 2, 2), np.float32)
    # the run that builds the fixed session answers with it, as every later run does
    np.testing.assert_array_equal(pool.run(batch, 1), batch + 3.0)
    ((got, expected),) = calls
    np.testing.assert_array_equal(got, batch + 3.0)
    np.testing.assert_array_equal(expected, batch)
    np.testing.assert_array_equal(pool.run(batch, 1), batch + 3.0)
    assert made == [(1, 3, 2, 2)]


def test_a_refused_session_leaves_the_dynamic_answer() -> None:
    pool = SessionPool(
        lambda threads, shape: Session(offset=0.0 if shape is None else 3.0),
        lambda got, expected: False,
        (Session(), 1),
        1,
    )
    batch = np.ones((1, 3, 2, 2), np.float32)
    for _ in range(2):
        np.testing.assert_array_equal(pool.run(batch, 1), batch)
    assert pool.fixed_shapes == []


class Widened(Session):
    """Gives one column more than the dynamic session."""

    def run(self, outputs: None, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        batch = feeds["images"]
        return [np.ones((batch.shape[0], 5), np.float32)]


def test_the_warning_names_a_shape_mismatch_and_a_difference_of_nonzero_outputs(caplog) -> None:  # noqa: ANN001
    class Narrow(Session):
        def run(self, outputs: None, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
            return [np.ones((feeds["images"].shape[0], 4), np.float32)]

    batch = np.full((2, 3, 5, 5), 2.0, np.float32)
    with caplog.at_level(logging.WARNING, logger=sessions.__name__):
        widened = SessionPool(
            lambda threads, shape: Narrow() if shape is None else Widened(),
            within(lambda expected: 1e-4),
            (Narrow(), 1),
            1,
        )
        shifted, _ = _pool(fixed=Session(offset=0.5))
        widened.run(batch, 1)
        for _ in range(2):
            shifted.run(batch, 1)
    assert [record.getMessage() for record in caplog.records] == [
        "not fixing input shape (2, 3, 5, 5): its session differs from the dynamic one by - "
        "(shape (2, 5) vs (2, 4))",
        "not fixing input shape (2, 3, 5, 5): its session differs from the dynamic one by 0.5 "
        "(shape (2, 3, 5, 5) vs (2, 3, 5, 5))",
    ]
