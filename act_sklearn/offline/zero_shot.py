"""Offline annotator and criticizer: zero-shot classification with packaged embedding models.

Each class is described in words (``"a newsgroup post about {}"``); an item's
class probabilities are a softmax over the cosine similarities between its
embedding and the descriptions'. They answer through the same methods as the
LLM components (``annotate``, ``labels_from_index``, ``criticize``), so every
workflow step runs with either. They are stand-ins for an MLLM: far weaker,
but real models that run with no network and no key.
"""

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, TransformerMixin
from sklearn.utils.validation import check_is_fitted

from ..annotator import Annotations
from ..criticizer import Criticism
from ..llm.content import Item
from .embeddings import load_text_encoder


class _ZeroShotModel(BaseEstimator):
    """What both zero-shot components share; each declares its own ``__init__`` (other defaults)."""

    def _store_params(self, params):
        for name, value in params.items():
            if name not in ("self", "__class__"):
                setattr(self, name, value)

    def fit(self, X=None, y=None):
        """Load the encoder and embed the class descriptions.

        Parameters
        ----------
        X : ignored
        y : array-like, default=None
            Supplies the label set when ``classes`` is None.

        Returns
        -------
        self : object
        """
        if self.classes is not None:
            classes = list(self.classes)
        elif y is not None:
            classes = sorted(set(np.asarray(y).tolist()))
        else:
            raise ValueError("Pass classes=[...] (or y) so the model knows the label set.")
        if len(classes) < 2 or len(set(classes)) != len(classes):
            raise ValueError(f"classes must hold at least two distinct labels; got {classes}.")
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0; got {self.temperature}.")
        descriptions = self.class_descriptions or {}
        self.classes_ = np.asarray(classes)
        self.prompts_ = [self.template.format(descriptions.get(c, c)) for c in classes]
        self.encoder_ = load_text_encoder(self.encoder, max_words=self.max_words)
        self.prompt_embeddings_ = self.encoder_.encode(self.prompts_)
        self.usage_ = None  # no requests, no tokens, no cost
        return self

    def _class_proba(self, X, desc):
        check_is_fitted(self)
        texts = _texts(X)
        similarity = self.encoder_.encode(texts, progress=self.progress, desc=desc) @ self.prompt_embeddings_.T
        logits = similarity.astype(np.float64) / self.temperature
        logits -= logits.max(axis=1, keepdims=True)
        proba = np.exp(logits)
        return proba / proba.sum(axis=1, keepdims=True)

    def __getstate__(self):
        # the loaded model is large (and a torch module for MiniLM): reload it after unpickling
        state = self.__dict__.copy()
        state.pop("encoder_", None)
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        if "prompt_embeddings_" in state:
            self.encoder_ = load_text_encoder(self.encoder, max_words=self.max_words)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = False
        tags.input_tags.string = True
        return tags


class ZeroShotAnnotator(ClassifierMixin, TransformerMixin, _ZeroShotModel):
    """Label texts offline by zero-shot classification with a packaged embedding model.

    Parameters
    ----------
    encoder : {"wordllama", "minilm"}, default="wordllama"
        The packaged model (see :data:`act_sklearn.offline.embeddings.TEXT_ENCODERS`).
    classes : sequence, default=None
        The label set; None takes it from ``y`` in ``fit``.
    class_descriptions : dict, default=None
        What each class is about, in words (``{"sci.space": "space and astronomy"}``);
        a class not in it is described by its name.
    template : str, default="{}"
        The class prompt, ``template.format(description)``.
    temperature : float, default=0.05
        Softmax temperature over cosine similarities: smaller is more confident.
    max_words : int, default=128
        Words of each text the model reads.
    progress : bool, default=False
        Show a progress bar on terminals.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
    prompts_ : list of str
    usage_ : None
        Offline models send no requests.
    """

    def __init__(
        self,
        encoder="wordllama",
        *,
        classes=None,
        class_descriptions=None,
        template="{}",
        temperature=0.05,
        max_words=128,
        progress=False,
    ):
        self._store_params(locals())

    def annotate(self, X):
        """Labels and class probabilities, as :meth:`MLLMAnnotator.annotate` returns them."""
        proba = self._class_proba(X, desc="annotate")
        return Annotations(proba.argmax(axis=1), proba, failures=[])

    def labels_from_index(self, label_index):
        return self.classes_[np.asarray(label_index)]

    def predict_proba(self, X):
        return self._class_proba(X, desc="annotate")

    def predict(self, X):
        proba = self.predict_proba(X)  # raises NotFittedError before classes_ is read
        return self.classes_[proba.argmax(axis=1)]

    def transform(self, X):
        return self.predict_proba(X)


class ZeroShotCriticizer(_ZeroShotModel):
    """Error probabilities from a second, independent zero-shot model: ``e = 1 - P_critic(label)``.

    Cross-model criticism: the critic classifies the item itself and doubts a
    proposed label in proportion to the probability it gives the other classes.
    Parameters as :class:`ZeroShotAnnotator`, with ``encoder="minilm"`` and
    ``max_words=48`` by default (a transformer is slower per word).
    """

    def __init__(
        self,
        encoder="minilm",
        *,
        classes=None,
        class_descriptions=None,
        template="{}",
        temperature=0.05,
        max_words=48,
        progress=False,
    ):
        self._store_params(locals())

    def criticize(self, X, labels):
        """Error probabilities, as :meth:`MLLMCriticizer.criticize` returns them."""
        labels = np.asarray(labels, dtype=object)
        proba = self._class_proba(X, desc="criticize")
        if proba.shape[0] != labels.shape[0]:
            raise ValueError(f"X has {proba.shape[0]} items but labels has {labels.shape[0]}; pass one per item.")
        column = {label: k for k, label in enumerate(self.classes_.tolist())}
        label_proba = np.array([proba[i, column[l]] if l in column else 0.0 for i, l in enumerate(labels)])
        return Criticism(np.clip(1.0 - label_proba, 0.0, 1.0), failures=[])

    def predict_error_proba(self, X, labels):
        return self.criticize(X, labels).error_proba


def _texts(X):
    # an Item without an image is a text too (the workflow passes Items)
    texts = [item.text if isinstance(item, Item) and item.image is None else item for item in X]
    for text in texts:
        if not isinstance(text, str):
            raise TypeError(
                f"Zero-shot models read text only; got a {type(text).__name__}. Use MLLMAnnotator or "
                "MLLMCriticizer for images."
            )
    return texts
