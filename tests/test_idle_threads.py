"""Idle worker threads sleep: the settings, and numpy's BLAS pool actually going quiet."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import pytest

import pyinstance
from pyinstance import cli, idle_threads


@pytest.fixture
def unset(monkeypatch):
    """An environment without any of the settings."""
    for name in idle_threads.SETTINGS:
        monkeypatch.delenv(name, raising=False)


def clean_environment() -> dict[str, str]:
    """This environment without the settings, importing the pyinstance this process runs."""
    environment = {k: v for k, v in os.environ.items() if k not in idle_threads.SETTINGS}
    return environment | {"PYTHONPATH": str(Path(pyinstance.__file__).resolve().parents[1])}


def test_the_settings_make_openmp_passive_and_openblas_stop_spinning():
    assert idle_threads.SETTINGS == {"OMP_WAIT_POLICY": "PASSIVE", "OPENBLAS_THREAD_TIMEOUT": "4"}


def test_sleep_idle_threads_sets_what_is_unset_and_keeps_the_users_values(unset, monkeypatch):
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    with pytest.warns(RuntimeWarning):  # numpy and torch are loaded in this process
        in_force = pyinstance.sleep_idle_threads()
    assert in_force == {"OMP_WAIT_POLICY": "ACTIVE", "OPENBLAS_THREAD_TIMEOUT": "4"}
    assert os.environ["OMP_WAIT_POLICY"] == "ACTIVE"
    assert os.environ["OPENBLAS_THREAD_TIMEOUT"] == "4"
    assert idle_threads.idle_thread_settings() == in_force


def test_idle_thread_settings_says_none_for_an_unset_variable(unset, monkeypatch):
    monkeypatch.setenv("OPENBLAS_THREAD_TIMEOUT", "28")
    assert idle_threads.idle_thread_settings() == {
        "OMP_WAIT_POLICY": None,
        "OPENBLAS_THREAD_TIMEOUT": "28",
    }


def test_the_warning_names_the_libraries_already_loaded_and_the_way_out(unset):
    with pytest.warns(RuntimeWarning) as caught:
        idle_threads.sleep_idle_threads()
    assert [str(w.message) for w in caught] == [
        "sleep_idle_threads: numpy and torch already imported; call it before importing "
        "them, or set OMP_WAIT_POLICY=PASSIVE, OPENBLAS_THREAD_TIMEOUT=4 in the environment"
    ]


def test_called_before_numpy_and_torch_it_is_silent_and_imports_neither():
    code = (
        "import sys, pyinstance; settings = pyinstance.sleep_idle_threads(); "
        "import os, json; print(json.dumps([settings, 'numpy' in sys.modules, "
        "'torch' in sys.modules]))"
    )
    done = subprocess.run(
        [sys.executable, "-P", "-W", "error", "-c", code],
        env=clean_environment(),
        capture_output=True,
        text=True,
        check=True,
    )
    settings, numpy_loaded, torch_loaded = json.loads(done.stdout)
    assert settings == idle_threads.SETTINGS
    assert not numpy_loaded and not torch_loaded


def test_the_command_sets_them_before_it_runs_silently(unset, monkeypatch, capsys):
    monkeypatch.setenv("OPENBLAS_THREAD_TIMEOUT", "10")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # numpy is loaded here, yet the command says nothing
        cli.main(["info", "--json"])
    reported = json.loads(capsys.readouterr().out)["idle_threads"]
    assert reported == {"OMP_WAIT_POLICY": "PASSIVE", "OPENBLAS_THREAD_TIMEOUT": "10"}
    assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE"


def test_info_says_when_a_library_keeps_its_spinning_default(monkeypatch, capsys):
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.setenv("OPENBLAS_THREAD_TIMEOUT", "")  # set, so kept: the library's default
    cli.main(["info"])
    assert "OPENBLAS_THREAD_TIMEOUT=(library default: spins)" in capsys.readouterr().out


#: A whitening-sized product (many rows, so OpenBLAS splits it over its threads), then a
#: pause: the CPU this process burns during the pauses is what idle workers spin.
SPIN_PROBE = textwrap.dedent(
    """
    import sys, time
    if sys.argv[1] == "sleep":
        import pyinstance
        pyinstance.sleep_idle_threads()
    import numpy as np
    x = np.ones((256, 1280), np.float32)
    projection = np.ones((1280, 1280), np.float32)
    idle_cpu = 0.0
    for _ in range(5):
        x @ projection
        start = time.process_time()
        time.sleep(0.2)
        idle_cpu += time.process_time() - start
    print(idle_cpu)
    """
)


def idle_cpu(mode: str) -> float:
    done = subprocess.run(
        [sys.executable, "-P", "-c", SPIN_PROBE, mode],
        env=clean_environment() | {"OPENBLAS_NUM_THREADS": "2"},
        capture_output=True,
        text=True,
        check=True,
    )
    return float(done.stdout)


def test_numpys_blas_workers_stop_spinning_between_products():
    spinning = idle_cpu("default")
    if spinning < 0.2:  # 1 s of pauses: a spinning worker burns about 0.5 s of it
        pytest.skip(f"numpy's BLAS workers did not spin here ({spinning:.2f} s): nothing to stop")
    assert idle_cpu("sleep") < 0.1 < spinning
