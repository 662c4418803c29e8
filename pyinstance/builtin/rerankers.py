"""Built-in re-rankers (implementations in :mod:`pyinstance.rerank`)."""

from __future__ import annotations

from pyinstance.hookspecs import Register, hookimpl
from pyinstance.rerank.verifier import VerificationReranker


@hookimpl
def pyinstance_register_rerankers(register: Register) -> None:
    register("verification", VerificationReranker)
