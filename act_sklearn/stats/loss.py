"""The ACT loss: inverse-probability weighting of human corrections.

For a per-item loss ``l_theta``, review indicators ``xi`` drawn with inclusion
probabilities ``pi`` and ``w_i = xi_i / pi_i`` (0 where ``xi_i = 0``)::

    L(theta) = 1/n sum_i [ lam * l(x_i, m_i) + w_i * (l(x_i, h_i) - lam * l(x_i, m_i)) ]

``lam = 1`` is the ACT paper's loss (active M-estimation); ``lam = 0`` is pure
inverse-probability weighting of the human labels. Because ``E[w_i] = 1`` whenever
``pi_i > 0``, ``E[L(theta)]`` is the loss on fully human labels for every ``lam``.
With ``pi`` in {0, 1} (the threshold rule) the loss is plain training on the
corrected labels.

For a softmax model with logits ``z_i`` the loss is cross-entropy against signed
soft targets ``q_i = lam * (1 - w_i) * onehot(m_i) + w_i * onehot(h_i)``::

    L_i = (lam + w_i * (1 - lam)) * logsumexp(z_i) - q_i . z_i

The coefficient of ``logsumexp`` is non-negative, so ``L`` is convex in the
weights of a linear model even where ``q`` has negative entries.

A negative entry, ``-lam * (w_i - 1)`` on the machine label of a reviewed item
the machine got wrong, makes that item's loss unbounded below; with ``pi`` of
0.005 it is -199, and a few such items steer a fit. ``clip`` bounds it: cut at
``-clip``, or (``act_sklearn.models.neighbor_spread``, the models' default)
taken instead from the unreviewed items nearest to the reviewed one with the
same machine label, which the item stands for, so that no entry is negative.
Both trade the exact loss's unbiasedness for a bounded loss.
"""

import numpy as np

from ._checks import raise_for_items


def act_weights(reviewed, inclusion_proba):
    """Inverse-probability weights ``w_i = xi_i / pi_i`` (0 for unreviewed items).

    Raises
    ------
    ValueError
        If a reviewed item has ``inclusion_proba == 0``: such an item could never
        have been drawn, so the design that produced it is not the one given.
    """
    reviewed = np.asarray(reviewed, dtype=bool)
    inclusion_proba = np.asarray(inclusion_proba, dtype=float)
    if reviewed.shape != inclusion_proba.shape:
        raise ValueError(
            f"reviewed has shape {reviewed.shape} but inclusion_proba has shape "
            f"{inclusion_proba.shape}; pass one value per item for both."
        )
    raise_for_items(
        reviewed & ~(inclusion_proba > 0),
        lambda count, first: f"{count} reviewed item(s) have inclusion_proba 0 (the first at index {first}); a "
        "reviewed item needs the probability with which it was selected. Pass the inclusion_proba the sampler produced.",
    )
    weights = np.zeros(reviewed.shape, dtype=float)
    weights[reviewed] = 1.0 / inclusion_proba[reviewed]
    return weights


def act_coefficients(weights, power=1.0):
    """Per-item weights of the machine-label and human-label loss terms.

    Returns ``(machine_coef, human_coef)`` with ``machine_coef = power * (1 - w)``
    (negative where ``w > 1``) and ``human_coef = w``, so that the ACT loss is
    ``mean(machine_coef * l(m) + human_coef * l(h))``.
    """
    weights = np.asarray(weights, dtype=float)
    _check_power(power)
    return power * (1.0 - weights), weights


