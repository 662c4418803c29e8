"""The ONNX Runtime sessions of one exported graph: per thread count, and per input shape.

A session over the graph as exported (dynamic batch, height and width) runs any shape. A
shape that recurs (a stream of phone photos resized to 448×336) gets its own session with
the dimensions fixed (ONNX Runtime's free-dimension overrides): the "same" padding of the
strided convolutions then folds into constants, ONNX Runtime fuses each ``Pad`` into its
``Conv`` and runs the whole network in its blocked NCHWc layout, without converting the
activations back and forth around every padding (about a quarter of the time of
EfficientNet-Lite0 at 448 px, ``benchmarks/engine.py``). A fixed-shape session is checked
against the dynamic one on the first batch it runs; a shape that does not match is never
fixed again, with one warning. A shape recurs whatever thread count ran it, and fixing it
for several threads fixes it for one thread too: an engine whose per-request budget drops
to one thread when the machine gets busy finds that session ready, instead of running the
dynamic graph and building a session at the worst moment. At most
:data:`MAX_FIXED_SESSIONS` fixed-shape sessions are kept; when they are all in use, a new
recurring shape runs the dynamic graph until one of them has not run for
:data:`STALE_AFTER` runs. Shapes that come back in turn (the three scales of the default
recipe for portrait and landscape photos: six) then keep their sessions, instead of each
build dropping a session needed again a few runs later and every query paying a build.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter, OrderedDict
from collections.abc import Callable
from typing import Any

import numpy as np

#: Runs of one shape before it gets its own session (building one takes a few tenths of
#: a second: a shape seen once, as in an index build of mixed sizes, is not worth it).
#: The default of :class:`SessionPool`; a runtime whose sessions take longer to build than
#: they save on a few runs asks for more.
FIX_AFTER = 2
#: Fixed-shape sessions kept, all thread counts together (each about 40 MB for
#: EfficientNet-Lite0 at 448 px): the default recipe's six shapes at two thread counts fit.
MAX_FIXED_SESSIONS = 16
#: Runs of the pool after which an unused fixed-shape session may make room for a new shape
#: (the least recently used first).
STALE_AFTER = 64
#: Distinct shapes counted before the counts start again (bounds the memory of a build).
_MAX_COUNTED = 256

Shape = tuple[int, ...]
#: Makes an inference session for ``(threads, shape)``; shape None: dynamic dimensions.
SessionFactory = Callable[[int, "Shape | None"], Any]
#: Largest allowed max |fixed − dynamic| given the dynamic session's output.
Tolerance = Callable[[np.ndarray], float]
#: Whether a fixed-shape session's output ``got`` may stand for the dynamic one's ``expected``
#: (same shape).
Agreement = Callable[[np.ndarray, np.ndarray], bool]

log = logging.getLogger(__name__)


def within(tolerance: Tolerance) -> Agreement:
    """Agreement when max |got − expected| is at most ``tolerance(expected)`` (an empty
    output always agrees)."""

    def agrees(got: np.ndarray, expected: np.ndarray) -> bool:
        difference = float(np.max(np.abs(got - expected))) if got.size else 0.0
        return difference <= tolerance(expected)

    return agrees


def run_session(session: Any, batch: np.ndarray) -> np.ndarray:
    """The first output of ``session`` on ``batch`` (its one input)."""
    return session.run(None, {session.get_inputs()[0].name: batch})[0]


class SessionPool:
    """Sessions of one graph, made on demand; :meth:`run` picks the right one.

    Args:
        make: builds a session for ``(threads, shape)``.
        agrees: whether a fixed-shape session's output on its first batch may stand for
            the dynamic one's (e.g. :func:`within` a tolerance).
        first: an existing dynamic session and its thread count (the one checked at export).
        fix_after: runs of one shape before it gets its own session.
    """

    def __init__(
        self,
        make: SessionFactory,
        agrees: Agreement,
        first: tuple[Any, int],
        fix_after: int = FIX_AFTER,
    ):
        if isinstance(fix_after, bool) or not isinstance(fix_after, int) or fix_after < 1:
            raise ValueError(f"fix_after: expected a positive int, got {fix_after!r}")
        self.fix_after = fix_after
        self._make = make
        self._agrees = agrees
        session, threads = first
        self._dynamic: dict[int, Any] = {threads: session}
        self._fixed: OrderedDict[tuple[int, Shape], Any] = OrderedDict()
        self._counts: Counter[Shape] = Counter()
        self._recurring: set[Shape] = set()
        #: Builds in flight: key -> the keys whose sessions it adds (their places reserved).
        self._building: dict[tuple[int, Shape], list[tuple[int, Shape]]] = {}
        self._refused: set[Shape] = set()
        self._last_run: dict[tuple[int, Shape], int] = {}
        self._clock = 0  # runs so far
        self._lock = threading.Lock()
        #: Batches run, per intra-op thread count.
        self.runs: Counter[int] = Counter()

    def dynamic(self, threads: int) -> Any:
        """The dynamic-shape session with ``threads`` intra-op threads."""
        with self._lock:
            session = self._dynamic.get(threads)
        if session is None:
            session = self._make(threads, None)
            with self._lock:
                session = self._dynamic.setdefault(threads, session)
        return session

    @property
    def fixed_shapes(self) -> list[tuple[int, Shape]]:
        """``(threads, shape)`` of the fixed-shape sessions held, oldest use first."""
        with self._lock:
            return list(self._fixed)

    def run(self, batch: np.ndarray, threads: int) -> np.ndarray:
        """The graph's output on ``batch`` with ``threads`` intra-op threads."""
        key = (threads, tuple(batch.shape))
        with self._lock:
            self.runs[threads] += 1
            self._clock += 1
            session = self._fixed.get(key)
            if session is not None:
                self._fixed.move_to_end(key)
                self._last_run[key] = self._clock
            else:
                keys = self._to_build(key)
        if session is not None:
            return run_session(session, batch)
        if not keys:
            return run_session(self.dynamic(threads), batch)
        return self._fix(key, batch, keys)

    def _to_build(self, key: tuple[int, Shape]) -> list[tuple[int, Shape]]:
        """Count a run of ``key`` (lock held); the keys whose sessions to build now (``key``,
        and its shape on one thread for a key of several threads unless held), places
        reserved; none when the shape is not due or they do not fit."""
        shape = key[1]
        if shape in self._refused or key in self._building:
            return []
        if shape not in self._recurring:
            if len(self._counts) >= _MAX_COUNTED and shape not in self._counts:
                self._counts.clear()
            self._counts[shape] += 1
            if self._counts[shape] < self.fix_after:
                return []
            del self._counts[shape]
            if len(self._recurring) >= _MAX_COUNTED:
                self._recurring.clear()
            self._recurring.add(shape)
        keys = [key]
        if key[0] > 1 and (1, shape) not in self._fixed:
            keys.append((1, shape))
        if not self._make_room(len(keys)):
            return []
        self._building[key] = keys
        return keys

    def _make_room(self, needed: int) -> bool:
        """Whether ``needed`` more sessions fit beside those held and reserved, dropping as
        many stale sessions as that takes, least recently used first (lock held)."""
        reserved = sum(len(keys) for keys in self._building.values())
        stale = [held for held in self._fixed if self._is_stale(held)]
        excess = len(self._fixed) + reserved + needed - MAX_FIXED_SESSIONS
        if excess > len(stale):
            return False
        for held in stale[: max(excess, 0)]:
            del self._fixed[held], self._last_run[held]
        return True

    def _is_stale(self, key: tuple[int, Shape]) -> bool:
        """Whether the session of ``key`` has not run for :data:`STALE_AFTER` runs (lock held)."""
        return self._clock - self._last_run[key] > STALE_AFTER

    def _fix(
        self, key: tuple[int, Shape], batch: np.ndarray, keys: list[tuple[int, Shape]]
    ) -> np.ndarray:
        """Build, check and keep the fixed-shape sessions of ``keys`` (``key`` first, then
        its shape on one thread, if asked); the output on ``batch`` of the session that
        answers the shape from now on (the fixed one if kept, else the dynamic one)."""
        expected = run_session(self.dynamic(key[0]), batch)
        built = {}
        answer = expected
        for wanted in keys:
            checked = self._checked(wanted, batch, expected)
            if checked is None:
                break
            built[wanted], got = checked
            if wanted == key:
                answer = got
        with self._lock:
            del self._building[key]
            if key not in built:
                self._refused.add(key[1])
            for wanted, session in built.items():
                self._fixed[wanted] = session
                self._fixed.move_to_end(wanted, last=wanted == key)
                self._last_run[wanted] = self._clock
        return answer

    def _checked(
        self, key: tuple[int, Shape], batch: np.ndarray, expected: np.ndarray
    ) -> tuple[Any, np.ndarray] | None:
        """A new session of ``key`` that agrees with ``expected`` on ``batch`` and its output
        there, else None (warned)."""
        try:
            candidate = self._make(*key)
            got = run_session(candidate, batch)
        except Exception as error:  # onnxruntime raises its own kinds; the dynamic one works
            log.warning("not fixing input shape %s: %s: %s", key[1], type(error).__name__, error)
            return None
        same_shape = got.shape == expected.shape
        if same_shape and self._agrees(got, expected):
            return candidate, got
        difference = float(np.max(np.abs(got - expected))) if same_shape and got.size else None
        log.warning(
            "not fixing input shape %s: its session differs from the dynamic one by %s "
            "(shape %s vs %s)",
            key[1],
            "-" if difference is None else f"{difference:.3g}",
            got.shape,
            expected.shape,
        )
        return None
