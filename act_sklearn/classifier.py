"""ACTClassifier: train any classifier on machine labels corrected by a budget of human reviews."""

import copy
import numbers
import warnings

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, MetaEstimatorMixin, clone
from sklearn.pipeline import Pipeline
from sklearn.utils.metadata_routing import MetadataRouter, MethodMapping, process_routing
from sklearn.utils.metaestimators import available_if
from sklearn.utils.validation import check_consistent_length, check_is_fitted, column_or_1d, has_fit_parameter

from ._sklearn_compat import (
    HasMethods,
    Interval,
    StrOptions,
    _check_method_params,
    _fit_context,
    _num_samples,
    _routing_enabled,
    _safe_indexing,
)
from ._llm_estimator import (
    LLMBatchError,
    LLMFailure,
    LLMFailureWarning,
    fitted_component,
)
from .criticizer import reading_annotator
from .llm import UsageLedger
from .models.linear import ACTLogisticRegression
from .sampler import ACTSampler
from .stats.inference import INTERVALS, estimate_label_accuracy
from .stats.loss import act_coefficients, act_weights
from .stats.metrics import final_labels
from .stats.sampling import check_error_proba

UNLABELED = -1  # scikit-learn's marker for an item no human labelled


def _act_design_prefix(estimator):
    """How to pass the ACT design to ``estimator.fit``, or None if it cannot take it.

    "" for an estimator that takes ``machine_labels``; "step__" for a Pipeline whose
    last step does (a feature extractor before an ACT learner, so that the LLMs read
    the raw items while the learner reads features). With metadata routing enabled
    the Pipeline routes the plain names, which the last step must request.
    """
    if has_fit_parameter(estimator, "machine_labels"):
        return ""
    if isinstance(estimator, Pipeline) and estimator.steps:
        name, last = estimator.steps[-1]
        if last not in (None, "passthrough") and has_fit_parameter(last, "machine_labels"):
            return "" if _routing_enabled() else f"{name}__"
    return None


def _estimator_has(attr):
    """Whether the fitted (or, before fit, the unfitted) estimator has ``attr``."""

    def check(self):
        estimator = self.estimator_ if hasattr(self, "estimator_") else self._default("estimator")
        return hasattr(estimator, attr)

    return check


def _delegate_to_estimator(method_name):
    """A prediction method that calls the trained estimator (never the LLMs)."""

    @available_if(_estimator_has(method_name))
    def method(self, X):
        check_is_fitted(self)
        return getattr(self.estimator_, method_name)(X)

    method.__name__ = method_name
    method.__doc__ = (
        f"Call ``{method_name}`` of the trained ``estimator_``.\n\n"
        "Parameters\n----------\nX : array-like of shape (n_samples, n_features)\n\n"
        f"Returns\n-------\nThe output of ``estimator_.{method_name}(X)``.\n"
    )
    return method