def act_soft_targets(machine_codes, human_codes, weights, n_classes, power=1.0, clip=None):
    """Signed soft targets ``q`` of shape (n_samples, n_classes).

    Parameters
    ----------
    machine_codes : array-like of int, shape (n_samples,)
        Machine labels as class indices in ``[0, n_classes)``.
    human_codes : array-like of int, shape (n_samples,)
        Human labels as class indices; read only where ``weights > 0``.
    weights : array-like of shape (n_samples,)
        ``w = xi / pi`` from :func:`act_weights`.
    n_classes : int
    power : float in [0, 1], default=1.0
    clip : float >= 0 or None, default=None
        Bound on the negative entries: ``q <- max(q, -clip)``. The negative
        machine-label weight ``power * (1 - w)`` of a reviewed item with a wrong
        machine label reaches -199 for ``pi = 0.005``; a few such items then
        dominate a fit. Clipping trades a little bias (the loss is no longer
        unbiased for the full-human loss) for a large cut in variance. None keeps
        the exact ACT loss.

    Returns
    -------
    targets : ndarray of shape (n_samples, n_classes)
        Rows sum to ``power + w * (1 - power)`` (more where clipped), which is
        non-negative.
    """
    machine_coef, human_coef = act_coefficients(weights, power)
    machine_codes = np.asarray(machine_codes, dtype=np.intp)
    rows = np.arange(machine_codes.size)
    targets = np.zeros((machine_codes.size, n_classes))
    targets[rows, machine_codes] = machine_coef
    has_human = human_coef > 0
    human_codes = np.asarray(human_codes)[has_human].astype(np.intp)
    np.add.at(targets, (rows[has_human], human_codes), human_coef[has_human])
    if clip is not None:
        if not clip >= 0:
            raise ValueError(f"clip must be None or a non-negative float; got {clip!r}.")
        np.maximum(targets, -clip, out=targets)
    return targets


def soft_target_cross_entropy(logits, targets, sample_weight=None):
    """Weighted mean of ``sum(q) * logsumexp(z) - q . z`` and its gradient in ``z``.

    Parameters
    ----------
    logits : ndarray of shape (n_samples, n_classes)
    targets : ndarray of shape (n_samples, n_classes)
        Signed soft targets (:func:`act_soft_targets`) or one-hot labels.
    sample_weight : ndarray of shape (n_samples,) or None

    Returns
    -------
    loss : float
    grad : ndarray of shape (n_samples, n_classes)
        ``d loss / d logits``: ``(sum(q) * softmax(z) - q) * s / sum(s)``.
    """
    return SoftTargetCrossEntropy(targets, sample_weight)(logits)


class SoftTargetCrossEntropy:
    """:func:`soft_target_cross_entropy` for fixed targets, for use inside an optimiser.

    The target-dependent arrays are computed once, and each call makes a single
    pass of ``exp`` and one temporary array: at 100,000 x 10 logits the loss costs
    about as much as the matrix products around it.
    """

    def __init__(self, targets, sample_weight=None):
        targets = np.asarray(targets, dtype=float)
        n_samples = targets.shape[0]
        if sample_weight is None:
            scale = np.full(n_samples, 1.0 / n_samples)
        else:
            scale = np.asarray(sample_weight, dtype=float) / np.sum(sample_weight)
        self._scaled_targets = targets * scale[:, None]
        self._scaled_mass = self._scaled_targets.sum(axis=1)  # s * sum(q) / sum(s)

    def __call__(self, logits):
        row_max = logits.max(axis=1)
        grad = np.subtract(logits, row_max[:, None])
        np.exp(grad, out=grad)
        normalizer = grad.sum(axis=1)
        loss = self._scaled_mass @ (row_max + np.log(normalizer)) - np.vdot(self._scaled_targets, logits)
        grad *= (self._scaled_mass / normalizer)[:, None]
        grad -= self._scaled_targets
        return float(loss), grad


def act_loss(machine_losses, human_losses, weights, power=1.0, sample_weight=None):
    """The ACT loss from per-item losses on machine and human labels.

    ``human_losses`` is read only where ``weights > 0`` (it may hold NaN elsewhere).

    Examples
    --------
    >>> from act_sklearn.stats import act_loss
    >>> act_loss([1.0, 2.0], [0.5, 0.0], weights=[2.0, 0.0])
    1.0
    """
    machine_losses = np.asarray(machine_losses, dtype=float)
    machine_coef, human_coef = act_coefficients(weights, power)
    human_term = np.zeros_like(machine_losses)
    has_human = human_coef > 0
    human_term[has_human] = human_coef[has_human] * np.asarray(human_losses, dtype=float)[has_human]
    per_item = machine_coef * machine_losses + human_term
    if sample_weight is None:
        return float(per_item.mean())
    sample_weight = np.asarray(sample_weight, dtype=float)
    return float(per_item @ sample_weight / sample_weight.sum())


def _check_power(power):
    if not 0.0 <= power <= 1.0:
        raise ValueError(f"power must lie in [0, 1]; got {power!r}.")
