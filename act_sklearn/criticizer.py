"""Criticizers: estimate, for each (item, machine label) pair, the probability the label is wrong.

A criticizer is any object with ``predict_error_proba(X, labels)`` returning an
array of probabilities in [0, 1], one per item. :class:`ClassifierCriticizer`
builds one from a second, already trained probabilistic classifier (cross-
criticism with a model other than the annotator); :class:`MLLMCriticizer` asks an
LLM; :class:`CriticizerEnsemble` averages several.
"""

import copy
import json
import numbers
import re
from dataclasses import dataclass

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_is_fitted

from ._sklearn_compat import HasMethods, Interval, StrOptions, _fit_context
from .annotator import MLLMAnnotator
from ._llm_estimator import (
    LLM_PARAMETER_CONSTRAINTS,
    LLMEstimatorMixin,
    LLMFailure,
    fitted_component,
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
    repeats_prompt,
    value_logprobs,
    value_span,
)
from .llm.prompts import (
    ANNOTATOR_STRATEGIES,
    CRITIC_STRATEGIES,
    CRITIC_STRATEGY_TEXT,
    CRITIC_SYSTEM,
    DEFAULT_INSTRUCTIONS,
    MC_GRADES,
    answer_format,
    criticism_schema,
    format_fields,
    format_labels,
    mode_token_budget,
)


class ClassifierCriticizer(BaseEstimator):
    """Error probabilities from a trained classifier: ``e_i = 1 - P(label_i | x_i)``.

    Parameters
    ----------
    estimator : fitted classifier with ``predict_proba``
        Used as it is, never refit. Wrap it in
        :class:`sklearn.frozen.FrozenEstimator` so that ``clone`` (and so
        ``GridSearchCV``) keeps it fitted.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        The labels the estimator knows. A proposed label outside them gets error
        probability 1.

    Examples
    --------
    >>> from sklearn.datasets import load_iris
    >>> from sklearn.frozen import FrozenEstimator
    >>> from sklearn.linear_model import LogisticRegression
    >>> from act_sklearn import ClassifierCriticizer
    >>> X, y = load_iris(return_X_y=True)
    >>> critic = ClassifierCriticizer(FrozenEstimator(LogisticRegression(max_iter=1000).fit(X, y)))
    >>> critic.fit(X).predict_error_proba(X[:2], [0, 2]).round(2)
    array([0.02, 1.  ])
    """

    _parameter_constraints = {"estimator": [HasMethods(["predict_proba"])]}

    def __init__(self, estimator):
        self.estimator = estimator

    @_fit_context(prefer_skip_nested_validation=False)
    def fit(self, X=None, y=None):
        """Check that the estimator is fitted and record its classes.

        Parameters
        ----------
        X, y : ignored

        Returns
        -------
        self : object
        """
        check_is_fitted(self.estimator)
        self.classes_ = np.asarray(self.estimator.classes_)
        return self

    def predict_error_proba(self, X, labels):
        """Probability that each proposed label is wrong.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        labels : array-like of shape (n_samples,)
            Proposed (machine) labels.

        Returns
        -------
        error_proba : ndarray of shape (n_samples,)
        """
        check_is_fitted(self)
        labels = np.asarray(labels)
        proba = self.estimator.predict_proba(X)
        if proba.shape[0] != labels.shape[0]:
            raise ValueError(
                f"X has {proba.shape[0]} items but labels has {labels.shape[0]}; pass one "
                "proposed label per item."
            )
        column = np.searchsorted(self.classes_, labels)
        column = np.minimum(column, self.classes_.size - 1)
        known = self.classes_[column] == labels
        label_proba = np.where(known, proba[np.arange(labels.size), column], 0.0)
        return np.clip(1.0 - label_proba, 0.0, 1.0)