class ACTClassifier(MetaEstimatorMixin, ClassifierMixin, BaseEstimator):
    """Train a classifier on machine labels corrected by a budget of human reviews.

    The ACT pipeline in one ``fit``: machine labels (from ``machine_labels`` or
    the ``annotator``), error probabilities (from ``error_proba`` or the
    ``criticizer``), a human-review sample within the ``sampler``'s budget, and
    training with the ACT loss (inverse-probability weighting of the human
    corrections).

    Three ways to call ``fit``:

    * **Simulation** (model selection, benchmarks): ``fit(X, y, machine_labels=...,
      error_proba=...)`` with ``y`` the gold labels acting as reviewers. Only the
      sampled items' ``y`` are read; ``n_human_labels_`` says how many.
    * **Production**: ``fit(X, y, machine_labels=..., inclusion_proba=...)`` with
      ``y = -1`` for items no human reviewed and ``inclusion_proba`` the
      probabilities with which the reviewed items were selected (``ACTSampler``).
    * **Full-human reference**: ``fit(X, y)`` with no machine labels and no
      annotator trains on ``y`` as human labels for every item.

    Parameters
    ----------
    estimator : classifier or None, default=None
        None means ``ACTLogisticRegression()``.
        The downstream model. Estimators whose ``fit`` accepts ``machine_labels``
        (``ACTLogisticRegression``, ``ACTNeuralNetClassifier``) train on the ACT
        loss directly. Any other classifier is trained on two rows per reviewed
        item (machine label with weight ``power * (1 - w)``, human label with
        weight ``w``); it needs ``sample_weight`` unless every weight is 0 or 1, and
        weights turn negative (an error) when ``pi < 1`` and ``power > 0``.
    annotator : object with ``predict(X)`` or None, default=None
        Labels the items when ``machine_labels`` is not passed. Used as it is
        (not refit); wrap a fitted scikit-learn model in ``FrozenEstimator``.
    criticizer : object with ``predict_error_proba(X, labels)`` or None, default=None
        Scores the machine labels when ``error_proba`` is not passed. With neither,
        every label is equally suspect and the review sample is uniform.
    sampler : ACTSampler or None, default=None
        Chooses the items to review (simulation mode); None means ``ACTSampler()``.
        ``set_params(sampler__budget=...)`` (and so ``GridSearchCV``) works on the
        default too.
    power : float in [0, 1] or "auto", default=1.0
        Weight of the machine-label term of the ACT loss; 0 trains on the
        inverse-probability-weighted human labels alone, 1 is the ACT paper's
        loss. ``"auto"`` tunes it to minimise the variance of the estimate
        (PPI++; :func:`act_sklearn.stats.estimating_equation.tuned_power`):
        ``ACTLogisticRegression`` and ``ACTNeuralNetClassifier`` do it in
        ``fit``; any other estimator gets 1 when every reviewed item had
        ``pi = 1`` and cannot train on the design otherwise. The default is
        safe with the default estimator, which moves the negative weights onto
        neighbours (``clip=0.5``, ``spread_to_neighbors=True``) so that every
        weight stays non-negative; the ACT paper's loss is ``power=1`` with
        ``ACTLogisticRegression(clip=None)``. ``"auto"`` is opt-in: it gained
        most at budgets of 15% and more, and fell below machine-label training
        at 5% where few explored items carry heavy weights
        (``benchmarks/quality.py``).
    classes : array-like or None, default=None
        The label set. Labels outside it raise an error. Defaults to the
        annotator's ``classes_`` if it has them, else anything goes.
    confidence : float in (0, 1), default=0.9
        Level of the interval in ``label_accuracy_``.
    interval : {"score", "randomized"}, default="score"
        The interval in ``label_accuracy_``. Where few reviews carry it,
        ``"score"`` errs wide, as any deterministic interval must, and
        ``"randomized"`` covers at ``confidence`` on average over jobs at the
        price of a narrow interval by chance in a few of them: opt-in
        (:func:`~act_sklearn.stats.estimate_label_accuracy`).
    random_state : int, RandomState instance or None, default=None
        The randomized interval's draw (``interval="randomized"`` only).

    Attributes
    ----------
    estimator_ : estimator
        The trained downstream classifier.
    sampler_ : ACTSampler or None
        The fitted sampler (simulation mode only).
    classes_ : ndarray of shape (n_classes,)
        Class labels of ``estimator_``.
    machine_labels_ : ndarray of shape (n_samples,) or None
        Labels from the annotator (None in the full-human reference).
    error_proba_ : ndarray of shape (n_samples,) or None
        Error probabilities used by the sampler (None when not given).
    inclusion_proba_ : ndarray of shape (n_samples,)
        Probability with which each item was to be reviewed.
    reviewed_ : ndarray of bool, shape (n_samples,)
        Items with a human label.
    n_human_labels_ : int
        Number of human labels read from ``y``.
    final_labels_ : ndarray of shape (n_samples,)
        Human labels where reviewed, machine labels elsewhere.
    label_accuracy_ : LabelAccuracyEstimate
        Estimated accuracy of ``final_labels_`` with a confidence interval (only
        errors found when some item had ``inclusion_proba`` 0).
    power_ : float or None
        The power the estimator trained with (tuned when ``power="auto"``);
        None in the full-human reference.
    n_features_in_ : int
        Number of features seen by ``estimator_`` (when it records it).
    annotator_, criticizer_ : estimator
        The components used (fitted with no data first if they were unfitted);
        set only when ``fit`` called them.
    failures_ : list of dict
        Items whose LLM request failed (``index`` into X, ``stage``, ``reason``)
        when the component has ``on_error="skip"``; with ``"raise"`` ``fit``
        raises :class:`LLMBatchError` instead. They stay in the design as the
        most suspicious items (``error_proba_`` 1): the sampler reviews them
        first (``inclusion_proba_`` 1, or the budget shared among them when
        there are more of them than the budget). An item without a machine
        label counts as a wrong label in ``label_accuracy_`` until reviewed.
    usable_indices_ : ndarray of int
        Items of X the estimator trained on: all but those with neither a
        machine label nor a review (their ``final_labels_`` entry is None).
    usage_ : UsageLedger
        LLM requests, cache hits, retries and tokens of this ``fit``.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.datasets import load_digits
    >>> from act_sklearn import ACTClassifier, ACTSampler
    >>> X, y = load_digits(return_X_y=True)
    >>> rng = np.random.default_rng(0)
    >>> wrong = rng.random(y.size) < 0.2
    >>> machine = np.where(wrong, (y + 1) % 10, y)
    >>> error_proba = np.clip(wrong * 0.6 + rng.random(y.size) * 0.4, 0, 1)
    >>> act = ACTClassifier(sampler=ACTSampler(budget=0.2, explore=0.1, random_state=0))
    >>> act = act.fit(X / 16, y, machine_labels=machine, error_proba=error_proba)
    >>> int(act.n_human_labels_)
    359
    >>> bool(act.label_accuracy_.ci_low < act.label_accuracy_.accuracy)
    True
    """

    _parameter_constraints = {
        "estimator": [HasMethods(["fit", "predict"]), None],
        "annotator": [HasMethods(["predict"]), None],
        "criticizer": [HasMethods(["predict_error_proba"]), None],
        "sampler": [HasMethods(["fit"]), None],
        "power": [Interval(numbers.Real, 0, 1, closed="both"), StrOptions({"auto"})],
        "classes": ["array-like", None],
        "confidence": [Interval(numbers.Real, 0, 1, closed="neither")],
        "interval": [StrOptions(set(INTERVALS))],
        "random_state": ["random_state"],
    }

    def __init__(
        self,
        estimator=None,
        *,
        annotator=None,
        criticizer=None,
        sampler=None,
        power=1.0,
        classes=None,
        confidence=0.9,
        interval="score",
        random_state=None,
    ):
        self.estimator = estimator
        self.annotator = annotator
        self.criticizer = criticizer
        self.sampler = sampler
        self.power = power
        self.classes = classes
        self.confidence = confidence
        self.interval = interval
        self.random_state = random_state

    @_fit_context(prefer_skip_nested_validation=False)
    def fit(
        self, X, y, *, machine_labels=None, error_proba=None, inclusion_proba=None, **fit_params
    ):
        """Label, criticize, sample, review and train.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Items, as the estimator (and annotator) take them.
        y : array-like of shape (n_samples,)
            Simulation: gold labels, read only for sampled items. Production:
            human labels, -1 for unreviewed items.
        machine_labels : array-like of shape (n_samples,), default=None
            Annotator labels; computed by ``annotator`` when None.
        error_proba : array-like of shape (n_samples,), default=None
            Criticizer error probabilities; computed by ``criticizer`` when None.
        inclusion_proba : array-like of shape (n_samples,), default=None
            Production mode: the probabilities with which items were selected
            for review. Its presence selects production mode.
        **fit_params : dict
            Passed to ``estimator.fit`` (routed, when metadata routing is enabled).

        Returns
        -------
        self : object
        """
        if _routing_enabled():
            estimator_params = process_routing(self, "fit", **fit_params).estimator.fit
        else:
            estimator_params = fit_params
        y = column_or_1d(y, warn=True)
        check_consistent_length(X, y)
        n_samples = _num_samples(X)
        if n_samples == 0:
            raise ValueError(
                "Found array with 0 sample(s) while a minimum of 1 is required; pass items to fit."
            )

        self.failures_, self.usage_ = [], UsageLedger()
        self.__dict__.pop("annotator_", None)  # set again only when this fit annotates
        machine_labels = self._machine_labels(X, machine_labels, n_samples)
        if (
            machine_labels is not None
            and error_proba is None
            and inclusion_proba is None
            and self.criticizer is not None
        ):
            error_proba = self._criticize(X, machine_labels)
        # on_error="skip": an item whose answer failed is the most suspicious there is, so it
        # goes to people first; one with no machine label counts as an error until reviewed
        failed = np.zeros(n_samples, dtype=bool)
        failed[[f["index"] for f in self.failures_]] = True
        unlabelled = np.zeros(n_samples, dtype=bool)
        unlabelled[[f["index"] for f in self.failures_ if f["stage"] == "annotate"]] = True
        if failed.any() and inclusion_proba is None:
            error_proba = np.where(failed, 1.0, 0.5 if error_proba is None else np.asarray(error_proba, dtype=float))
        self.machine_labels_ = machine_labels
        self.sampler_ = None
        self.error_proba_ = None
        if machine_labels is None:
            self._design_full_human(y, error_proba, inclusion_proba)
        elif inclusion_proba is not None:
            self._design_production(y, error_proba, inclusion_proba, n_samples)
        else:
            self._design_simulation(y, error_proba, n_samples, must_review=failed, machine_labels=machine_labels)
        if unlabelled.any():
            # a reviewed item's machine term cancels (weight 1 - 1/pi = 0 at pi = 1), so any class
            # stands in for its missing label; an unreviewed one has no label to train on at all
            machine_labels = np.where(unlabelled, y, machine_labels).astype(y.dtype, copy=False)
        trained = ~(unlabelled & ~self.reviewed_)
        self.usable_indices_ = np.flatnonzero(trained)

        human_labels = np.where(self.reviewed_, y, self._fill_value(y, machine_labels))
        self._check_label_set(human_labels, machine_labels)
        weights = act_weights(self.reviewed_, self.inclusion_proba_)
        self.n_human_labels_ = int(self.reviewed_.sum())
        if machine_labels is None:
            self.final_labels_ = human_labels
            machine_for_estimate = human_labels
        else:
            self.final_labels_ = final_labels(machine_labels, human_labels, self.reviewed_)
            machine_for_estimate = machine_labels
            if unlabelled.any():  # no label is a wrong label, in the estimate and the final labels
                machine_for_estimate = np.where(unlabelled, None, machine_labels.astype(object))
                self.final_labels_ = np.where(trained, self.final_labels_.astype(object), None)
        self.label_accuracy_ = estimate_label_accuracy(
            machine_for_estimate,
            human_labels,
            self.reviewed_,
            self.inclusion_proba_,
            confidence=self.confidence,
            interval=self.interval,
            random_state=self.random_state,
        )

        self.estimator_ = clone(self._default("estimator"))
        if not trained.all():
            rows = self.usable_indices_
            estimator_params = _check_method_params(X, estimator_params, indices=rows)
            X, human_labels, machine_labels = _safe_indexing(X, rows), human_labels[rows], machine_labels[rows]
            weights = weights[rows]
        if machine_labels is None:
            self.power_ = None
            self.estimator_.fit(X, human_labels, **estimator_params)
        else:
            self._fit_estimator(X, human_labels, machine_labels, weights, estimator_params)
        self.classes_ = self.estimator_.classes_
        return self

    # Defaults are None (scikit-learn's rule for constructor defaults); these are the
    # estimators they stand for.
    _DEFAULTS = {"estimator": ACTLogisticRegression, "sampler": ACTSampler}

    def _default(self, name):
        value = getattr(self, name)
        return self._DEFAULTS[name]() if value is None else value

    def set_params(self, **params):
        """Set parameters; ``sampler__budget=...`` also works while ``sampler`` is None.

        Returns
        -------
        self : object
        """
        for name in self._DEFAULTS:
            nested = any(key.startswith(f"{name}__") for key in params)
            if nested and name not in params and getattr(self, name) is None:
                setattr(self, name, self._DEFAULTS[name]())
        return super().set_params(**params)

    # -- the three designs -------------------------------------------------

    def _machine_labels(self, X, machine_labels, n_samples):
        if machine_labels is None and self.annotator is not None:
            annotator = fitted_component(self.annotator, self.classes)
            self.annotator_ = annotator
            if hasattr(annotator, "annotate"):  # LLM annotators report failures per item
                annotations = self._with_usage(annotator, annotator.annotate, X)
                self._record_failures(annotator, "annotate", annotations.failures, n_samples)
                machine_labels = annotator.labels_from_index(annotations.label_index)
            else:
                machine_labels = annotator.predict(X)
        if machine_labels is None:
            return None
        machine_labels = column_or_1d(machine_labels)
        if machine_labels.shape[0] != n_samples:
            raise ValueError(
                f"machine_labels has {machine_labels.shape[0]} entries but X has "
                f"{n_samples} items; pass one machine label per item."
            )
        return machine_labels

    def _criticize(self, X, machine_labels):
        criticizer = fitted_component(self.criticizer, self.classes)
        # "perplexity" and "consistency" read this fit's annotator, not one of their own
        criticizer = reading_annotator(criticizer, getattr(self, "annotator_", None))
        self.criticizer_ = criticizer
        if not hasattr(criticizer, "criticize"):
            return criticizer.predict_error_proba(X, machine_labels)
        failed = np.isin(np.arange(machine_labels.size), [f["index"] for f in self.failures_])
        rows = np.flatnonzero(~failed)  # no criticism of items without a label
        criticism = self._with_usage(
            criticizer, criticizer.criticize, _safe_indexing(X, rows), machine_labels[rows]
        )
        failures = [LLMFailure(int(rows[f.index]), f.reason) for f in criticism.failures]
        self._record_failures(criticizer, "criticize", failures, rows.size)
        error_proba = np.full(machine_labels.size, np.nan)
        error_proba[rows] = criticism.error_proba
        return error_proba

    def _with_usage(self, component, method, *args):
        before = copy.copy(getattr(component, "usage_", None))
        result = method(*args)
        after = getattr(component, "usage_", None)
        if before is not None and after is not None:
            delta = copy.copy(after)
            for name in delta.__dataclass_fields__:
                setattr(delta, name, getattr(after, name) - getattr(before, name))
            self.usage_.add(delta)
        return result

    def _record_failures(self, component, stage, failures, n_items):
        if not failures:
            return
        if getattr(component, "on_error", "raise") == "raise":
            raise LLMBatchError(f"{stage} requests", failures, n_items)
        warnings.warn(
            str(LLMBatchError(f"{stage} requests", failures, n_items)), LLMFailureWarning, stacklevel=4
        )
        self.failures_.extend(
            {"index": f.index, "stage": stage, "reason": f.reason} for f in failures
        )

    def _design_full_human(self, y, error_proba, inclusion_proba):
        if error_proba is not None or inclusion_proba is not None:
            raise ValueError(
                "error_proba or inclusion_proba was given without machine labels; pass "
                "machine_labels (or an annotator) so that there is something to correct."
            )
        if np.any(y == UNLABELED):
            raise ValueError(
                "y marks unreviewed items with -1 but no machine labels were given; pass "
                "machine_labels and inclusion_proba to train on the ACT design."
            )
        self.reviewed_ = np.ones(y.shape[0], dtype=bool)
        self.inclusion_proba_ = np.ones(y.shape[0])

    def _design_production(self, y, error_proba, inclusion_proba, n_samples):
        inclusion_proba = check_error_proba(inclusion_proba, name="inclusion_proba")
        if inclusion_proba.shape[0] != n_samples:
            raise ValueError(
                f"inclusion_proba has {inclusion_proba.shape[0]} entries but X has "
                f"{n_samples} items; pass one probability per item."
            )
        if error_proba is not None:
            self.error_proba_ = self._checked_error_proba(error_proba, n_samples)
        self.reviewed_ = y != UNLABELED
        self.inclusion_proba_ = inclusion_proba

    def _design_simulation(self, y, error_proba, n_samples, must_review, machine_labels):
        if error_proba is None:
            error_proba = np.full(n_samples, 0.5)  # no critic: review a uniform sample
        else:
            self.error_proba_ = error_proba = self._checked_error_proba(error_proba, n_samples)
        sampler = clone(self._default("sampler"))
        if getattr(sampler, "rounds", 1) > 1:
            # review in rounds: each round recalibrates the criticizer on the answers so far, so the
            # sampler reads the gold labels of the items it has drawn (y as the reviewers)
            sampler.fit(error_proba, y, must_review=must_review, machine_labels=machine_labels)
        else:
            sampler.fit(error_proba, must_review=must_review)
        self.sampler_ = sampler
        self.reviewed_ = np.asarray(self.sampler_.reviewed_, dtype=bool)
        self.inclusion_proba_ = np.asarray(self.sampler_.inclusion_proba_, dtype=float)
        unlabeled = self.reviewed_ & (y == UNLABELED)
        if unlabeled.any():
            raise ValueError(
                f"{int(unlabeled.sum())} item(s) selected for review have y = -1 (the first "
                f"at index {int(np.flatnonzero(unlabeled)[0])}). In simulation mode y must "
                "hold a gold label for every item; in production pass inclusion_proba."
            )

    @staticmethod
    def _checked_error_proba(error_proba, n_samples):
        error_proba = check_error_proba(error_proba)
        if error_proba.shape[0] != n_samples:
            raise ValueError(
                f"error_proba has {error_proba.shape[0]} entries but X has {n_samples} "
                "items; pass one probability per item."
            )
        return error_proba

    @staticmethod
    def _fill_value(y, machine_labels):
        """Stand-in for unreviewed items' human labels (never read)."""
        return y if machine_labels is None else machine_labels.astype(y.dtype, copy=False)

    def _check_label_set(self, human_labels, machine_labels):
        classes = self.classes
        if classes is None and self.annotator is not None:
            classes = getattr(getattr(self, "annotator_", self.annotator), "classes_", None)
        if classes is None:
            return
        classes = np.asarray(classes)
        checks = [("y", human_labels[self.reviewed_])]
        if machine_labels is not None:
            checks.append(("machine_labels", machine_labels))
        for name, labels in checks:
            unknown = ~np.isin(labels, classes)
            if unknown.any():
                raise ValueError(
                    f"{name} holds labels outside the classes {classes.tolist()}: "
                    f"{np.unique(labels[unknown]).tolist()[:5]}. Fix the labels or pass the "
                    "full label set as `classes`."
                )

    # -- training ----------------------------------------------------------

    def _fit_estimator(self, X, human_labels, machine_labels, weights, estimator_params):
        design_prefix = _act_design_prefix(self.estimator_)
        if design_prefix is not None:
            design = {"machine_labels": machine_labels, "act_weight": weights, "power": self.power}
            design = {design_prefix + name: value for name, value in design.items()}
            self.estimator_.fit(X, human_labels, **design, **estimator_params)
            learner = self.estimator_[-1] if isinstance(self.estimator_, Pipeline) else self.estimator_
            self.power_ = getattr(learner, "power_", self.power)
            return
        # with certainty reviews only (pi = 1) there is no design variance and "auto" is 1
        # (tuned_power); otherwise a plain estimator cannot take the negative weights of lam > 0
        self.power_ = 1.0 if self.power == "auto" else self.power
        machine_coef, human_coef = act_coefficients(weights, self.power_)
        machine_rows = np.flatnonzero(machine_coef != 0)
        human_rows = np.flatnonzero(human_coef != 0)
        rows = np.concatenate([machine_rows, human_rows])
        row_weights = np.concatenate([machine_coef[machine_rows], human_coef[human_rows]])
        if np.any(row_weights < 0):
            raise ValueError(
                f"{type(self.estimator_).__name__} would need negative sample weights: items "
                "reviewed with inclusion_proba < 1 subtract their machine-label loss. Use "
                "ACTLogisticRegression or ACTNeuralNetClassifier, which train on the ACT "
                "loss directly, or power=0, or the threshold rule without explore."
            )
        X_rows = _safe_indexing(X, rows)
        y_rows = np.concatenate([machine_labels[machine_rows], human_labels[human_rows]])
        params = _check_method_params(X, estimator_params, indices=rows)
        if not np.allclose(row_weights, 1.0):
            if not has_fit_parameter(self.estimator_, "sample_weight"):
                raise ValueError(
                    f"{type(self.estimator_).__name__}.fit takes no sample_weight, which the "
                    "ACT design with inclusion_proba < 1 needs. Use ACTLogisticRegression or "
                    "an estimator with sample_weight."
                )
            params["sample_weight"] = row_weights * params.get("sample_weight", 1.0)
        self.estimator_.fit(X_rows, y_rows, **params)

    # -- prediction: the trained estimator only, no LLM call ------------------

    predict = _delegate_to_estimator("predict")
    predict_proba = _delegate_to_estimator("predict_proba")
    predict_log_proba = _delegate_to_estimator("predict_log_proba")
    decision_function = _delegate_to_estimator("decision_function")

    @property
    def n_features_in_(self):
        """Number of features seen by the trained estimator."""
        return self.estimator_.n_features_in_

    def get_metadata_routing(self):
        """Metadata routing: this estimator consumes the ACT design, the rest goes to ``estimator.fit``.

        Returns
        -------
        routing : MetadataRouter
        """
        return MetadataRouter(owner=self).add_self_request(self).add(
            estimator=self._default("estimator"),
            method_mapping=MethodMapping().add(caller="fit", callee="fit"),
        )

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        estimator_tags = self._default("estimator").__sklearn_tags__()
        tags.input_tags.sparse = estimator_tags.input_tags.sparse
        return tags
