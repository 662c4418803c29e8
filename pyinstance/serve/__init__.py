"""The HTTP identification service and its web pages (``pyinstance serve INDEX``).

Endpoints (JSON; errors are ``{"error": {"code", "message"}}`` with a 4xx status):

- ``POST /v1/identify`` (multipart ``file`` or a raw ``image/jpeg|png|webp`` body;
  ``top_k``, ``threshold``, ``classifier``): instance or null, confidence, top-k instances
  with scores and reference thumbnail URLs, milliseconds by stage, index version. Without
  a ``threshold``, the index's calibrated one; 409 ``threshold_stale`` when the collection's
  whitening switched on or off since it was calibrated (``GET /v1/info``:
  ``stale_thresholds``), until ``pyinstance calibrate`` runs again or a threshold is given.
- ``GET /v1/instances[?q=]``, ``GET /v1/instances/{id}``,
  ``GET /v1/images/{image_id}/thumbnail`` (JPEG).
- With ``Authorization: Bearer <token>`` (``$PYINSTANCE_API_TOKEN`` or ``--token-file``;
  none configured: read-only, 403): ``POST /v1/instances/{id}/images`` (photos kept in
  ``INDEX/uploads/<sha256>.<ext>``), ``DELETE /v1/instances/{id}``,
  ``DELETE /v1/images/{image_id}``, and the opt-in review queue ``/v1/review``.
- ``GET /healthz``, ``GET /v1/info``, ``GET /metrics`` (Prometheus text), ``/docs``.
- Pages: ``/`` (visitors) and ``/curator``; no external requests (CSP ``'self'``).

Every change is one atomic commit of the index; searches answer from the version pinned
when they started and see a new one as soon as it commits, without a restart.
"""

from __future__ import annotations

from pyinstance.serve.app import create_app

__all__ = ["create_app"]