class MLLMCriticizer(LLMEstimatorMixin, BaseEstimator):
    """Error probabilities for (item, proposed label) pairs, from an LLM.

    Self- and cross-criticism are configuration: give the criticizer the
    annotator's backend, or another model's (cross-criticism is usually better).

    Parameters
    ----------
    backend : LLMBackend or None, default=None
        None means ``LLMBackend()``.
    strategy : {"naive", "cot", "devil", "logprob", "mc", "perplexity", "consistency"}, default="cot"
        The critic is asked about the label in the first five:

        - ``"naive"``: the model states the probability (in percent) that the
          label is wrong;
        - ``"cot"``: it reasons first;
        - ``"devil"``: it argues that the label is wrong, then weighs the argument;
        - ``"logprob"``: it answers "is the label wrong?" yes or no, and the
          probability is P(yes) from the token log-probabilities renormalised
          over yes/no (a response without logprobs gives 1 or 0);
        - ``"mc"``: it grades the label on five options, from "almost certainly
          right" to "almost certainly wrong", mapped to the middles of their
          ranges (:data:`~act_sklearn.llm.prompts.MC_GRADES`: 0.05, 0.25, 0.5,
          0.75, 0.95).

        The last two repeat the annotator's own requests (see ``annotator``):

        - ``"perplexity"``: white-box, from the token logprobs of the
          annotator's answer, no request of its own (the annotation's requests
          are served from the cache): ``1 - exp(mean logprob)`` of the tokens
          that write the answer's values (the label, and the reasoning of a
          chain-of-thought annotator), that is ``1 - 1/perplexity``. A label
          other than the one the annotator answered gets ``1 - P(label)`` from
          the answer's top logprobs. Needs a server that returns logprobs.
        - ``"consistency"``: ``n_samples`` answers of the annotator at
          temperature 1 (seeded, so cached); the error probability is the
          share of usable answers that disagree with the label (Cleanlab TLM's
          "observed consistency").
    classes : array-like or None, default=None
        The label set, shown to the model as the alternatives.
    label_names : dict or None, default=None
        What the model reads for each class.
    instructions : str or None, default=None
        The annotation task in a sentence.
    max_reasoning_chars : int or None, default=None
        Bound on the reasoning's length for "cot" and "devil".
    output_mode : {"auto", "json_schema", "json_object", "text", "grammar"}, default="auto"
        As for :class:`MLLMAnnotator`.
    temperature : float, default=0.0
    max_tokens : int or None, default=None
        None means enough for the longest answer the schema allows, with room for
        a weak model's whitespace padding (:func:`~act_sklearn.llm.prompts.answer_token_budget`).
        An answer cut off anyway is asked again with 4 times as many.
    top_logprobs : int, default=10
    on_error : {"raise", "skip"}, default="raise"
        Raise :class:`LLMBatchError` after the batch, or warn and return NaN for
        the failed items.
    progress : bool, default=False
    annotator : MLLMAnnotator or None, default=None
        The annotator whose requests ``"perplexity"`` and ``"consistency"``
        repeat. None means one built from this criticizer's backend and
        settings (classes, label names, instructions, output mode, temperature,
        max tokens, top logprobs): the annotator's requests exactly when those
        are the annotator's. :class:`ACTClassifier` fills it in with its own
        annotator when the criticizer's backend is None or the annotator's;
        another backend makes it a cross-criticism (another model's
        perplexity or consistency). Unused by the other strategies.
    n_samples : int, default=5
        Answers per item for ``"consistency"``.
    random_state : int, RandomState or None, default=None
        Seeds the ``"consistency"`` samples; None means the seeds 0 to
        ``n_samples - 1`` (as for :class:`MLLMAnnotator`), so that a rerun is
        served from the cache.

    Attributes
    ----------
    classes_ : ndarray or None
        The label set shown to the model.
    usage_ : UsageLedger
        Requests, cache hits, retries, failures and tokens since ``fit``.

    Examples
    --------
    >>> from act_sklearn import LLMBackend, MLLMCriticizer
    >>> critic = MLLMCriticizer(LLMBackend(model="critic", base_url="http://127.0.0.1:8080/v1"),
    ...                         strategy="naive", classes=["negative", "positive"])
    >>> critic.fit().classes_.tolist()
    ['negative', 'positive']
    """

    _parameter_constraints = {
        **LLM_PARAMETER_CONSTRAINTS,
        "strategy": [StrOptions(set(CRITIC_STRATEGIES))],
        "annotator": [HasMethods(["answer_outcomes", "sample_labels"]), None],
        "n_samples": [Interval(numbers.Integral, 1, None, closed="left")],
        "random_state": ["random_state"],
    }

    def __init__(
        self,
        backend=None,
        *,
        strategy="cot",
        classes=None,
        label_names=None,
        instructions=None,
        max_reasoning_chars=None,
        output_mode="auto",
        temperature=0.0,
        max_tokens=None,
        top_logprobs=10,
        on_error="raise",
        progress=False,
        annotator=None,
        n_samples=5,
        random_state=None,
    ):
        self.backend = backend
        self.strategy = strategy
        self.classes = classes
        self.label_names = label_names
        self.instructions = instructions
        self.max_reasoning_chars = max_reasoning_chars
        self.output_mode = output_mode
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.top_logprobs = top_logprobs
        self.on_error = on_error
        self.progress = progress
        self.annotator = annotator
        self.n_samples = n_samples
        self.random_state = random_state

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X=None, y=None):
        """Record the label set (``classes``, else ``np.unique(y)`` if given). No LLM call.

        Returns
        -------
        self : object
        """
        self._resolved_backend()
        if self.classes is not None:
            self.classes_ = np.asarray(self.classes)
        else:
            self.classes_ = None if y is None else np.unique(np.asarray(y))
        self.usage_ = UsageLedger()
        return self

    def _name(self, label):
        names = self.label_names or {}
        return str(names.get(label, label))

    def _request_chain(self, content, label):
        """Bodies for each output mode; ``content`` (the item, built once) is shared by all."""
        schema = criticism_schema(self.strategy, max_reasoning_chars=self.max_reasoning_chars)
        alternatives = "unknown (judge the label on its own)"
        if self.classes_ is not None:
            alternatives = format_labels([self._name(c) for c in self.classes_.tolist()])
        modes = self._modes()
        chain = []
        for mode in modes:
            system = CRITIC_SYSTEM.format(
                instructions=self.instructions or DEFAULT_INSTRUCTIONS,
                label=json.dumps(self._name(label)),
                labels=alternatives,
                strategy=CRITIC_STRATEGY_TEXT[self.strategy],
                answer_format=answer_format(mode, schema),
            )
            body = {
                "messages": [
                    {"role": "system", "content": system},
                    {"role": "user", "content": content},
                ],
                "temperature": self.temperature,
                "max_tokens": self.max_tokens or mode_token_budget(mode, schema),
            }
            body.update(format_fields(mode, f"criticism_{self.strategy}", schema))
            if self.strategy == "logprob":
                body["logprobs"], body["top_logprobs"] = True, self.top_logprobs
            chain.append(body)
        return chain

    def _read_error_proba(self, outcome):
        if not outcome.ok:
            raise ParseError(outcome.error)
        modes = self._modes()
        content = message_content(outcome.response)
        finish = outcome.response["choices"][0].get("finish_reason")
        if self.strategy == "logprob":
            try:
                answer = parse_json_answer(content, finish, required=["answer"]).get("answer", "")
            except ParseError:
                if modes[outcome.alternative] != "text":
                    raise
                answer = ("yes", "no")[find_label_in_text(content, ["yes", "no"])]
            index = match_label(answer, ["yes", "no"])
            start = label_value_start(content, ("yes", "no")[index], key="answer")
            proba = None
            if start is not None:
                proba = label_distribution(outcome.response, content, start, ["yes", "no"], index)
            return float(proba[0]) if proba is not None else float(index == 0)
        if self.strategy == "mc":
            return _read_grade(content, finish, text_mode=modes[outcome.alternative] == "text")
        try:
            answer = parse_json_answer(content, finish, required=["error_probability"])
        except ParseError:
            if modes[outcome.alternative] != "text" or repeats_prompt(content):
                raise  # an echoed prompt: any number in it came from the prompt
            numbers_found = _NUMBER.findall(content)
            if not numbers_found:
                raise
            answer = {"error_probability": numbers_found[-1]}
        if "error_probability" not in answer:
            raise ParseError(f"the answer has no 'error_probability' field: {content[:200]!r}")
        return parse_percent(answer["error_probability"])

    def criticize(self, X, labels):
        """Error probabilities for every item, with failures recorded per item.

        Parameters
        ----------
        X : sequence of items
            As for :meth:`MLLMAnnotator.annotate`.
        labels : array-like of shape (n_samples,)
            Proposed (machine) labels.

        Returns
        -------
        criticism : Criticism
        """
        check_is_fitted(self, "usage_")
        items, labels = iter_items(X), np.asarray(labels)
        if len(items) != labels.shape[0]:
            raise ValueError(
                f"X has {len(items)} items but labels has {labels.shape[0]}; pass one proposed "
                "label per item."
            )
        if self.strategy in ANNOTATOR_STRATEGIES:
            return self._criticize_with_annotator(items, labels)
        # each item's content is built (its images encoded) once, for all its output modes
        requests = [
            self._request_chain(user_content(item), label)
            for item, label in zip(items, labels.tolist())
        ]
        outcomes = self._send(requests, f"Criticizing ({self.strategy})", read=self._read_error_proba)
        return _criticism(outcomes, lambda i, outcome: self._read_error_proba(outcome))

    # -- the strategies that repeat the annotator's requests ---------------------

    def _annotator_to_repeat(self):
        """A fitted annotator whose requests these strategies repeat, counting into this ledger."""
        if self.annotator is not None:
            annotator = fitted_component(self.annotator, classes=self.classes_)
        elif self.classes_ is None:
            raise ValueError(
                f"strategy={self.strategy!r} repeats the annotator's requests, which list the labels: "
                "pass classes=[...] (or fit(y=...)), or annotator=."
            )
        else:
            annotator = MLLMAnnotator(
                self.backend,
                classes=self.classes_,
                label_names=self.label_names,
                instructions=self.instructions,
                output_mode=self.output_mode,
                temperature=self.temperature,
                max_tokens=self.max_tokens,
                top_logprobs=self.top_logprobs,
                n_samples=self.n_samples,
                random_state=self.random_state,
            ).fit()
        annotator = copy.copy(annotator)  # the caller's annotator keeps its own ledger and settings
        annotator.usage_, annotator.progress = self.usage_, self.progress
        if self.annotator is not None:
            annotator.n_samples, annotator.random_state = self.n_samples, self.random_state
        return annotator

    def _criticize_with_annotator(self, items, labels):
        annotator = self._annotator_to_repeat()
        column = {label: i for i, label in enumerate(annotator.classes_.tolist())}
        label_index = np.array([column.get(label, -1) for label in labels.tolist()])
        if self.strategy == "consistency":
            samples, reasons = annotator.sample_labels(items)
            error_proba, failures = np.full(len(items), np.nan), []
            for i, answered in enumerate(samples):
                usable = answered[answered >= 0]
                if usable.size:
                    error_proba[i] = np.mean(usable != label_index[i])
                else:
                    failures.append(LLMFailure(i, f"no usable answer in {answered.size} samples: {reasons[i]}"))
            return Criticism(error_proba, failures)
        outcomes, read_label = annotator.answer_outcomes(items)
        names = annotator.label_names_
        return _criticism(
            outcomes, lambda i, outcome: _perplexity_error(outcome, read_label(outcome), label_index[i], names)
        )

    def predict_error_proba(self, X, labels):
        """Probability that each proposed label is wrong (NaN for failed items with on_error='skip').

        Parameters
        ----------
        X : sequence of items
        labels : array-like of shape (n_samples,)

        Returns
        -------
        error_proba : ndarray of shape (n_samples,)
        """
        criticism = self.criticize(X, labels)
        self._apply_failure_policy("criticisms", criticism.failures, criticism.error_proba.size)
        return criticism.error_proba

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = False
        tags.input_tags.string = True
        tags.non_deterministic = True
        return tags


