"""Items (text, image or both) reach requests as the right parts, each image encoded once."""

import base64
import json
from collections import Counter
from pathlib import Path

import httpx2
import numpy as np
import pytest
from fake_llm import FakeLLM, completion
from PIL import Image

from act_sklearn import MLLMAnnotator, MLLMCriticizer
from act_sklearn.llm import content
from act_sklearn.llm.content import Item, content_parts, iter_items, user_content

LABELS = ["T-shirt/top", "Trouser", "Sneaker"]


def _write_image(path, seed):
    """A Fashion-MNIST-like 28x28 grey image, saved as PNG or JPEG (by the suffix)."""
    pixels = np.random.default_rng(seed).integers(0, 256, size=(28, 28), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


@pytest.fixture
def images(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    names = ["shirt.png", "trouser.jpg", "sneaker.png", "example_a.jpeg", "example_b.png"]
    return {name: _write_image(folder / name, seed) for seed, name in enumerate(names)}


def _items(images):
    return [
        Item(image=str(images["shirt.png"])),  # image only, the path as a plain string
        Item(image=str(images["trouser.jpg"])),
        Item(text="white sole", image=images["sneaker.png"]),  # text and image, a Path
        Item(text="a pair of jeans"),  # text only
    ]


def _mode(body):
    return (body.get("response_format") or {}).get("type", "text")


def _schema(body):
    fmt = body.get("response_format") or {}
    return fmt.get("schema") or (fmt.get("json_schema") or {}).get("schema") or {}


def picky_server(answer):
    """A server that rejects JSON-schema output (HTTP 400), fails every body once (503),
    then answers ``answer(body)`` without logprobs."""
    seen = set()

    def respond(body, n):
        if _mode(body) == "json_schema":
            message = "response_format json_schema is not supported"
            return httpx2.Response(400, json={"error": {"message": message}})
        key = json.dumps(body, sort_keys=True)
        if key not in seen:
            seen.add(key)
            busy = {"error": {"message": "busy"}}
            return httpx2.Response(503, headers={"retry-after": "0"}, json=busy)
        return completion(json.dumps(answer(body)))

    return FakeLLM(respond)


def annotation(body):
    fields = {"label": LABELS[0]}
    if "confidence" in _schema(body).get("properties", {}):
        fields["confidence"] = 70
    return fields


def criticism(body):
    return {"reasoning": "looks right", "error_probability": 20}


@pytest.fixture
def encodings(monkeypatch):
    """Counts image encodings, by the image passed (a path as a string)."""
    counts = Counter()
    encode = content.image_url

    def counting(image):
        counts[str(image)] += 1
        return encode(image)

    monkeypatch.setattr(content, "image_url", counting)
    return counts


def _parts(message):
    value = message["content"]
    return [{"type": "text", "text": value}] if isinstance(value, str) else value


def _decoded(part):
    assert part["type"] == "image_url"
    header, data = part["image_url"]["url"].split(",", 1)
    return header, base64.b64decode(data)


def _check_bodies(requests, images, tmp_path):
    """Every request about an image carries its file's bytes as a data URL, never its path."""
    mime = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg"}
    by_bytes = {path.read_bytes(): path for path in images.values()}
    seen = set()
    for body in requests:
        sent = json.dumps(body)
        assert str(tmp_path) not in sent
        assert not any(name in sent for name in images)
        for message in body["messages"][1:]:
            if message["role"] != "user":
                continue
            parts = _parts(message)
            texts = [p["text"] for p in parts if p["type"] == "text"]
            pictures = [p for p in parts if p["type"] == "image_url"]
            assert len(parts) == len(texts) + len(pictures) and len(pictures) <= 1
            if not pictures:
                assert texts == ["a pair of jeans"] and isinstance(message["content"], str)
                continue
            header, data = _decoded(pictures[0])
            path = by_bytes[data]  # exactly the file's bytes, not a re-encoding
            assert header == f"data:{mime[path.suffix]};base64"
            assert texts == (["white sole"] if path.name == "sneaker.png" else [])
            if texts:
                assert parts[0]["type"] == "text"  # the text before the image
            seen.add(path.name)
    return seen


@pytest.mark.parametrize("probability", ["auto", "sampling"])
def test_annotate_encodes_each_image_once_across_modes_rounds_and_retries(
    tmp_path, images, encodings, probability
):
    fake = picky_server(annotation)
    annotator = MLLMAnnotator(
        fake.backend(tmp_path), classes=LABELS, n_few_shot=2, probability=probability,
        n_samples=3, random_state=0,
    )
    examples = [Item(image=str(images["example_a.jpeg"])), Item(image=str(images["example_b.png"]))]
    annotator.fit(examples, LABELS[:2])
    assert not encodings  # fit stores the examples; nothing is encoded before a request
    annotations = annotator.annotate(_items(images))
    assert not annotations.failures
    image_paths = {str(path) for path in images.values()}
    assert encodings == Counter(dict.fromkeys(image_paths, 1))

    modes = [_mode(body) for body in fake.requests]
    sent = [body for body, mode in zip(fake.requests, modes) if mode != "json_schema"]
    assert "json_schema" in modes and "json_object" in modes  # an alternative was tried
    assert annotator.usage_.retries > 0  # every body was sent twice
    if probability == "auto":  # no logprobs in the answers: a verbalized round ran
        assert any("confidence" in _schema(b)["properties"] for b in sent)
        np.testing.assert_allclose(annotations.proba[:, 0], 0.7)
    else:
        assert len({b["seed"] for b in sent}) == 3
    assert _check_bodies(fake.requests, images, tmp_path) == set(images)

    annotator.annotate(_items(images))  # answers come from the cache; the encoding is per call
    assert encodings == Counter(dict.fromkeys(image_paths, 2))


def test_criticize_encodes_each_image_once_across_modes_and_retries(tmp_path, images, encodings):
    fake = picky_server(criticism)
    backend = fake.backend(tmp_path)
    critic = MLLMCriticizer(backend, classes=LABELS, instructions="Name the garment.").fit()
    items = _items(images)
    error_proba = critic.predict_error_proba(items, [LABELS[0]] * len(items))
    np.testing.assert_allclose(error_proba, 0.2)
    item_paths = [str(item.image) for item in items if item.image is not None]
    assert encodings == Counter(dict.fromkeys(item_paths, 1))
    assert {_mode(body) for body in fake.requests} == {"json_schema", "json_object"}
    assert critic.usage_.retries > 0
    assert all("Name the garment." in b["messages"][0]["content"] for b in fake.requests)
    seen = _check_bodies(fake.requests, images, tmp_path)
    assert seen == {"shirt.png", "trouser.jpg", "sneaker.png"}


def test_item_parts(images):
    path = images["trouser.jpg"]
    (part,) = content_parts(Item(image=str(path)))
    assert _decoded(part) == ("data:image/jpeg;base64", path.read_bytes())
    text, picture = user_content(Item(text="jeans", image=Path(path)))
    assert text == {"type": "text", "text": "jeans"} and picture == part
    assert user_content(Item(text="jeans")) == "jeans"
    url = "https://example.org/shirt.png"
    assert user_content(Item(image=url)) == [{"type": "image_url", "image_url": {"url": url}}]
    pixels = np.zeros((28, 28), dtype=np.uint8)
    assert _decoded(user_content(Item(image=pixels))[0])[0] == "data:image/png;base64"
    # a bare string stays text, as before: only an Item's image is read as a path
    assert user_content(str(path)) == str(path)
    assert iter_items(np.array([Item(text="a"), Item(text="b")], dtype=object))[1].text == "b"


def test_item_errors(tmp_path):
    with pytest.raises(ValueError, match="needs a text, an image or both"):
        Item()
    with pytest.raises(TypeError, match="must be a string or None"):
        Item(text=float("nan"))
    with pytest.raises(ValueError, match="Image file not found"):
        user_content(Item(image=str(tmp_path / "missing.png")))
