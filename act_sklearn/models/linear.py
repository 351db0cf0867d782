"""ACTLogisticRegression: multinomial logistic regression that trains on the ACT design."""

import numbers
import warnings
from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize
from scipy.special import expit, softmax
from scipy.stats import t as student_t
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import (
    check_is_fitted,
    validate_data,
)

from .._sklearn_compat import Interval, LinearClassifierMixin, _check_sample_weight, _fit_context
from ..stats.estimating_equation import (
    DENSE_LIMIT,
    SoftmaxDesign,
    act_covariance,
    design_degrees_of_freedom,
    tuned_power,
)
from ..stats.loss import SoftTargetCrossEntropy, act_soft_targets
from ._design import check_act_design
from .neighbor_spread import act_targets


@dataclass(frozen=True)
class CoefficientIntervals:
    """Confidence intervals for the coefficients and intercepts of :class:`ACTLogisticRegression`."""

    coef_low: np.ndarray
    coef_high: np.ndarray
    intercept_low: np.ndarray
    intercept_high: np.ndarray
    confidence: float


class ACTLogisticRegression(LinearClassifierMixin, ClassifierMixin, BaseEstimator):
    """Multinomial logistic regression with L2 penalty that trains on the ACT design.

    On ordinary labels it minimises the same objective as scikit-learn's
    ``LogisticRegression(C=C)`` with the ``lbfgs`` solver (one coefficient row for
    two classes, one per class otherwise). Given machine labels and ACT weights it
    minimises the ACT loss instead (see Notes), which stays convex for every
    ``power`` in [0, 1].

    Parameters
    ----------
    C : float, default=1.0
        Inverse of the L2 regularisation strength, as in ``LogisticRegression``.
    fit_intercept : bool, default=True
        Whether to fit an (unpenalised) intercept.
    tol : float, default=1e-4
        L-BFGS stops when the largest gradient component falls below ``tol``.
    max_iter : int, default=100
        Maximum number of L-BFGS iterations.
    clip : float >= 0 or None, default=0.5
        ACT design only: how far a negative machine-label target weight may
        reach (:func:`act_sklearn.stats.act_soft_targets`). A reviewed item
        with a wrong machine label and weight ``w = 1/pi`` carries
        ``-power * (w - 1)`` on its machine label, and any negative target makes
        an item's loss unbounded below (the fit gains by pushing that item's
        machine-label logit down without end): a few explored items with
        weights in the hundreds then steer the fit. With
        ``spread_to_neighbors`` (the default) that weight is taken from nearby
        unreviewed items instead, at most ``clip * power`` (capped at their whole
        weight) from each; without, it is cut at ``-clip`` (the default loss
        before; on digits the cut at -0.5 left 5 of 70 configurations with a
        seed below machine-label training, the cut at -1 14 and the spread 1,
        in ``benchmarks/quality.py``). 0 drops the negative part (a
        non-negative weighted cross-entropy, the most bias).
        None is the exact, unbiased ACT loss (with ``power=1``, the ACT paper's
        loss): opt in knowing it can do worse than ignoring the humans. No
        effect on ordinary labels or where every reviewed item had ``pi = 1``.
    spread_to_neighbors : bool, default=True
        ACT design only, with a ``clip``: move each negative machine-label
        weight onto the unreviewed items nearest to the reviewed item (Euclidean,
        in ``X``) that share its machine label, nearest first
        (:func:`act_sklearn.models.neighbor_spread.spread_to_neighbors`): the
        item stands for about ``w - 1`` such items whose machine label is wrong
        too. Every target weight stays non-negative. In
        ``benchmarks/quality.py`` it beat the plain cut in mean test accuracy on
        every task, by 0.13 (Fashion-MNIST) to 1.0 points (digits; the README's
        quality section has the figures); the neighbour search costs one
        nearest-neighbour query per reviewed item with a wrong machine label
        (``benchmarks/fit_speed.py``: about 0.8 s for 13,544 of them on
        100,000 x 300). False cuts at ``-clip``.
    compute_intervals : bool, default=False
        ACT design only: form the covariance of the parameters at fit, for
        :meth:`coef_ci`, :meth:`predict_proba_ci` and :meth:`confidence_interval`
        (needs ``clip=None`` or a clip that changed nothing, and at most 1000
        parameters). It costs one ``n * p^2`` pass: 1.5 s for 59,000 items and
        510 parameters, where the fit took 0.2 s, hence opt-in.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        Class labels.
    coef_ : ndarray of shape (1, n_features) or (n_classes, n_features)
        Coefficients; one row for a binary problem, as in ``LogisticRegression``.
    intercept_ : ndarray of shape (1,) or (n_classes,)
        Intercepts (zeros when ``fit_intercept=False``).
    n_iter_ : ndarray of shape (1,)
        Number of L-BFGS iterations run.
    power_ : float or None
        The power the ACT design was trained with (tuned with ``power="auto"``);
        None on ordinary labels.
    clipped_ : bool
        Whether ``clip`` (spread or cut) changed any target of this fit (then
        the loss is biased and there are no intervals).
    coef_covariance_ : ndarray of shape (n_params, n_params) or None
        ACT design only: covariance of the parameters (each class row's
        coefficients then its intercept, flattened) around the full-human fit on
        the same items, under the review design; None unless ``compute_intervals``,
        on ordinary labels, where ``clipped_``, or above ``DENSE_LIMIT`` (1000)
        parameters. See :meth:`coef_ci`.
    coef_covariance_population_ : ndarray of shape (n_params, n_params) or None
        The same around the population coefficients (adds the full-human fit's
        own sandwich variance).
    design_influence_ : ndarray of shape (n_explored, n_params) or None
        Each reviewed item with ``pi < 1``'s share of ``coef_covariance_``
        (``coef_covariance_ = design_influence_.T @ design_influence_``): from
        it the intervals read how many items their variance rests on
        (:func:`~act_sklearn.stats.estimating_equation.design_degrees_of_freedom`).
    objective_ : float
        Value of the objective (Notes) at the solution.
    intercept_penalized_ : bool
        Whether the intercept was penalised (Notes).
    n_features_in_ : int
        Number of features seen during ``fit``.
    feature_names_in_ : ndarray of shape (n_features_in_,)
        Names of features seen during ``fit``, when ``X`` has string column names.

    Notes
    -----
    With class scores ``z_i = W x_i + b``, signed soft targets ``q_i`` (see
    :func:`act_sklearn.stats.act_soft_targets`) and sample weights ``s_i``, the
    objective is::

        sum_i s_i [ sum(q_i) * logsumexp(z_i) - q_i . z_i ] / sum_i s_i
            + ||W||^2 / (2 * C * sum_i s_i)

    For ordinary labels ``q_i`` is one-hot and this is exactly the objective that
    ``LogisticRegression`` minimises (scaled by ``1 / (C * sum_i s_i)``). For
    two classes the first class's score is fixed at 0, which is the binary
    logistic model. Since ``sum(q_i) = power + w_i * (1 - power) >= 0``, each term
    is convex, and the L2 penalty makes the objective strictly convex and bounded
    below in the coefficients, so L-BFGS cannot diverge even where ``q_i`` has
    negative entries. One case remains: when a class's total target mass
    ``sum_i s_i q_ik`` is not positive (a reviewed item with small ``pi`` and a
    wrong machine label can make it negative), the unpenalised intercept of that
    class would run to minus infinity; the intercept is then penalised like the
    coefficients (``intercept_penalized_``).

    Examples
    --------
    >>> from sklearn.datasets import load_iris
    >>> from act_sklearn import ACTLogisticRegression
    >>> X, y = load_iris(return_X_y=True)
    >>> clf = ACTLogisticRegression(max_iter=500).fit(X, y)
    >>> round(clf.score(X, y), 2)
    0.97
    """

    _parameter_constraints = {
        "C": [Interval(numbers.Real, 0, None, closed="neither")],
        "fit_intercept": ["boolean"],
        "tol": [Interval(numbers.Real, 0, None, closed="left")],
        "max_iter": [Interval(numbers.Integral, 0, None, closed="left")],
        "clip": [Interval(numbers.Real, 0, None, closed="left"), None],
        "spread_to_neighbors": ["boolean"],
        "compute_intervals": ["boolean"],
    }

    def __init__(
        self, C=1.0, *, fit_intercept=True, tol=1e-4, max_iter=100, clip=0.5, spread_to_neighbors=True,
        compute_intervals=False,
    ):
        self.C = C
        self.fit_intercept = fit_intercept
        self.tol = tol
        self.max_iter = max_iter
        self.clip = clip
        self.spread_to_neighbors = spread_to_neighbors
        self.compute_intervals = compute_intervals

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y, sample_weight=None, *, machine_labels=None, act_weight=None, power=1.0):
        """Fit on ordinary labels, or on the ACT design.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
        y : array-like of shape (n_samples,)
            Labels. With the ACT design, the human labels; read only where
            ``act_weight > 0`` (anything, such as -1, elsewhere).
        sample_weight : array-like of shape (n_samples,), default=None
        machine_labels : array-like of shape (n_samples,), default=None
            The annotator's labels. Pass with ``act_weight`` to train on the ACT design.
        act_weight : array-like of shape (n_samples,), default=None
            ``xi / pi`` (see :func:`act_sklearn.stats.act_weights`); 0 for unreviewed items.
        power : float in [0, 1] or "auto", default=1.0
            Weight ``lam`` of the machine-label term (1 is the ACT paper's loss).
            ``"auto"`` fits at ``lam = 1``, estimates the ``lam`` that minimises
            the variance of the estimating equation under the design
            (:func:`act_sklearn.stats.estimating_equation.tuned_power`), and
            refits with it; ``power_`` records the value used. The formula is
            the exact loss's; with a ``clip`` that changes targets it is a
            heuristic.

        Returns
        -------
        self : object
        """
        X, y = validate_data(
            self, X, y, accept_sparse=["csr", "csc"], dtype=np.float64, y_numeric=False
        )
        sample_weight = _check_sample_weight(sample_weight, X, dtype=np.float64)
        codes = self._label_codes(y, machine_labels, act_weight, power)
        self.power_ = self.coef_covariance_ = self.coef_covariance_population_ = None
        self.design_influence_ = None
        self.clipped_ = False
        if not isinstance(codes, tuple):  # ordinary labels
            targets = np.zeros((y.size, self.classes_.size))
            targets[np.arange(y.size), codes] = 1.0
            self._solve(X, targets, sample_weight)
            return self

        machine_codes, human_codes, act_weight = codes
        power_used = 1.0 if power == "auto" else float(power)
        features = X if self.spread_to_neighbors else None
        targets = act_targets(
            machine_codes, human_codes, act_weight, self.classes_.size, power_used, self.clip, features
        )
        exact = act_soft_targets(machine_codes, human_codes, act_weight, self.classes_.size, power_used)
        self.clipped_ = self.clip is not None and bool(np.any(exact < (0 if self.spread_to_neighbors else -self.clip)))
        self._solve(X, targets, sample_weight)
        if power == "auto":
            # PPI++: the power that minimises the estimated variance at the lam = 1 fit, then refit
            power_used = tuned_power(self._softmax_design(X, codes, sample_weight))
            targets = act_targets(
                machine_codes, human_codes, act_weight, self.classes_.size, power_used, self.clip, features
            )
            self._solve(X, targets, sample_weight, start=self._params())
        self.power_ = power_used
        n_params = self.coef_.size + self.intercept_.size * self.fit_intercept
        if self.compute_intervals and n_params <= DENSE_LIMIT and not self.clipped_:  # clipped: biased
            design = self._softmax_design(X, codes, sample_weight)
            self.coef_covariance_, self.coef_covariance_population_, self.design_influence_ = act_covariance(
                design, power_used
            )
        return self

    def _solve(self, X, targets, sample_weight, start=None):
        """Minimise the objective (Notes) for fixed targets; sets the fitted parameters."""
        n_features = X.shape[1]
        n_rows = 1 if self.classes_.size == 2 else self.classes_.size
        n_params = n_features + int(self.fit_intercept)
        l2_strength = 1.0 / (self.C * sample_weight.sum())
        # A class whose total target mass is not positive (possible under the ACT
        # design when a reviewed item has pi < 1) drives an unpenalised intercept to
        # minus infinity; penalising the intercept then keeps the minimum finite.
        class_mass = sample_weight @ targets
        self.intercept_penalized_ = bool(self.fit_intercept and class_mass.min() <= 0)
        penalized = slice(None) if self.intercept_penalized_ else slice(0, n_features)
        cross_entropy = SoftTargetCrossEntropy(targets, sample_weight)

        def objective(flat_params):
            params = flat_params.reshape(n_rows, n_params)
            coef = params[:, :n_features]
            scores = np.asarray(X @ coef.T)
            if self.fit_intercept:
                scores += params[:, n_features]
            loss, grad_logits = cross_entropy(self._logits(scores))
            grad_scores = grad_logits[:, 1:] if n_rows == 1 else grad_logits
            grad = np.empty_like(params)
            grad[:, :n_features] = np.asarray(X.T @ grad_scores).T
            if self.fit_intercept:
                grad[:, n_features] = grad_scores.sum(axis=0)
            grad[:, penalized] += l2_strength * params[:, penalized]
            loss += 0.5 * l2_strength * np.vdot(params[:, penalized], params[:, penalized])
            return loss, grad.ravel()

        result = minimize(
            objective,
            np.zeros(n_rows * n_params) if start is None else start,
            method="L-BFGS-B",
            jac=True,
            options={
                "maxiter": self.max_iter,
                "maxls": 50,
                "gtol": self.tol,
                "ftol": 64 * np.finfo(float).eps,
            },
        )
        if not result.success and result.nit >= self.max_iter:
            warnings.warn(
                f"L-BFGS did not converge in max_iter={self.max_iter} iterations; "
                "increase max_iter or scale the features.",
                ConvergenceWarning,
            )
        params = result.x.reshape(n_rows, n_params)
        self.coef_ = params[:, :n_features].copy()
        self.intercept_ = (
            params[:, n_features].copy() if self.fit_intercept else np.zeros(n_rows)
        )
        self.n_iter_ = np.array([result.nit])
        self.objective_ = float(result.fun)

    def _params(self):
        """The fitted parameters flattened class by class: coefficients, then the intercept."""
        if not self.fit_intercept:
            return self.coef_.ravel().copy()
        return np.hstack([self.coef_, self.intercept_[:, None]]).ravel()

    def _softmax_design(self, X, codes, sample_weight):
        machine_codes, human_codes, act_weight = codes
        ridge = np.full(X.shape[1] + int(self.fit_intercept), 1.0 / self.C)
        if self.fit_intercept and not self.intercept_penalized_:
            ridge[-1] = 0.0
        return SoftmaxDesign(
            X,
            self.predict_proba(X),
            machine_codes,
            human_codes,
            act_weight,
            sample_weight=sample_weight,
            free_classes=slice(1, 2) if self.classes_.size == 2 else slice(None),
            fit_intercept=self.fit_intercept,
            ridge=ridge,
        )

    def _label_codes(self, y, machine_labels, act_weight, power):
        """Set ``classes_``; return the class indices of ``y``, or the ACT design.

        The design is a tuple ``(machine_codes, human_codes, act_weight)`` of
        class indices into ``classes_`` (``human_codes`` 0 where unreviewed).
        """
        machine_labels, act_weight, reviewed = check_act_design(y, machine_labels, act_weight, power)
        if machine_labels is None:
            check_classification_targets(y)
            self.classes_, codes = np.unique(y, return_inverse=True)
            if self.classes_.size < 2:
                raise ValueError(
                    "ACTLogisticRegression needs samples of at least 2 classes, but the data "
                    f"contains only one class: {self.classes_[0]!r}."
                )
            return codes

        self.classes_ = np.unique(np.concatenate([machine_labels, y[reviewed]]))
        check_classification_targets(self.classes_)
        if self.classes_.size < 2:
            raise ValueError(
                f"ACTLogisticRegression needs at least 2 classes among the machine and "
                f"human labels; found {self.classes_!r}."
            )
        machine_codes = np.searchsorted(self.classes_, machine_labels)
        human_codes = np.zeros_like(machine_codes)
        human_codes[reviewed] = np.searchsorted(self.classes_, y[reviewed])
        return machine_codes, human_codes, act_weight

    @staticmethod
    def _logits(scores):
        """Class logits from scores: the binary model fixes the first class at 0."""
        if scores.shape[1] == 1:
            return np.hstack([np.zeros_like(scores), scores])
        return scores

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        return tags

    def predict_proba(self, X):
        """Class probabilities, columns in the order of ``classes_``.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)

        Returns
        -------
        proba : ndarray of shape (n_samples, n_classes)
        """
        check_is_fitted(self)
        scores = self.decision_function(X)
        if scores.ndim == 1:
            positive = expit(scores)
            return np.column_stack([1 - positive, positive])
        return softmax(scores, axis=1)

    def predict_log_proba(self, X):
        """Logarithm of :meth:`predict_proba`."""
        return np.log(self.predict_proba(X))

    def _quantiles(self, directions, variance, confidence, population):
        """Student's t quantiles for the variances of ``directions @ params`` (Satterthwaite's degrees of freedom).

        The design part of each variance rests on the reviewed items with
        ``pi < 1`` and gets their degrees of freedom; the population part (with
        ``population=True``) rests on every reviewed item and is counted as exact.
        """
        design_variance = np.einsum("ij,jk,ik->i", directions, self.coef_covariance_, directions)
        df = design_degrees_of_freedom(self.design_influence_, directions)
        with np.errstate(divide="ignore", invalid="ignore"):
            # Satterthwaite for a sum: (V_design + V_population)^2 / (V_design^2 / df)
            df = np.where(design_variance > 0, variance**2 * df / np.where(design_variance > 0, design_variance, 1.0)**2,
                          np.inf) if population else df
        return student_t.ppf(0.5 + confidence / 2, np.maximum(df - 1, 1.0))

    def _covariance(self, population):
        check_is_fitted(self)
        covariance = self.coef_covariance_population_ if population else self.coef_covariance_
        if covariance is None:
            if self.power_ is None:
                raise ValueError(
                    "intervals are for a fit on the ACT design: pass machine_labels and act_weight to fit "
                    "(ACTClassifier does) so that the review design's uncertainty is known."
                )
            if not self.compute_intervals:
                raise ValueError(
                    "this model was fitted without intervals: pass compute_intervals=True (it forms the n x p^2 "
                    "Hessian at fit, about as long as the fit itself)."
                )
            if self.clipped_:
                raise ValueError(
                    "intervals need the exact ACT loss, and clip bounded or spread some negative weights of this fit "
                    "(a biased loss); fit ACTLogisticRegression(clip=None), with power='auto' to keep its variance "
                    "down."
                )
            raise ValueError(
                f"intervals need the dense covariance, computed only up to {DENSE_LIMIT} parameters; this model "
                f"has {self._params().size}. Reduce the features (for example with PCA)."
            )
        return covariance

    def confidence_interval(self, function, confidence=0.9, *, population=False):
        """Interval for any smooth function of the fitted parameters (delta method).

        Parameters
        ----------
        function : callable
            ``function(coef, intercept) -> array``, with arrays shaped like
            ``coef_`` and ``intercept_``.
        confidence : float in (0, 1), default=0.9
        population : bool, default=False
            False: the uncertainty about what the full-human fit on the same items
            would give (only the review design is random). True: about the
            population value (the items are a sample too).

        Returns
        -------
        estimate, low, high : ndarrays shaped like ``function``'s output
        """
        if not 0 < confidence < 1:
            raise ValueError(f"confidence must lie in (0, 1); got {confidence!r}.")
        covariance = self._covariance(population)
        params = self._params()
        n_rows, n_features = self.coef_.shape

        def evaluate(flat):
            matrix = flat.reshape(n_rows, -1)
            intercept = matrix[:, n_features] if self.fit_intercept else np.zeros(n_rows)
            return np.asarray(function(matrix[:, :n_features], intercept), dtype=float)

        estimate = evaluate(params)
        # central differences: one pair of evaluations per parameter
        steps = 1e-5 * np.maximum(1.0, np.abs(params))
        jacobian = np.empty((estimate.size, params.size))
        for j, step in enumerate(steps):
            shifted = params.copy()
            shifted[j] += step
            upper = evaluate(shifted).ravel()
            shifted[j] -= 2 * step
            jacobian[:, j] = (upper - evaluate(shifted).ravel()) / (2 * step)
        variance = np.einsum("ij,jk,ik->i", jacobian, covariance, jacobian)
        quantiles = self._quantiles(jacobian, variance, confidence, population)
        half_width = (quantiles * np.sqrt(np.maximum(variance, 0.0))).reshape(estimate.shape)
        return estimate, estimate - half_width, estimate + half_width

    def coef_ci(self, confidence=0.9, *, population=False):
        """Confidence intervals for ``coef_`` and ``intercept_`` under the ACT design.

        From the sandwich covariance ``H^-1 V H^-1`` of the ACT estimating
        equation (:mod:`act_sklearn.stats.estimating_equation`), with Student's t
        quantiles whose degrees of freedom say how many reviewed items each
        variance rests on (Satterthwaite): where a few explored items carry it,
        the interval widens as it must.

        Parameters
        ----------
        confidence : float in (0, 1), default=0.9
        population : bool, default=False
            See :meth:`confidence_interval`.

        Returns
        -------
        CoefficientIntervals
            ``coef_low``, ``coef_high`` (shaped like ``coef_``), ``intercept_low``,
            ``intercept_high`` (shaped like ``intercept_``) and ``confidence``.
        """
        if not 0 < confidence < 1:
            raise ValueError(f"confidence must lie in (0, 1); got {confidence!r}.")
        variance = np.maximum(np.diag(self._covariance(population)), 0.0)
        half_width = self._quantiles(np.eye(variance.size), variance, confidence, population) * np.sqrt(variance)
        params = self._params()
        n_rows, n_features = self.coef_.shape
        low = (params - half_width).reshape(n_rows, -1)
        high = (params + half_width).reshape(n_rows, -1)
        if self.fit_intercept:
            intercept_low, intercept_high = low[:, n_features], high[:, n_features]
        else:
            intercept_low = intercept_high = np.zeros(n_rows)
        return CoefficientIntervals(
            low[:, :n_features], high[:, :n_features], intercept_low, intercept_high, confidence
        )

    def predict_proba_ci(self, X, confidence=0.9, *, population=False):
        """Class probabilities with pointwise confidence intervals (delta method).

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
        confidence : float in (0, 1), default=0.9
        population : bool, default=False
            See :meth:`confidence_interval`.

        Returns
        -------
        proba, low, high : ndarrays of shape (n_samples, n_classes)
        """
        check_is_fitted(self)
        X = validate_data(self, X, accept_sparse=["csr", "csc"], dtype=np.float64, reset=False)

        def probabilities(coef, intercept):
            scores = np.asarray(X @ coef.T) + intercept
            return softmax(self._logits(scores), axis=1)

        proba, low, high = self.confidence_interval(probabilities, confidence, population=population)
        return proba, np.clip(low, 0.0, 1.0), np.clip(high, 0.0, 1.0)