class CriticizerEnsemble(BaseEstimator):
    """The mean error probability of several criticizers.

    An item fails (see ``criticize``) when any member failed on it.

    Parameters
    ----------
    criticizers : list of criticizers
        Objects with ``predict_error_proba(X, labels)`` (and optionally
        ``criticize``), fitted or not: unfitted ones are fitted with no data.

    Attributes
    ----------
    criticizers_ : list
        The fitted members.
    usage_ : UsageLedger
        The members' LLM usage, added up.
    """

    def __init__(self, criticizers):
        self.criticizers = criticizers

    def fit(self, X=None, y=None):
        """Fit the unfitted members (with no data).

        Returns
        -------
        self : object
        """
        if not self.criticizers:
            raise ValueError("CriticizerEnsemble needs at least one criticizer.")
        self.criticizers_ = [fitted_component(critic) for critic in self.criticizers]
        return self

    def criticize(self, X, labels):
        """Mean error probabilities, with every member's failures."""
        check_is_fitted(self)
        results = [_criticize(critic, X, labels) for critic in self.criticizers_]
        error_proba = np.mean([r.error_proba for r in results], axis=0)
        failures = {}
        for result in results:
            for failure in result.failures:
                failures.setdefault(failure.index, failure)
        return Criticism(error_proba, [failures[i] for i in sorted(failures)])

    @property
    def usage_(self):
        """The members' LLM usage, added up (a fresh ledger each time it is read)."""
        total = UsageLedger()
        for critic in self.criticizers_:
            if getattr(critic, "usage_", None) is not None:
                total.add(critic.usage_)
        return total

    def predict_error_proba(self, X, labels):
        """Mean of the members' error probabilities."""
        check_is_fitted(self)
        return np.mean([c.predict_error_proba(X, labels) for c in self.criticizers_], axis=0)


