"""Run by `nox -s build` in a fresh venv holding only the built wheel: import and compute."""

import json

import pyinstance
from pyinstance import _backend

info = pyinstance.build_info()
print(json.dumps(info, indent=1))
assert info["cpu"]["isa_compiled"], "no CPU ISA variant compiled"
assert _backend._C.active_isa() in info["cpu"]["isa_compiled"]
print("smoke test passed")
