"""Descriptors of references and queries, made exactly as a :class:`Recipe` says.

This is where a recipe's backbone and head names become modules (once, through the plugin
registry); the rest of the index works with numbers only.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from pyinstance.data.images import (
    DecodedImage,
    ImageDecodeError,
    ImageLike,
    decode_image,
    image_tensor,
    normalize,
    resize,
    scaled_size,
)
from pyinstance.engine import Engine
from pyinstance.extraction import aggregate_scales, extract
from pyinstance.index.recipe import Recipe
from pyinstance.models.backbone import IMAGENET_MEAN, IMAGENET_STD
from pyinstance.models.regions import pool_windows
from pyinstance.models.trained import read_model

#: Files decoded (and extracted) together; bounds the memory of decoded images.
_CHUNK = 32


@dataclass(frozen=True)
class FileError:
    """A file that was skipped, and why."""

    path: str
    reason: str


def weights_sha256(*modules: torch.nn.Module) -> str:
    """sha256 over the names, dtypes, shapes and bytes of the modules' state dicts."""
    digest = hashlib.sha256()
    for module in modules:
        for name, tensor in module.state_dict().items():
            tensor = tensor.detach().cpu().contiguous()
            digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
            digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def decode_reference(path: str | os.PathLike[str], longest: int) -> DecodedImage:
    """A reference file decoded as queries are (JPEG draft mode for a ``longest`` side).

    Raises :class:`ImageDecodeError` (corrupt, truncated, empty, not an image, too many
    pixels: decompression bombs are refused) or ``OSError`` (missing, unreadable).
    """
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            return decode_image(path, lambda height, width: scaled_size(height, width, longest))
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
            raise ImageDecodeError(
                f"refused {str(path)!r}: decompression bomb ({error})"
            ) from error


def _modules(recipe: Recipe) -> tuple[torch.nn.Module, torch.nn.Module]:
    """The recipe's backbone and head, resolved by name through the plugin registry, with
    the trained weights of ``recipe.model`` when it names a model file."""
    from pyinstance.plugins import get_backbone, get_head

    backbone = get_backbone(recipe.backbone, **recipe.backbone_params)
    head = get_head(recipe.head, in_channels=backbone.out_channels, **recipe.head_params)
    if recipe.model is not None:
        model = read_model(recipe.model)
        made = (model.backbone, model.backbone_params, model.head, model.head_params)
        wanted = (
            recipe.backbone,
            dict(recipe.backbone_params),
            recipe.head,
            dict(recipe.head_params),
        )
        if made != wanted:
            raise ValueError(
                f"recipe.model: {recipe.model!r} holds {model.backbone}{model.backbone_params} + "
                f"{model.head}{model.head_params}, not {recipe.backbone}"
                f"{dict(recipe.backbone_params)} + {recipe.head}{dict(recipe.head_params)}"
            )
        model.load_into(backbone, head)
    return backbone, head