def reading_annotator(criticizer, annotator):
    """``criticizer`` with its ``"perplexity"`` and ``"consistency"`` parts repeating ``annotator``'s requests.

    A part that names no annotator of its own and whose backend is None or the
    annotator's gets ``annotator`` (a copy is changed, never the caller's
    object); members of a :class:`CriticizerEnsemble` too. Anything else is
    returned as it is.
    """
    if not isinstance(annotator, MLLMAnnotator):
        return criticizer
    if isinstance(criticizer, CriticizerEnsemble) and hasattr(criticizer, "criticizers_"):
        members = [reading_annotator(member, annotator) for member in criticizer.criticizers_]
        if any(new is not old for new, old in zip(members, criticizer.criticizers_)):
            criticizer = copy.copy(criticizer)
            criticizer.criticizers_ = members
        return criticizer
    if (
        isinstance(criticizer, MLLMCriticizer)
        and criticizer.strategy in ANNOTATOR_STRATEGIES
        and criticizer.annotator is None
        and criticizer.backend in (None, annotator.backend)
    ):
        criticizer = copy.copy(criticizer)
        criticizer.annotator = annotator
    return criticizer


def _criticism(outcomes, read):
    """Error probabilities ``read(position, outcome)``, NaN and a failure where it raises ParseError."""
    error_proba = np.full(len(outcomes), np.nan)
    failures = []
    for i, outcome in enumerate(outcomes):
        try:
            error_proba[i] = read(i, outcome)
        except ParseError as exc:
            failures.append(LLMFailure(i, str(exc)))
    return Criticism(error_proba, failures)


