"""MLLMAnnotator: labels from a fixed class set, by any OpenAI-compatible (multimodal) LLM."""

import numbers
from dataclasses import dataclass

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, TransformerMixin
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted

from ._sklearn_compat import Interval, StrOptions, _fit_context
from ._llm_estimator import (
    LLM_PARAMETER_CONSTRAINTS,
    LLMEstimatorMixin,
    LLMFailure,
    failed_mask,
)
from .llm import UsageLedger
from .llm.content import iter_items, user_content
from .llm.parsing import (
    ParseError,
    find_label_in_text,
    label_distribution,
    label_value_start,
    match_label,
    message_content,
    parse_json_answer,
    parse_percent,
)
from .llm.prompts import (
    ANNOTATOR_SYSTEM,
    DEFAULT_INSTRUCTIONS,
    annotation_schema,
    answer_format,
    format_fields,
    format_labels,
    mode_token_budget,
)


@dataclass
class Annotations:
    """Labels and class probabilities for a batch; failed items are marked, not guessed.

    ``label_index`` is -1 and ``proba`` is NaN for failed items.
    """

    label_index: np.ndarray
    proba: np.ndarray
    failures: list

    @property
    def failed(self):
        return self.label_index < 0


class MLLMAnnotator(ClassifierMixin, TransformerMixin, LLMEstimatorMixin, BaseEstimator):
    """Label items (text, images or both) with an LLM, choosing from a fixed class set.

    Parameters
    ----------
    backend : LLMBackend or None, default=None
        The endpoint; None means ``LLMBackend()`` (OpenAI, key in ``OPENAI_API_KEY``).
    classes : array-like or None, default=None
        The label set; None takes ``np.unique(y)`` in ``fit``.
    label_names : dict or None, default=None
        What the model reads for each class (``{0: "T-shirt/top", ...}``); a
        class not in it is shown as ``str(class)``.
    instructions : str or None, default=None
        The task in a sentence ("Classify the sentiment of the movie review.").
    chain_of_thought : bool, default=False
        Ask for reasoning before the label.
    max_reasoning_chars : int or None, default=None
        Bound on the reasoning's length (``maxLength`` in the schema; not every
        server enforces it).
    n_few_shot : int, default=0
        Labelled examples from ``fit(X, y)`` shown before each item.
    probability : {"auto", "logprobs", "verbalized", "sampling"}, default="auto"
        Where ``predict_proba`` comes from. ``"logprobs"``: the tokens' top
        log-probabilities renormalised over the labels (an item without them gets
        all mass on its label). ``"verbalized"``: the model's stated confidence in
        percent, the rest spread evenly. ``"sampling"``: label frequencies over
        ``n_samples`` answers at temperature 1 (self-consistency). ``"auto"``:
        logprobs, and a verbalized request for items whose response has none
        (reasoning models return no logprobs).
    n_samples : int, default=5
        Answers per item for ``probability="sampling"``.
    output_mode : {"auto", "json_schema", "json_object", "text", "grammar"}, default="auto"
        How the answer is constrained. ``"auto"`` tries JSON-schema structured
        output, then ``json_object`` with the schema, then strictly parsed text,
        moving on when the server rejects a format (HTTP 400). ``"grammar"``
        (opt-in, llama.cpp only) sends a GBNF grammar for the compact answer
        alone (:func:`~act_sklearn.llm.prompts.compact_grammar`): no whitespace
        for a weak model to pad, so fewer tokens; OpenAI refuses the field and
        vLLM ignores it.
    temperature : float, default=0.0
    max_tokens : int or None, default=None
        None means enough for the longest answer the schema allows, with room for
        a weak model's whitespace padding (:func:`~act_sklearn.llm.prompts.answer_token_budget`).
        An answer cut off anyway is asked again with 4 times as many.
    top_logprobs : int, default=10
        Alternatives per token to request (OpenAI allows up to 20, vLLM its
        ``--max-logprobs``, llama.cpp more).
    on_error : {"raise", "skip"}, default="raise"
        After the whole batch: raise :class:`LLMBatchError` listing the failed
        items, or warn and go on (``predict`` then gives -1, or None for
        non-integer classes, and ``predict_proba`` a NaN row for failed items).
    progress : bool, default=False
        Show a progress bar on terminals.
    random_state : int, RandomState or None, default=None
        Picks the few-shot examples and seeds the sampling requests. None
        means fixed choices (as 0 would for the examples; the seeds 0 to
        ``n_samples - 1``), not fresh ones: requests that change from run to
        run would never be served from the cache.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
    label_names_ : list of str
        What the model reads for each class.
    few_shot_ : list of (item, class)
        The examples shown before each item.
    usage_ : UsageLedger
        Requests, cache hits, retries, failures and tokens since ``fit``.

    Examples
    --------
    >>> from act_sklearn import LLMBackend, MLLMAnnotator
    >>> annotator = MLLMAnnotator(
    ...     LLMBackend(model="my-model", base_url="http://127.0.0.1:8080/v1"),
    ...     classes=["negative", "positive"],
    ...     instructions="Classify the sentiment of the movie review.",
    ... )
    >>> annotator.fit().classes_.tolist()
    ['negative', 'positive']
    """

    _parameter_constraints = {
        **LLM_PARAMETER_CONSTRAINTS,
        "chain_of_thought": ["boolean"],
        "n_few_shot": [Interval(numbers.Integral, 0, None, closed="left")],
        "probability": [StrOptions({"auto", "logprobs", "verbalized", "sampling"})],
        "n_samples": [Interval(numbers.Integral, 1, None, closed="left")],
        "random_state": ["random_state"],
    }

    def __init__(
        self,
        backend=None,
        *,
        classes=None,
        label_names=None,
        instructions=None,
        chain_of_thought=False,
        max_reasoning_chars=None,
        n_few_shot=0,
        probability="auto",
        n_samples=5,
        output_mode="auto",
        temperature=0.0,
        max_tokens=None,
        top_logprobs=10,
        on_error="raise",
        progress=False,
        random_state=None,
    ):
        self.backend = backend
        self.classes = classes
        self.label_names = label_names
        self.instructions = instructions
        self.chain_of_thought = chain_of_thought
        self.max_reasoning_chars = max_reasoning_chars
        self.n_few_shot = n_few_shot
        self.probability = probability
        self.n_samples = n_samples
        self.output_mode = output_mode
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.top_logprobs = top_logprobs
        self.on_error = on_error
        self.progress = progress
        self.random_state = random_state

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X=None, y=None):
        """Record the label set and pick few-shot examples. No LLM call.

        Parameters
        ----------
        X : sequence of items or None
            Items for few-shot examples (with ``n_few_shot > 0``).
        y : array-like of shape (n_samples,) or None
            Their labels; also the label set when ``classes`` is None.

        Returns
        -------
        self : object
        """
        self._resolved_backend()
        if self.classes is not None:
            self.classes_ = np.asarray(self.classes)
        elif y is not None:
            self.classes_ = np.unique(np.asarray(y))
        else:
            raise ValueError("MLLMAnnotator needs its label set: pass classes=[...] or fit(X, y).")
        if self.classes_.ndim != 1 or self.classes_.size < 2:
            raise ValueError(f"classes must list at least two labels, got {self.classes_.tolist()}.")
        names = self.label_names or {}
        self.label_names_ = [str(names.get(c, c)) for c in self.classes_.tolist()]
        if len(set(self.label_names_)) != len(self.label_names_):
            raise ValueError(f"Two classes share a name: {self.label_names_}; make names unique.")
        self.few_shot_ = self._pick_few_shot(X, y)
        self.usage_ = UsageLedger()
        return self

    def _pick_few_shot(self, X, y):
        if self.n_few_shot == 0:
            return []
        if X is None or y is None:
            raise ValueError("n_few_shot > 0 needs labelled examples: call fit(X, y).")
        items, y = iter_items(X), np.asarray(y)
        if len(items) != y.shape[0]:
            raise ValueError(f"X has {len(items)} items but y has {y.shape[0]} labels.")
        unknown = ~np.isin(y, self.classes_)
        if unknown.any():
            raise ValueError(
                f"y holds labels outside classes {self.classes_.tolist()}: "
                f"{np.unique(y[unknown]).tolist()[:5]}."
            )
        rng = check_random_state(0 if self.random_state is None else self.random_state)  # see random_state
        chosen = rng.permutation(len(items))[: self.n_few_shot]
        return [(items[i], y[i].item() if hasattr(y[i], "item") else y[i]) for i in chosen]

    # -- requests ------------------------------------------------------------

    def _conversations(self, items):
        """The messages after the system prompt, per item: the few-shot turns, then the item.

        Built once per call and shared by every request about an item (output
        modes, the verbalized round, samples), so each image is encoded once.
        """
        names = dict(zip(self.classes_.tolist(), self.label_names_))
        examples = []
        for example, label in self.few_shot_:
            examples.append({"role": "user", "content": user_content(example)})
            examples.append({"role": "assistant", "content": f'{{"label": "{names[label]}"}}'})
        return [[*examples, {"role": "user", "content": user_content(item)}] for item in items]

    def _request_chains(self, conversations, modes, *, verbalized=False, seeds=(None,)):
        """One chain of request bodies per conversation and seed (conversation-major).

        What every item's request shares (the system prompt, the schema, the
        token budget) is built once per call, not once per item.
        """
        schema = annotation_schema(
            self.label_names_,
            reasoning=self.chain_of_thought,
            confidence=verbalized,
            max_reasoning_chars=self.max_reasoning_chars,
        )
        shared = []  # per mode: (system message, fields without a seed, fields with one)
        for mode in modes:
            system = ANNOTATOR_SYSTEM.format(
                instructions=self.instructions or DEFAULT_INSTRUCTIONS,
                labels=format_labels(self.label_names_),
                answer_format=answer_format(mode, schema),
            )
            fields = {"max_tokens": self.max_tokens or mode_token_budget(mode, schema),
                      **format_fields(mode, "annotation", schema)}
            unseeded = {**fields, "temperature": self.temperature}
            if self.probability in ("auto", "logprobs") and not verbalized:
                unseeded["logprobs"], unseeded["top_logprobs"] = True, self.top_logprobs
            shared.append(({"role": "system", "content": system}, unseeded, {**fields, "temperature": 1.0}))
        chains = []
        for conversation in conversations:
            for seed in seeds:
                chains.append([
                    {"messages": [system, *conversation], **unseeded} if seed is None
                    else {"messages": [system, *conversation], **seeded, "seed": int(seed)}
                    for system, unseeded, seeded in shared
                ])
        return chains

    # -- answers ---------------------------------------------------------------

    def _read_answer(self, outcome, want, modes):
        """(label index, class probabilities or None) from one response, or ParseError.

        ``want`` is "logprobs", "verbalized" or "label"; ``modes`` the output modes
        of the request's chain.
        """
        if not outcome.ok:
            raise ParseError(outcome.error)
        mode = modes[outcome.alternative]
        content = message_content(outcome.response)
        finish = outcome.response["choices"][0].get("finish_reason")
        try:
            # a cut-off answer whose fields are complete is an answer
            answer = parse_json_answer(content, finish, required=["label", "confidence"] if want == "verbalized" else ["label"])
        except ParseError:
            if mode != "text":
                raise
            answer = {"label": self.label_names_[find_label_in_text(content, self.label_names_)]}
        if "label" not in answer:
            raise ParseError(f"the answer has no 'label' field: {content[:200]!r}")
        index = match_label(answer["label"], self.label_names_)
        if want == "verbalized":
            confidence = parse_percent(answer.get("confidence", ""))
            proba = np.full(len(self.label_names_), (1 - confidence) / (len(self.label_names_) - 1))
            proba[index] = confidence
            return index, proba
        if want == "logprobs":
            start = label_value_start(content, self.label_names_[index])
            proba = None
            if start is not None:
                proba = label_distribution(outcome.response, content, start, self.label_names_, index)
            return index, proba
        return index, None

    def annotate(self, X):
        """Labels and probabilities for every item, with failures recorded per item.

        Parameters
        ----------
        X : sequence of items
            :class:`~act_sklearn.llm.content.Item` (text, image or both; a string
            image is a path or URL), strings (text), images (PIL images, arrays,
            ``Path``, bytes), dicts with text and image fields, or a DataFrame
            (one row per item).

        Returns
        -------
        annotations : Annotations
        """
        check_is_fitted(self)
        items = iter_items(X)
        n_items, n_classes = len(items), len(self.label_names_)
        label_index = np.full(n_items, -1)
        proba = np.full((n_items, n_classes), np.nan)
        reasons = {}
        if self.probability == "sampling":
            self._annotate_by_sampling(items, label_index, proba, reasons)
        else:
            conversations = self._conversations(items)
            want = "verbalized" if self.probability == "verbalized" else "logprobs"
            outcomes, modes = self._first_round(conversations, want)
            missing = self._fill(outcomes, want, modes, label_index, proba, reasons)
            if missing and self.probability == "auto":
                # start from the output mode the server accepted in the first round
                modes = modes[max((o.alternative for o in outcomes if o.ok), default=0) :]
                requests = self._request_chains([conversations[i] for i in missing], modes, verbalized=True)
                outcomes = self._send(
                    requests,
                    "Annotating (verbalized confidence)",
                    # the round is for the confidence: an answer with the label but none keeps its label
                    read=lambda o: self._read_answer(o, "label", modes),
                )
                # a failed fallback keeps the first answer's label (with all mass on it)
                self._fill(outcomes, "verbalized", modes, label_index, proba, {}, positions=missing)
            for i in missing:  # logprobs were asked for and not given: all mass on the label
                if np.isnan(proba[i]).any() and label_index[i] >= 0:
                    proba[i] = np.eye(n_classes)[label_index[i]]
        failures = [LLMFailure(i, reasons[i]) for i in sorted(reasons)]
        label_index[failed_mask(failures, n_items)] = -1
        proba[label_index < 0] = np.nan
        return Annotations(label_index, proba, failures)

    def _first_round(self, conversations, want):
        """(outcomes, modes) of every item's first request: with logprobs, or for a verbalized confidence."""
        modes = self._modes()
        requests = self._request_chains(conversations, modes, verbalized=want == "verbalized")
        outcomes = self._send(requests, "Annotating", read=lambda o: self._read_answer(o, want, modes))
        return outcomes, modes

    def answer_outcomes(self, X):
        """The response to every item's first request (the one ``predict`` and ``predict_proba`` start from).

        For criticizers that read the annotator's own answers (``MLLMCriticizer``
        strategy ``"perplexity"``): the requests are the same as
        :meth:`annotate`'s, so after it they are served from the cache.

        Returns
        -------
        outcomes : list of Outcome
            ``outcome.response`` is the response dict (None for a failed item,
            with ``outcome.error`` saying why).
        read_label : callable
            ``read_label(outcome)`` is the index of the answered class (in
            ``classes_``), or raises ``ParseError``.
        """
        check_is_fitted(self)
        if self.probability not in ("auto", "logprobs"):
            raise ValueError(
                f"the annotator's probability={self.probability!r} asks for no token logprobs: its answers "
                "cannot be read for them (use probability='auto' or 'logprobs')."
            )
        outcomes, modes = self._first_round(self._conversations(iter_items(X)), "logprobs")
        return outcomes, lambda outcome: self._read_answer(outcome, "label", modes)[0]

    def sample_labels(self, X):
        """Class indices of ``n_samples`` answers per item at temperature 1 (self-consistency).

        The samples are seeded (see ``random_state``), so asking again is served
        from the cache.

        Returns
        -------
        label_index : ndarray of shape (n_items, n_samples)
            -1 for an answer with no usable label.
        reasons : dict
            Item position -> why its first failed answer failed.
        """
        check_is_fitted(self)
        conversations = self._conversations(iter_items(X))
        seeds = self._sample_seeds()
        modes = self._modes()
        requests = self._request_chains(conversations, modes, seeds=seeds)
        outcomes = self._send(requests, "Annotating (sampling)", read=lambda o: self._read_answer(o, "label", modes))
        label_index = np.full((len(conversations), len(seeds)), -1)
        reasons = {}
        for position, outcome in enumerate(outcomes):
            item, sample = divmod(position, len(seeds))
            try:
                label_index[item, sample] = self._read_answer(outcome, "label", modes)[0]
            except ParseError as exc:
                reasons.setdefault(item, str(exc))
        return label_index, reasons

    def _sample_seeds(self):
        if self.random_state is None:
            # fixed seeds, not fresh ones: a rerun must find its answers in the cache
            return np.arange(self.n_samples)
        return check_random_state(self.random_state).randint(0, 2**31 - 1, size=self.n_samples)

    def _fill(self, outcomes, want, modes, label_index, proba, reasons, positions=None):
        """Write answers in place; return the positions still lacking probabilities."""
        positions = range(len(outcomes)) if positions is None else positions
        missing = []
        for i, outcome in zip(positions, outcomes):
            try:
                index, item_proba = self._read_answer(outcome, want, modes)
            except ParseError as exc:
                reasons[i] = str(exc)
                continue
            reasons.pop(i, None)
            label_index[i] = index
            if item_proba is None:
                missing.append(i)
            else:
                proba[i] = item_proba
        return missing

    def _annotate_by_sampling(self, items, label_index, proba, reasons):
        samples, sample_reasons = self.sample_labels(items)
        n_classes = len(self.label_names_)
        for i, answered in enumerate(samples):
            votes = np.bincount(answered[answered >= 0], minlength=n_classes)
            if votes.sum() == 0:
                reasons[i] = f"no usable answer in {self.n_samples} samples: {sample_reasons[i]}"
                continue
            label_index[i] = int(np.argmax(votes))
            proba[i] = votes / votes.sum()

    # -- scikit-learn API ----------------------------------------------------------

    def predict_proba(self, X):
        """Class probabilities, shape (n_samples, n_classes); NaN rows for failed items."""
        annotations = self.annotate(X)
        self._apply_failure_policy("annotations", annotations.failures, len(annotations.proba))
        return annotations.proba

    def predict(self, X):
        """The model's label for each item (-1 or None for failed items, with on_error='skip')."""
        annotations = self.annotate(X)
        self._apply_failure_policy("annotations", annotations.failures, len(annotations.proba))
        return self.labels_from_index(annotations.label_index)

    def transform(self, X):
        """``predict_proba(X)``: LLM class probabilities as features."""
        return self.predict_proba(X)

    def fit_transform(self, X, y=None, **fit_params):
        return self.fit(X, y, **fit_params).transform(X)

    def labels_from_index(self, label_index):
        """Classes for label indices; -1 (a failed item) becomes -1 or None."""
        label_index = np.asarray(label_index)
        if (label_index >= 0).all():
            return self.classes_[label_index]
        integer = self.classes_.dtype.kind in "iu"
        labels = np.empty(label_index.shape, dtype=self.classes_.dtype if integer else object)
        ok = label_index >= 0
        labels[ok] = self.classes_[label_index[ok]]
        labels[~ok] = -1 if integer else None
        return labels

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = False
        tags.input_tags.string = True
        tags.requires_fit = True
        tags.non_deterministic = True
        return tags
