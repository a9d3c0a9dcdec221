"""Images from base64 to model-ready arrays with Pillow: format checked, size bounded before decoding
(image bombs are refused from their header), resized and normalised as the model declares."""

from __future__ import annotations

import base64
import binascii
import io
import warnings
from typing import Any

import numpy as np

from aiservice.domain.errors import FieldError, InvalidInput

_FORMATS = {"jpeg": "JPEG", "png": "PNG"}


def _bad(field_name: str, message: str) -> InvalidInput:
    return InvalidInput(f"{field_name}: {message}", errors=[FieldError(field_name, message)])


class PillowImageDecoder:
    def decode(
        self, data: Any, formats: tuple[str, ...], max_pixels: int, configuration: dict[str, Any], where: str
    ) -> np.ndarray:
        """One image as a float32 array shaped ``configuration["inputShape"]`` (H, W, C by default)."""
        from PIL import Image

        if not isinstance(data, str):
            raise _bad(where, "must be a base64-encoded image string")
        try:
            raw = base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise _bad(where, "is not valid base64") from exc
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                image = Image.open(io.BytesIO(raw))
                allowed = {_FORMATS[f] for f in formats}
                if image.format not in allowed:
                    raise _bad(
                        where, f"must be {' or '.join(sorted(formats))}, not {image.format or 'unknown'}"
                    )
                width, height = image.size
                if width * height > max_pixels:
                    raise _bad(where, f"has {width}x{height} pixels, more than the {max_pixels} allowed")
                image.load()
        except InvalidInput:
            raise
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise _bad(where, "is too large to decode safely") from exc
        except Exception as exc:  # PIL.UnidentifiedImageError, truncated files, ...
            raise _bad(where, "is not a readable image") from exc
        return _shape(image, configuration)


def _shape(image: Any, configuration: dict[str, Any]) -> np.ndarray:
    shape = configuration.get("inputShape") or [image.size[1], image.size[0], 3]
    channels_first = bool(configuration.get("channelsFirst", False))
    height, width, channels = (
        (shape[1], shape[2], shape[0]) if channels_first else (shape[0], shape[1], shape[2])
    )
    mode = {1: "L", 3: "RGB", 4: "RGBA"}.get(int(channels), "RGB")
    resized = image.convert(mode).resize((int(width), int(height)))
    array: np.ndarray = np.asarray(resized, dtype=np.float32).reshape(int(height), int(width), int(channels))
    normalize = configuration.get("normalize", {"scale": 1 / 255})
    array = (array * np.float32(normalize.get("scale", 1.0))).astype(np.float32)
    if "mean" in normalize:
        array = array - np.asarray(normalize["mean"], dtype=np.float32)
    if "std" in normalize:
        array = array / np.asarray(normalize["std"], dtype=np.float32)
    return np.transpose(array, (2, 0, 1)) if channels_first else array
