"""Criticizers: estimate, for each (item, machine label) pair, the probability the label is wrong.

A criticizer is any object with ``predict_error_proba(X, labels)`` returning an
array of probabilities in [0, 1], one per item. :class:`ClassifierCriticizer`
builds one from a second, already trained probabilistic classifier (cross-
criticism with a model other than the annotator).
"""

import numpy as np
from sklearn.base import BaseEstimator, _fit_context
from sklearn.utils._param_validation import HasMethods
from sklearn.utils.validation import check_is_fitted


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
