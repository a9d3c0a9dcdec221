"""Image folders: ``root/<class>/<image>.png`` or ``.jpg``, local or under an S3 prefix; the class is
the name of the folder an image sits in. Images are decoded with Pillow, refusing decompression bombs.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import numpy as np

from aiservice.infrastructure.datasets.listing import dataset_files
from aiservice.infrastructure.datasets.tables import DatasetError, Table

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")


def image_files(fs: Any, root: str, name: str) -> list[tuple[str, str]]:
    """``(relative path, path)`` of each image in ``root/<class>/``, sorted; its class is the first part."""
    if not fs.isdir(root):
        raise DatasetError(f"{name} is not a folder of class folders")
    images = [
        (relative, path)
        for relative, path in dataset_files(fs, root, name)
        if "/" in relative and relative.lower().endswith(IMAGE_EXTENSIONS)
    ]
    if not images:
        raise DatasetError(f"{name} has no images: expected {name}/<class>/<image>.png or .jpg")
    return images


def _decode(fs: Any, path: str, shown: str, use: Callable[[Any], np.ndarray]) -> np.ndarray:
    """Open one image with Pillow and hand it to ``use``, refusing decompression bombs
    (``Image.MAX_IMAGE_PIXELS``) and anything that is not a png or jpeg."""
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with fs.open(path, "rb") as handle, Image.open(handle, formats=("PNG", "JPEG")) as image:
                return use(image)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise DatasetError(f"{shown} has too many pixels to decode safely") from exc
    except (UnidentifiedImageError, SyntaxError, ValueError) as exc:
        raise DatasetError(f"{shown} is not a readable png or jpeg image") from exc
    except OSError as exc:  # truncated image data, or the file went away
        raise DatasetError(f"{shown} could not be read: {exc}") from exc


def _size(image: Any) -> np.ndarray:
    return np.asarray(image.size)  # (width, height), read from the header alone


def check_images(fs: Any, path: str, name: str, target: str | None, features: list[str] | None) -> list[str]:
    relative, first = image_files(fs, path, name)[0]
    _decode(fs, first, f"{name}/{relative}", _size)
    return []


def read_images(fs: Any, root: str, name: str, image_size: tuple[int, int] | None) -> Table:
    images = image_files(fs, root, name)
    if image_size is None:
        width, height = _decode(fs, images[0][1], f"{name}/{images[0][0]}", _size)
        image_size = (int(height), int(width))
    height, width = image_size
    X = np.empty((len(images), height, width, 3), dtype=np.float32)

    def pixels(image: Any) -> np.ndarray:
        return np.asarray(image.convert("RGB").resize((width, height)), dtype=np.float32)

    for index, (relative, path) in enumerate(images):
        X[index] = _decode(fs, path, f"{name}/{relative}", pixels)
    X *= np.float32(1 / 255)
    y = np.asarray([relative.split("/", 1)[0] for relative, _ in images], dtype=str)
    return Table(X=X, y=y, feature_names=[])
