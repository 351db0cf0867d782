"""Turn items (text, images, multimodal rows) into chat-message content parts.

Images become ``image_url`` parts: URLs are passed through, local images (PIL
images, numpy arrays, files, bytes) are inlined as base64 data URLs. Encoding is
the costly step, so the estimators call :func:`user_content` once per item and
reuse the result in every request about it.
"""

import base64
import io
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# keys of a row (dict or DataFrame column) whose values are images
IMAGE_KEYS = frozenset({"image", "images", "image_path", "image_url", "img", "picture", "photo"})

_MAGIC = [
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
    (b"RIFF", "image/webp"),  # checked further below
    (b"BM", "image/bmp"),
]


@dataclass(frozen=True, eq=False)
class Item:
    """One item to label: a text, an image, or both.

    Unlike a bare string (always text), ``image`` is never read as text: a
    string there is a file path or an http(s)/data URL.

    Parameters
    ----------
    text : str or None, default=None
        What the model reads.
    image : str, Path, bytes, PIL image, ndarray or None, default=None
        A file path, a URL, an encoded image file's bytes, a PIL image or the
        pixels as an (height, width[, channels]) array.

    Examples
    --------
    >>> from act_sklearn.llm.content import Item, user_content
    >>> user_content(Item(text="A moving, beautifully shot film."))
    'A moving, beautifully shot film.'
    >>> item = Item(text="my pet", image="https://example.org/cat.png")
    >>> [part["type"] for part in user_content(item)]
    ['text', 'image_url']
    """

    text: str | None = None
    image: object = None

    def __post_init__(self):
        if self.text is None and self.image is None:
            raise ValueError("An Item needs a text, an image or both; got neither.")
        if self.text is not None and not isinstance(self.text, str):
            raise TypeError(
                f"Item.text must be a string or None, got {type(self.text).__name__}; pass "
                "str(value), or None for an item without text."
            )


def iter_items(X):
    """The items of ``X``: a DataFrame gives one dict per row, an image stack one array each."""
    if hasattr(X, "to_dict") and hasattr(X, "columns"):  # a DataFrame, without importing pandas
        return X.to_dict("records")
    if hasattr(X, "tolist") and not isinstance(X, np.ndarray):  # a Series
        return list(X)
    if isinstance(X, np.ndarray):
        if X.dtype.kind in "OUS":
            if X.ndim != 1:
                raise ValueError(
                    f"Got a {X.ndim}-D array of text; pass a 1-D array (one string per item) or a "
                    "DataFrame with one column per field."
                )
            return list(X)
        if X.ndim in (3, 4):
            return list(X)  # a stack of grey (n, h, w) or colour (n, h, w, c) images
        raise ValueError(
            f"Got a numeric array of shape {X.shape}; an LLM reads text or images. Pass text as "
            "strings, images as an (n, height, width[, channels]) array, or a DataFrame."
        )
    if isinstance(X, (str, bytes)) or not hasattr(X, "__len__"):
        raise ValueError(
            f"Expected a sequence of items (a list, an array, a DataFrame), got {type(X).__name__}."
        )
    return list(X)


def user_content(item):
    """The content of the user message about ``item``, built (and images encoded) once.

    A plain string for a text-only item, which text-only servers accept too;
    otherwise the list of :func:`content_parts`.
    """
    parts = content_parts(item)
    if len(parts) == 1 and parts[0]["type"] == "text":
        return parts[0]["text"]
    return parts


def content_parts(item, *, image_keys=IMAGE_KEYS):
    """Content parts for one item: an :class:`Item`, a string (text), an image, or a row of both."""
    if isinstance(item, Item):
        parts = [] if item.text is None else [text_part(item.text)]
        return parts + ([] if item.image is None else [image_part(item.image)])
    if isinstance(item, Mapping):
        texts, images = [], []
        for key, value in item.items():
            if value is None or (isinstance(value, float) and np.isnan(value)):
                continue
            if key in image_keys or _is_image(value):
                images.extend(value if isinstance(value, (list, tuple)) else [value])
            else:
                texts.append((key, value))
        parts = []
        if len(texts) == 1:
            parts.append(text_part(texts[0][1]))
        elif texts:
            parts.append(text_part("\n".join(f"{key}: {value}" for key, value in texts)))
        return parts + [image_part(image) for image in images]
    if _is_image(item):
        return [image_part(item)]
    return [text_part(item)]


def text_part(text):
    return {"type": "text", "text": str(text)}


def image_part(image):
    return {"type": "image_url", "image_url": {"url": image_url(image)}}


def image_url(image):
    """An http(s) URL or a base64 data URL for any accepted image (a string: a path or URL)."""
    if isinstance(image, str):
        if image.startswith(("http://", "https://", "data:image/")):
            return image
        image = Path(image)
    if isinstance(image, Path):
        if not image.is_file():
            raise ValueError(
                f"Image file not found: {str(image)!r}. Pass an existing path, a URL, bytes, a PIL "
                "image or a numpy array."
            )
        image = image.read_bytes()
    if isinstance(image, np.ndarray):
        image = _array_to_pil(image)
    if _is_pil(image):
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        image = buffer.getvalue()
    if isinstance(image, (bytes, bytearray, memoryview)):
        data = bytes(image)
        return f"data:{_mime_type(data)};base64,{base64.b64encode(data).decode('ascii')}"
    raise ValueError(
        f"Cannot send a {type(image).__name__} as an image; pass a path, a URL, bytes, a PIL "
        "image or a numpy array."
    )


def _is_pil(value):
    try:
        from PIL import Image
    except ImportError:
        return False
    return isinstance(value, Image.Image)


def _is_image(value):
    return (
        _is_pil(value)
        or isinstance(value, (bytes, bytearray, memoryview, Path))
        or (isinstance(value, np.ndarray) and value.dtype.kind in "uifb" and value.ndim in (2, 3))
    )


def _array_to_pil(array):
    from PIL import Image

    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if not (array.ndim == 2 or (array.ndim == 3 and array.shape[-1] in (3, 4))):
        raise ValueError(
            f"An image array must be (height, width) or (height, width, 3 or 4); got {array.shape}."
        )
    if array.dtype.kind == "f":
        if not np.all(np.isfinite(array)) or array.min() < 0 or array.max() > 1:
            raise ValueError(
                "A float image array must hold finite values in [0, 1]; scale it or pass uint8."
            )
        array = np.round(array * 255)
    elif array.dtype.kind in "iub":
        if array.min() < 0 or array.max() > 255:
            raise ValueError("An integer image array must hold values in 0..255; pass uint8.")
    return Image.fromarray(array.astype(np.uint8))


def _mime_type(data):
    for magic, mime in _MAGIC:
        if data.startswith(magic):
            if mime == "image/webp" and data[8:12] != b"WEBP":
                break
            return mime
    raise ValueError(
        "These bytes are not a PNG, JPEG, GIF, WebP or BMP image; pass an encoded image file's "
        "bytes, or the decoded pixels as a numpy array."
    )
