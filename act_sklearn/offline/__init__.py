"""Packaged stand-in models: zero-shot labels and criticism from text embeddings, offline.

They stand in for an LLM where there is no server and no key (the offline demo,
tests, first tries). They implement the LLM components' interfaces, so every
workflow step takes them in place of :class:`~act_sklearn.MLLMAnnotator` and
:class:`~act_sklearn.MLLMCriticizer`.
"""

from .zero_shot import ZeroShotAnnotator, ZeroShotCriticizer

__all__ = ["ZeroShotAnnotator", "ZeroShotCriticizer"]
