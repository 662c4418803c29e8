"""Prometheus text-format metrics kept in memory: requests, latency, rejections."""

from __future__ import annotations

import threading
from collections import Counter

#: Upper bounds (seconds) of the latency histogram's buckets.
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class Metrics:
    """Counters and a latency histogram per endpoint, safe to update from any thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests: Counter[tuple[str, str, int]] = Counter()
        self._buckets: Counter[tuple[str, float]] = Counter()
        self._sums: Counter[str] = Counter()
        self._counts: Counter[str] = Counter()
        self._rejected: Counter[str] = Counter()
        self._answers: Counter[str] = Counter()

    def request(self, method: str, endpoint: str, status: int, seconds: float) -> None:
        """Count one answered request and its latency."""
        with self._lock:
            self._requests[method, endpoint, status] += 1
            self._sums[endpoint] += seconds
            self._counts[endpoint] += 1
            for bound in BUCKETS:
                if seconds <= bound:
                    self._buckets[endpoint, bound] += 1

    def rejected(self, code: str) -> None:
        """Count one request refused with a 4xx (``code`` of its error)."""
        with self._lock:
            self._rejected[code] += 1

    def answer(self, known: bool) -> None:
        """Count one identification: an instance, or unknown (open-set rejection)."""
        with self._lock:
            self._answers["known" if known else "unknown"] += 1

    def render(self) -> str:
        """The metrics in Prometheus' text exposition format."""
        lines = [
            "# HELP pyinstance_requests_total HTTP requests answered, by endpoint and status.",
            "# TYPE pyinstance_requests_total counter",
        ]
        with self._lock:
            for (method, endpoint, status), n in sorted(self._requests.items()):
                lines.append(
                    f'pyinstance_requests_total{{method="{method}",endpoint="{_label(endpoint)}",'
                    f'status="{status}"}} {n}'
                )
            lines += [
                "# HELP pyinstance_request_seconds Request latency by endpoint.",
                "# TYPE pyinstance_request_seconds histogram",
            ]
            for endpoint in sorted(self._counts):
                name = _label(endpoint)
                for bound in BUCKETS:
                    lines.append(
                        f'pyinstance_request_seconds_bucket{{endpoint="{name}",le="{bound}"}} '
                        f"{self._buckets[endpoint, bound]}"
                    )
                lines += [
                    f'pyinstance_request_seconds_bucket{{endpoint="{name}",le="+Inf"}} '
                    f"{self._counts[endpoint]}",
                    f'pyinstance_request_seconds_sum{{endpoint="{name}"}} {self._sums[endpoint]:.6f}',
                    f'pyinstance_request_seconds_count{{endpoint="{name}"}} {self._counts[endpoint]}',
                ]
            lines += [
                "# HELP pyinstance_rejected_requests_total Requests refused with a 4xx, by code.",
                "# TYPE pyinstance_rejected_requests_total counter",
            ]
            for code, n in sorted(self._rejected.items()):
                lines.append(f'pyinstance_rejected_requests_total{{code="{_label(code)}"}} {n}')
            lines += [
                "# HELP pyinstance_identifications_total Identifications by result "
                "(unknown: rejected by the open-set threshold).",
                "# TYPE pyinstance_identifications_total counter",
            ]
            for result in ("known", "unknown"):
                lines.append(
                    f'pyinstance_identifications_total{{result="{result}"}} {self._answers[result]}'
                )
        return "\n".join(lines) + "\n"
