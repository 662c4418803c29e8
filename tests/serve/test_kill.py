"""``kill -9`` of the service during an add leaves the index at the old or the new version,
and after a restart every committed photo is there and no uncommitted one is left."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from pathlib import Path

import httpx
import pytest

from pyinstance.index import InstanceIndex

from .conftest import TOKEN, running_server

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("delay", [0.0, 0.4, 1.2])
def test_kill_during_add(index_copy: Path, tmp_path: Path, pairs: Path, delay: float) -> None:
    photos = sorted((pairs / "query").iterdir())
    with InstanceIndex.open(index_copy) as index:
        old = (index.version(), len(index), index.instances)
    with running_server(index_copy, tmp_path) as (url, process):

        def add() -> None:
            files = [("files", (p.name, p.read_bytes(), "image/png")) for p in photos]
            with contextlib.suppress(httpx.HTTPError):  # the server dies under it
                httpx.post(
                    f"{url}/v1/instances/new-one/images",
                    files=files,
                    headers={"Authorization": f"Bearer {TOKEN}"},
                    timeout=120,
                )

        request = threading.Thread(target=add)
        request.start()
        uploads = index_copy / "uploads"
        deadline = time.monotonic() + 60
        while not (uploads.is_dir() and any(uploads.iterdir())):  # the add is under way
            assert time.monotonic() < deadline, "the add never started"
            time.sleep(0.01)
        time.sleep(delay)
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
        request.join()
    with InstanceIndex.open(index_copy) as index:
        now = (index.version(), len(index), index.instances)
        new = (old[0] + len(photos), old[1] + len(photos), tuple(sorted((*old[2], "new-one"))))
        assert now in (old, new)
        assert index.search(index.descriptors()[:1], 1).labels.shape == (1, 1)
    with running_server(index_copy, tmp_path):  # the restart removes what the crash left
        with InstanceIndex.open(index_copy) as index:
            sources = {i["source"] for i in index.images() if i["source"]}
        uploaded = {str(p) for p in uploads.iterdir() if p.name != ".lock"}
        assert {s for s in sources if s.startswith(str(uploads))} == uploaded  # no orphan
        assert all(Path(s).is_file() for s in sources)  # nothing committed was lost
        assert len(uploaded) == (len(photos) if now == new else 0)