class Describer:
    """Builds the recipe's backbone and head and describes images with them.

    Args:
        recipe: the recipe; its names are resolved here (``pyinstance.get_backbone`` and
            ``get_head``). A pinned ``weights_sha256`` must match the built modules.
        device: where the networks run (default CPU).

    ``recipe`` (attribute) is the given recipe with ``weights_sha256`` pinned.
    """

    def __init__(self, recipe: Recipe, *, device: torch.device | str | None = None):
        if not isinstance(recipe, Recipe):
            raise TypeError(f"recipe: expected a Recipe, got {type(recipe).__name__}")
        backbone, head = _modules(recipe)
        self._setup(recipe, backbone, head, device)

    @classmethod
    def for_components(
        cls,
        backbone: str,
        head: str,
        *,
        device: torch.device | str | None = None,
        **fields: object,
    ) -> Describer:
        """A describer for ``backbone`` + ``head`` whose recipe takes ``dim`` from the head
        (``fields``: the other :class:`Recipe` fields, e.g. ``scales``, ``dtype``)."""
        probe = Recipe(backbone=backbone, head=head, dim=1, **fields)  # type: ignore[arg-type]
        modules = _modules(probe)
        describer = cls.__new__(cls)
        describer._setup(probe.with_(dim=modules[1].out_dim), *modules, device)
        return describer

    @classmethod
    def for_model(
        cls,
        model: str | os.PathLike[str],
        *,
        device: torch.device | str | None = None,
        **fields: object,
    ) -> Describer:
        """A describer of the trained model file ``model`` (made by ``pyinstance train``):
        its backbone, head and their parameters come from the file (``fields``: the other
        :class:`Recipe` fields, e.g. ``max_side``, ``query_windows``)."""
        path = os.path.abspath(os.fspath(model))
        saved = read_model(path)
        return cls.for_components(
            saved.backbone,
            saved.head,
            device=device,
            backbone_params=saved.backbone_params,
            head_params=saved.head_params,
            model=path,
            **fields,
        )

    def _setup(
        self,
        recipe: Recipe,
        backbone: torch.nn.Module,
        head: torch.nn.Module,
        device: torch.device | str | None,
    ) -> None:
        if head.out_dim != recipe.dim:
            raise ValueError(
                f"recipe.dim: {recipe.dim}, but {recipe.backbone} + {recipe.head} give "
                f"{head.out_dim}-dimensional descriptors"
            )
        sha = weights_sha256(backbone, head)
        if recipe.weights_sha256 is not None and recipe.weights_sha256 != sha:
            raise ValueError(
                f"recipe.weights_sha256: the index was made with weights {recipe.weights_sha256}, "
                f"but {recipe.backbone!r} + {recipe.head!r} now load weights {sha}"
            )
        self.backbone, self.head = backbone, head
        self.recipe = recipe.with_(weights_sha256=sha)
        self._longest = round(max(self.recipe.scales) * self.recipe.max_side)
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.backbone.to(self.device).eval()
        self.head.to(self.device).eval()
        self.engine = "torch"
        self._descriptor_engine: Engine | None = None
        self._feature_engine: Engine | None = None

    def set_engine(self, engine: str = "auto", *, threads: int | None = None) -> str:
        """Run the networks with ``engine`` (``torch``, ``onnxruntime``, ``openvino``, or
        ``auto``: the fastest installed) and return the engine's name (``torch`` after a
        fallback).

        ONNX Runtime and OpenVINO run the backbone + head exported once (cached on disk,
        checked against torch); see :func:`pyinstance.engine.make_engine`.
        """
        from pyinstance.engine import make_engine

        self._descriptor_engine = self._feature_engine = None
        self.engine = "torch"
        if engine == "torch":
            return self.engine
        descriptors = make_engine(self.backbone, self.head, engine, threads=threads)
        if descriptors.name == "torch":
            return self.engine
        if self.recipe.query_windows is not None:
            features = make_engine(self.backbone, None, engine, output="features", threads=threads)
            if features.name == "torch":
                return self.engine
            self._feature_engine = features
        self._descriptor_engine = descriptors
        self.engine = descriptors.name
        return self.engine

    def references(
        self, paths: Sequence[str | os.PathLike[str]], *, progress: bool = False
    ) -> tuple[np.ndarray, list[FileError]]:
        """Raw descriptors of the files that could be described, and the others.

        ``N × D`` float32 (the scales' mean), or ``N × S × D`` (one per scale) when the
        recipe keeps scales for similarity-matrix scoring. Post-processing is the index's
        job. Row ``i`` belongs to the ``i``-th path that is not in the errors. Undecodable,
        missing, unreadable, too small files and decompression bombs are skipped, each with
        its reason; the batch goes on.
        """
        rows: list[np.ndarray] = []
        errors: list[FileError] = []
        with tqdm(total=len(paths), disable=not progress, desc="describe", unit="img") as bar:
            for start in range(0, len(paths), _CHUNK):
                chunk = paths[start : start + _CHUNK]
                images: list[DecodedImage] = []
                decoded: list[str | os.PathLike[str]] = []  # the paths of ``images``
                for path in chunk:
                    try:
                        images.append(decode_reference(path, self._longest))
                        decoded.append(path)
                    except (ImageDecodeError, OSError, ValueError) as error:
                        errors.append(FileError(str(path), str(error)))
                if images:
                    try:
                        rows.append(self._describe(images))
                    except ValueError:  # one image too small: find it, keep the others
                        for path, image in zip(decoded, images, strict=True):
                            try:
                                rows.append(self._describe([image]))
                            except ValueError as error:
                                errors.append(FileError(str(path), str(error)))
                bar.update(len(chunk))
        empty = np.empty((0, *self._reference_shape), np.float32)
        return (np.concatenate(rows) if rows else empty), errors

    @property
    def _reference_shape(self) -> tuple[int, ...]:
        per_image = self.recipe.descriptors_per_image
        return (self.recipe.dim,) if per_image == 1 else (per_image, self.recipe.dim)

    def _describe(
        self,
        images: list[ImageLike | DecodedImage],
        scales: tuple[float, ...] | None = None,
        max_side: int | None = None,
    ) -> np.ndarray:
        """``N × D`` (scales averaged) or ``N × S × D`` (recipe keeps scales)."""
        descriptors = extract(
            images,
            self.backbone,
            self.head,
            scales=scales or self.recipe.scales,
            max_side=max_side or self.recipe.max_side,
            device=self.device,
            progress=False,
            engine=self._descriptor_engine,
        )
        if self.recipe.descriptors_per_image > 1:
            return descriptors.numpy().astype(np.float32, copy=False)
        return aggregate_scales(descriptors).numpy().astype(np.float32, copy=False)

    def queries(self, images: Sequence[ImageLike]) -> np.ndarray:
        """Raw descriptors ``Q × R × D`` float32 of query images (``R = 1`` without windows).

        With ``recipe.query_windows`` each image goes once through the backbone at
        the recipe's query side and its feature map is pooled per window. Without windows a
        query is described as references are, or at ``query_max_side`` when the recipe sets
        one; when the recipe keeps scales (similarity-matrix scoring) ``R`` is the number of
        scales (of the query side). An image that cannot be decoded is an error naming it.
        Post-processing is the index's job (:meth:`InstanceIndex.describe_queries`).
        """
        if isinstance(images, (str, os.PathLike)) or not isinstance(images, Sequence):
            raise TypeError(
                f"images: expected a sequence of images (paths, PIL images, arrays), got "
                f"{type(images).__name__}"
            )
        if not images:
            raise ValueError("images: empty; nothing to describe")
        if self.recipe.query_windows is None and self.recipe.descriptors_per_image > 1:
            return self._describe(list(images), self.recipe.scales, self.recipe.query_side)
        if self.recipe.query_windows is None:
            if self.recipe.query_max_side is None:
                return self._describe(list(images))[:, None, :]
            return self._describe(list(images), (1.0,), self.recipe.query_max_side)[:, None, :]
        out = []
        with torch.inference_mode():
            for index, item in enumerate(images):
                features, _ = self.query_features(item, f"images[{index}]")
                pooled = pool_windows(features, self.head, self.recipe.query_windows)
                out.append(pooled.float().cpu().numpy())
        return np.concatenate(out)

    def query_features(
        self, item: ImageLike | DecodedImage, name: str = "image"
    ) -> tuple[torch.Tensor, tuple[int, int]]:
        """The backbone's feature map ``1 × C × H × W`` of one query photo at the recipe's
        query side, and the photo's full ``(height, width)`` in pixels (of the file, for a
        photo decoded at reduced size)."""
        mean = getattr(self.backbone, "input_mean", IMAGENET_MEAN)
        std = getattr(self.backbone, "input_std", IMAGENET_STD)
        if isinstance(item, (str, os.PathLike)):
            name += f" ({item})"
        with torch.inference_mode():
            if isinstance(item, DecodedImage):  # sized from the file's full size
                image = image_tensor(item.image, name).to(self.device)
                full = tuple(item.full_size)
            else:
                image = image_tensor(item, name).to(self.device)
                full = tuple(image.shape[1:])
            size = scaled_size(*full, self.recipe.query_side)
            if not self.describes(*full):
                raise ValueError(
                    f"{name}: resized to {size[0]}×{size[1]}, below the backbone's minimum "
                    f"input size {self._min_input_size}"
                )
            pixels = normalize(resize(image, size)[None], mean, std)
            features = (self._feature_engine or self.backbone)(pixels)
        return features, (int(full[0]), int(full[1]))

    def describes(self, height: int, width: int) -> bool:
        """Whether :meth:`query_features` takes a ``height × width`` photo: resized to the
        query side, both sides still at least the backbone's minimum input size."""
        return min(scaled_size(height, width, self.recipe.query_side)) >= self._min_input_size

    @property
    def _min_input_size(self) -> int:
        return getattr(self.backbone, "min_input_size", 1)
