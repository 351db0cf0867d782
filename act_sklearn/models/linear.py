"""ACTLogisticRegression: multinomial logistic regression that trains on the ACT design."""

import numbers
import warnings

import numpy as np
from scipy.optimize import minimize
from scipy.special import expit, softmax
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import (
    check_is_fitted,
    validate_data,
)

from .._sklearn_compat import Interval, LinearClassifierMixin, _check_sample_weight, _fit_context
from ..stats.loss import SoftTargetCrossEntropy, act_soft_targets
from ._design import check_act_design


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
    clip : float >= 0 or None, default=None
        ACT design only: bound on the negative machine-label target weight
        (:func:`act_sklearn.stats.act_soft_targets`). None is the exact, unbiased
        ACT loss; ``clip=1`` kept every explore > 0 configuration above
        machine-label training in ``benchmarks/quality.py``, where the exact loss
        fell below it at small budgets. No effect on ordinary labels.

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
    }

    def __init__(self, C=1.0, *, fit_intercept=True, tol=1e-4, max_iter=100, clip=None):
        self.C = C
        self.fit_intercept = fit_intercept
        self.tol = tol
        self.max_iter = max_iter
        self.clip = clip

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
        power : float in [0, 1], default=1.0
            Weight of the machine-label term.

        Returns
        -------
        self : object
        """
        X, y = validate_data(
            self, X, y, accept_sparse=["csr", "csc"], dtype=np.float64, y_numeric=False
        )
        sample_weight = _check_sample_weight(sample_weight, X, dtype=np.float64)
        targets = self._targets(y, machine_labels, act_weight, power)

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
            np.zeros(n_rows * n_params),
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
        return self

    def _targets(self, y, machine_labels, act_weight, power):
        """Set ``classes_`` and build one-hot or signed soft targets."""
        machine_labels, act_weight, reviewed = check_act_design(y, machine_labels, act_weight, power)
        if machine_labels is None:
            check_classification_targets(y)
            self.classes_, codes = np.unique(y, return_inverse=True)
            if self.classes_.size < 2:
                raise ValueError(
                    "ACTLogisticRegression needs samples of at least 2 classes, but the data "
                    f"contains only one class: {self.classes_[0]!r}."
                )
            targets = np.zeros((codes.size, self.classes_.size))
            targets[np.arange(codes.size), codes] = 1.0
            return targets

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
        return act_soft_targets(
            machine_codes, human_codes, act_weight, self.classes_.size, power, self.clip
        )

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
