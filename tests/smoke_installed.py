"""Run by `nox -s build` in a fresh venv holding only the built wheel: import and compute."""

import json

import numpy as np

import pyinstance
from pyinstance import _backend
from pyinstance.ops import knn_dot

info = pyinstance.build_info()
print(json.dumps(info, indent=1))
assert info["cpu"]["isa_compiled"], "no CPU ISA variant compiled"
assert _backend._C.active_isa() in info["cpu"]["isa_compiled"]

refs = np.eye(4, 8, dtype=np.float32)
scores, indices = knn_dot(refs[[2, 0]], refs, 2)
assert indices[:, 0].tolist() == [2, 0] and scores[:, 0].tolist() == [1.0, 1.0], (scores, indices)
print("smoke test passed: compiled knn_dot ran on", _backend._C.active_isa())
