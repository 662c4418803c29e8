"""Stored thresholds and the score space they were calibrated in.

A threshold compares similarities, and whitening changes them: the default recipe whitens
only once the collection holds ``min_references`` references, and every commit that
changes the collection refits, so adding or removing references can switch whitening on
or off. ``pyinstance calibrate`` therefore stores, beside each threshold, what it was
calibrated on (setting ``<threshold>_calibrated_on``); when the index no longer searches
that way, the threshold is stale: :class:`~pyinstance.identification.Identifier` and
:class:`~pyinstance.objects.ObjectFinder` refuse it (:class:`StaleThresholdError`) and
``info()`` says why (``stale_thresholds``). A threshold stored without a record (by an
older version, or by hand) is taken as it is.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pyinstance.index.instance_index import InstanceIndex

#: Settings holding a calibrated threshold (identification's, the objects finder's) and
#: the option of ``pyinstance calibrate`` that fits each.
THRESHOLD_SETTINGS = {"threshold": "", "objects_threshold": " --objects"}


class StaleThresholdError(ValueError):
    """The index's stored threshold was calibrated in another score space (whitened or
    not) than the one its collection is searched in now."""


def record_key(setting: str) -> str:
    """The setting that records what the threshold ``setting`` was calibrated on."""
    return f"{setting}_calibrated_on"


def calibration_record(index: InstanceIndex) -> dict[str, Any]:
    """What a threshold fitted now is calibrated on: whether searches whiten (the part a
    threshold depends on) and, for messages, the number of references."""
    return {"whitened": index.whitened, "references": len(index)}


def calibrated(index: InstanceIndex, setting: str, threshold: float) -> dict[str, Any]:
    """The settings that store ``threshold`` as ``setting`` with its record (write them
    in one commit, :meth:`InstanceIndex.set_settings`)."""
    if setting not in THRESHOLD_SETTINGS:
        raise ValueError(f"setting: expected one of {tuple(THRESHOLD_SETTINGS)}, got {setting!r}")
    return {setting: threshold, record_key(setting): calibration_record(index)}


def stale_reason(index: InstanceIndex, setting: str) -> str | None:
    """Why the stored threshold ``setting`` no longer fits the index's score space, or
    None (no threshold, no record, or calibrated as the index searches now)."""
    record = index.get_setting(record_key(setting))
    if index.get_setting(setting) is None or not isinstance(record, dict):
        return None
    whitened = index.whitened
    if record.get("whitened") == whitened:
        return None
    then = "whitened" if record.get("whitened") else "unwhitened"
    now = "whitened" if whitened else "unwhitened"
    return (
        f"the index's {setting.replace('_', ' ')} was calibrated on {then} descriptors "
        f"({record.get('references')} references) but the collection ({len(index)} "
        f"references) is now searched {now}, so its similarities are on another scale; run "
        f"'pyinstance calibrate {index.path}{THRESHOLD_SETTINGS[setting]}' again"
    )


def check_fresh(index: InstanceIndex, setting: str, given: str) -> None:
    """Raise :class:`StaleThresholdError` when the stored threshold ``setting`` is stale
    (``given``: how a caller passes a threshold of its own instead, for the message)."""
    reason = stale_reason(index, setting)
    if reason is not None:
        raise StaleThresholdError(f"{setting}: {reason}, or pass {given}")