def _read_grade(content, finish, *, text_mode):
    """The error probability of an ``mc`` answer's grade."""
    try:
        option = parse_json_answer(content, finish, required=["option"]).get("option")
    except ParseError:
        # a plain-text answer is read only when it is the letter alone ("B", "(B)", "B."): a
        # letter inside prose could be any word's
        bare = re.fullmatch(r"\s*\(?([A-Ea-e])\)?[.)]?\s*", content) if text_mode else None
        if bare is None:
            raise
        option = bare.group(1)
    if option is None:
        raise ParseError(f"the answer has no 'option' field: {content[:200]!r}")
    if repeats_prompt(str(option)):
        raise ParseError(f"the answer repeats the prompt instead of answering: {content[:200]!r}")
    letters = list(MC_GRADES)
    return MC_GRADES[letters[match_label(option, letters)]][1]


def _perplexity_error(outcome, answered, label, names):
    """``1 - exp(mean logprob)`` of the answer's values when it answered ``label``, else ``1 - P(label)``."""
    response = outcome.response
    content = message_content(response)
    if not (response["choices"][0].get("logprobs") or {}).get("content"):
        raise ParseError(
            "the annotator's answer has no token logprobs: strategy='perplexity' needs a server that "
            "returns them (another strategy works without)"
        )
    if label < 0:
        return 1.0  # a label outside the annotator's classes: it could not have answered it
    if answered != label:
        start = label_value_start(content, names[answered])
        proba = None if start is None else label_distribution(response, content, start, names, answered)
        if proba is None:
            raise ParseError(f"the answer's logprobs do not spell its label: {content[:200]!r}")
        return float(1.0 - proba[label])
    spans = [value_span(content, "label", label=names[answered]), value_span(content, "reasoning")]
    logprobs = value_logprobs(response, content, [span for span in spans if span is not None])
    if logprobs is None:
        raise ParseError(f"the answer's logprobs do not spell it: {content[:200]!r}")
    return float(np.clip(1.0 - np.exp(np.mean(logprobs)), 0.0, 1.0))


@dataclass
class Criticism:
    """Error probabilities for a batch; NaN where the item failed (see ``failures``)."""

    error_proba: np.ndarray
    failures: list


def _criticize(critic, X, labels):
    if hasattr(critic, "criticize"):
        return critic.criticize(X, labels)
    return Criticism(np.asarray(critic.predict_error_proba(X, labels), dtype=float), [])


_NUMBER = re.compile(r"\d+(?:\.\d+)?")
