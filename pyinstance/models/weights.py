"""Loading state dicts from files with errors that name what does not match."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import torch
from torch import nn

#: How many key names an error message lists before it says "... and N more".
_LISTED = 12


class WeightsMismatchError(ValueError):
    """A weights file does not fit the architecture (missing, unexpected or mis-shaped keys)."""


def _listing(keys: Iterable[str]) -> str:
    keys = sorted(keys)
    shown = ", ".join(keys[:_LISTED])
    more = f", ... and {len(keys) - _LISTED} more" if len(keys) > _LISTED else ""
    return f"{shown}{more}"


def read_state_dict(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Read a state dict saved with ``torch.save`` (plain, or under ``"state_dict"``/``"model"``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights: no such file {str(path)!r}")
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # pickle, zip and torch errors alike
        raise ValueError(
            f"weights: cannot read {str(path)!r} as a torch state dict: {error}"
        ) from error
    if isinstance(loaded, Mapping):
        for wrapper in ("state_dict", "model"):
            if isinstance(loaded.get(wrapper), Mapping):
                loaded = loaded[wrapper]
                break
    if not isinstance(loaded, Mapping) or not all(
        isinstance(key, str) and isinstance(value, torch.Tensor) for key, value in loaded.items()
    ):
        raise ValueError(f"weights: {str(path)!r} does not hold a state dict (name -> tensor)")
    return dict(loaded)


def load_weights(
    module: nn.Module,
    path: str | os.PathLike[str],
    *,
    convert: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]] | None = None,
    skip_prefixes: tuple[str, ...] = (),
) -> None:
    """Load the state dict at ``path`` into ``module``, strictly.

    ``convert`` maps the file's tensors to the module's layout (e.g. FC weights into 1×1
    convolutions). Keys starting with one of ``skip_prefixes`` are ignored on both sides
    (a classifier re-initialised for another number of classes). Raises
    :class:`WeightsMismatchError` listing missing, unexpected and mis-shaped keys.
    """
    state = read_state_dict(path)
    if convert is not None:
        state = convert(state)
    expected = {
        key: value
        for key, value in module.state_dict().items()
        if not key.startswith(skip_prefixes)
    }
    state = {key: value for key, value in state.items() if not key.startswith(skip_prefixes)}
    missing = expected.keys() - state.keys()
    unexpected = state.keys() - expected.keys()
    misshaped = [
        f"{key} (file {tuple(state[key].shape)}, model {tuple(expected[key].shape)})"
        for key in sorted(expected.keys() & state.keys())
        if state[key].shape != expected[key].shape
    ]
    if missing or unexpected or misshaped:
        parts = [f"weights: {str(path)!r} does not match {type(module).__name__}"]
        if missing:
            parts.append(f"missing keys ({len(missing)}): {_listing(missing)}")
        if unexpected:
            parts.append(f"unexpected keys ({len(unexpected)}): {_listing(unexpected)}")
        if misshaped:
            parts.append(f"shape mismatches ({len(misshaped)}): {_listing(misshaped)}")
        raise WeightsMismatchError("; ".join(parts))
    module.load_state_dict(state, strict=not skip_prefixes)


def linear_to_conv(
    state: dict[str, torch.Tensor], names: Iterable[str], kernel: Mapping[str, int] | None = None
) -> dict[str, torch.Tensor]:
    """Reshape the ``<name>.weight`` of fully connected layers into convolution kernels.

    A Linear weight ``out × (in·k·k)`` becomes ``out × in × k × k`` (``k`` from ``kernel``,
    default 1): the fully connected layer turned convolution of Long et al. Weights that
    already have 4 dimensions are left alone, so a module's own state dict loads as well.
    """
    kernel = dict(kernel or {})
    state = dict(state)
    for name in names:
        key = f"{name}.weight"
        weight = state.get(key)
        if weight is None or weight.dim() != 2:
            continue
        k = kernel.get(name, 1)
        if weight.shape[1] % (k * k):
            continue  # left mis-shaped: load_weights reports it
        state[key] = weight.reshape(weight.shape[0], weight.shape[1] // (k * k), k, k)
    return state
