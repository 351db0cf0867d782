"""The variance of the ACT estimating equation of a softmax model: tuned power, coefficient covariance.

A softmax model with parameters ``theta`` (one row of weights per free class over
features ``x~ = [x, 1]``) trained with the ACT loss solves

    sum_i s_i [ lam g_m,i + w_i (g_h,i - lam g_m,i) ] = 0,

with ``g_c,i = (p_i - onehot(c_i))_free (x) x~_i`` the gradient of the per-item
cross-entropy at label ``c`` (machine ``m`` or human ``h``), ``w_i = xi_i / pi_i``
and ``s_i`` the sample weights. The full-human fit on the same items solves
``sum_i s_i g_h,i = 0``, so to first order

    theta_act - theta_human = -H^-1 sum_i (w_i - 1) s_i (g_h,i - lam g_m,i),

with ``H = sum_i s_i (diag p_i - p_i p_i^T)_free (x) x~_i x~_i^T + ridge`` (the
expected Hessian: it does not depend on the labels). Under the review design
(Poisson form) the covariance of the sum is ``sum_i (1 - pi_i) / pi_i psi_i psi_i^T``
with ``psi_i = s_i (g_h,i - lam g_m,i)``, estimated without bias by
Horvitz-Thompson over the reviewed items: ``sum_i xi_i (1 - pi_i) / pi_i^2 ...``,
and ``(1 - pi) / pi^2 = w (w - 1)``.

**Tuned power** (PPI++, Angelopoulos et al. 2023; active inference, Zrnic & Candes
2024). The ``lam`` minimising ``Tr(H^-1 Cov H^-1)`` is::

    lam_hat = sum_i w_i (w_i - 1) s_i^2 <H^-1 g_h,i, H^-1 g_m,i>
              / sum_i w_i (w_i - 1) s_i^2 ||H^-1 g_m,i||^2,      clipped to [0, 1].

This is the plug-in ``Tr(H^-1 Cov(A, B) H^-1) / Tr(H^-1 Var(A) H^-1)`` of
``ppi_py.ppi._calc_lam_glm`` with ``A_i = g_m,i (w_i - 1)`` and ``B_i = g_h,i w_i``,
written in its design-based form: ``E[(w - 1) w | x] = E[(w - 1)^2 | x] = (1 - pi) / pi``,
so both moments are estimated over the reviewed items only. Unlike the sample
covariance of ``A`` and ``B`` it stays meaningful where some ``pi`` are 0 or 1 (the
threshold rule): items reviewed with certainty carry no design variance, and
where no reviewed item has ``pi < 1`` there is nothing to tune and ``lam = 1``.

Up to ``DENSE_LIMIT`` parameters ``H`` is formed and inverted (pseudo-inverse:
the softmax Hessian is singular along directions no gradient has); above it
``H`` is replaced by its diagonal, which costs one pass over the data and works
on sparse features (no coefficient covariance then).

**Coefficient covariance** (active M-estimation). ``Cov(theta_act - theta_human)
= H^-1 V H^-1`` with ``V = sum_i xi_i w_i (w_i - 1) psi_i psi_i^T``, the Poisson form
above: the uncertainty about the full-human fit on these items. For the
fixed-size design it is conservative (fixing the sample size removes the
variance along the mean of ``psi / pi``); Deville's fixed-size estimator was
measured narrower and covered less often where few explored items carry the
variance (``benchmarks/power_tuning.py``). Adding
``H^-1 (sum_i xi_i w_i s_i^2 g_h,i g_h,i^T) H^-1`` (the sandwich of the full-human
fit, estimated from the reviewed items) gives the covariance around the
population coefficients.

**Degrees of freedom.** ``V`` is a sum over the reviewed items with ``pi < 1``,
and where few of them carry it (threshold with a small explore share: a few
dozen explored items of weight 50; ``lam = 1``: only those whose machine label
was wrong) its estimate is as uncertain as a variance from a handful of
observations. The intervals then use Student's t with Satterthwaite's degrees
of freedom ``(sum a_i)^2 / sum a_i^2 - 1`` of the item contributions ``a_i`` to the
variance of the quantity asked for (:func:`design_degrees_of_freedom`). Measured
with ``benchmarks/power_tuning.py`` (seven scenarios, 200 review draws each, the
two outside the band drawn again 1000 times): the coverage of 90% ``coef_ci``
went from 73-94% with normal quantiles to 86.2-94.0% (median degrees of freedom
5 to 83).
"""

import numpy as np
import scipy.sparse as sp

DENSE_LIMIT = 1000  # parameters up to which H is formed and inverted (cost ~ n * p^2)


class SoftmaxDesign:
    """Per-item gradients of a fitted softmax model under the ACT design.

    Parameters
    ----------
    features : {ndarray, sparse matrix} of shape (n_samples, n_features)
        The model's inputs (the last layer's inputs for a network), without the
        intercept column.
    proba : ndarray of shape (n_samples, n_classes)
        The fitted model's class probabilities.
    machine_codes, human_codes : ndarray of int, shape (n_samples,)
        Class indices of the machine and human labels (``human_codes`` read only
        where ``act_weight > 0``).
    act_weight : ndarray of shape (n_samples,)
        ``xi / pi``, 0 for unreviewed items.
    sample_weight : ndarray of shape (n_samples,) or None
    free_classes : slice or array of int, default=slice(None)
        Columns of ``proba`` that have parameters (``slice(1, 2)`` for the binary
        logistic model, which fixes the first class's score at 0).
    fit_intercept : bool, default=True
    ridge : float or ndarray of shape (n_features + fit_intercept,), default=0.0
        L2 strength per feature (0 for an unpenalised intercept), added to ``H``
        with the scaling of the sums above (``1 / C`` for scikit-learn's ``C``).
    """

    def __init__(
        self,
        features,
        proba,
        machine_codes,
        human_codes,
        act_weight,
        *,
        sample_weight=None,
        free_classes=slice(None),
        fit_intercept=True,
        ridge=0.0,
    ):
        n_samples = proba.shape[0]
        if fit_intercept:
            ones = np.ones((n_samples, 1))
            features = sp.hstack([features, ones], format="csr") if sp.issparse(features) else np.hstack([features, ones])
        self.features = features
        self.proba = np.asarray(proba, dtype=float)[:, free_classes]
        self.free_codes = np.arange(proba.shape[1])[free_classes]
        self.machine_codes = np.asarray(machine_codes)
        self.human_codes = np.asarray(human_codes)
        self.act_weight = np.asarray(act_weight, dtype=float)
        self.sample_weight = np.ones(n_samples) if sample_weight is None else np.asarray(sample_weight, dtype=float)
        self.ridge = np.broadcast_to(np.asarray(ridge, dtype=float), (features.shape[1],))

    @property
    def n_params(self):
        return self.proba.shape[1] * self.features.shape[1]

    def residuals(self, codes, rows=slice(None)):
        """``(p_i - onehot(c_i))`` over the free classes: the gradient's class part."""
        residual = self.proba[rows].copy()
        residual -= np.asarray(codes)[rows, None] == self.free_codes[None, :]
        return residual

    def hessian(self):
        """``H`` as a dense (p, p) array, rows ordered class by class, then feature."""
        n_free, n_features = self.proba.shape[1], self.features.shape[1]
        hessian = np.empty((n_free, n_features, n_free, n_features))
        for k in range(n_free):
            for l in range(k, n_free):
                curvature = self.sample_weight * self.proba[:, k] * ((k == l) - self.proba[:, l])
                block = self.features.T @ (self.features.multiply(curvature[:, None]) if sp.issparse(self.features) else self.features * curvature[:, None])
                block = np.asarray(block.todense() if sp.issparse(block) else block)
                hessian[k, :, l, :] = block
                hessian[l, :, k, :] = block.T
        hessian = hessian.reshape(self.n_params, self.n_params)
        hessian[np.diag_indices_from(hessian)] += np.tile(self.ridge, n_free)
        return hessian

    def hessian_diagonal(self):
        """The diagonal of ``H`` (shape (p,)), in one pass over the data."""
        squared = self.features.multiply(self.features) if sp.issparse(self.features) else self.features**2
        curvature = self.sample_weight[:, None] * self.proba * (1 - self.proba)
        diagonal = np.asarray(squared.T @ curvature).T  # (n_free, n_features)
        return (diagonal + self.ridge).ravel()

    def gradients(self, codes, rows):
        """Dense per-item gradients ``g_c,i`` of the given rows, shape (len(rows), p)."""
        features = self.features[rows]
        features = features.toarray() if sp.issparse(features) else features
        residual = self.residuals(codes, rows)
        return (residual[:, :, None] * features[:, None, :]).reshape(len(rows), self.n_params)

    def reviewed_with_uncertainty(self):
        """Reviewed items with ``pi < 1``: the only ones that carry design variance."""
        return np.flatnonzero(self.act_weight > 1 + 1e-12)


def _pseudo_inverse(hessian):
    values, vectors = np.linalg.eigh(hessian)
    keep = values > values.max() * 1e-10
    return (vectors[:, keep] / values[keep]) @ vectors[:, keep].T


def tuned_power(design):
    """The ``lam`` in [0, 1] that minimises the trace of the ACT estimate's design variance.

    Parameters
    ----------
    design : SoftmaxDesign
        Gradients at a fit with any power (``lam = 1`` in ``ACTLogisticRegression``).

    Returns
    -------
    power : float
        1.0 where no reviewed item has ``pi < 1`` (nothing to tune).
    """
    rows = design.reviewed_with_uncertainty()
    if rows.size == 0:
        return 1.0
    weight, scale = design.act_weight[rows], design.sample_weight[rows]
    variance_weight = weight * (weight - 1) * scale**2
    if design.n_params <= DENSE_LIMIT:
        inverse = _pseudo_inverse(design.hessian())
        machine = design.gradients(design.machine_codes, rows) @ inverse
        human = design.gradients(design.human_codes, rows) @ inverse
        numerator = variance_weight @ np.einsum("ij,ij->i", human, machine)
        denominator = variance_weight @ np.einsum("ij,ij->i", machine, machine)
    else:
        # the diagonal of H stands in for H: sum_j g_h,ij g_m,ij / H_jj^2, by sparse products
        inverse_squared = 1.0 / design.hessian_diagonal().reshape(design.proba.shape[1], -1) ** 2
        features = design.features[rows]
        squared = features.multiply(features) if sp.issparse(features) else features**2
        machine = design.residuals(design.machine_codes, rows) * variance_weight[:, None]
        human = design.residuals(design.human_codes, rows)
        numerator = np.sum(np.asarray(squared.T @ (machine * human)).T * inverse_squared)
        denominator = np.sum(
            np.asarray(squared.T @ (machine * design.residuals(design.machine_codes, rows))).T * inverse_squared
        )
    if not denominator > 0:
        return 1.0
    return float(np.clip(numerator / denominator, 0.0, 1.0))


def act_covariance(design, power):
    """Covariances of the fitted parameters under the ACT design (dense ``H`` only).

    Parameters
    ----------
    design : SoftmaxDesign
        Gradients at the fitted solution.
    power : float
        The ``lam`` the fit used.

    Returns
    -------
    around_human_fit : ndarray of shape (p, p)
        ``H^-1 V H^-1``: the design's uncertainty about the full-human fit on these items.
    around_population : ndarray of shape (p, p)
        ``around_human_fit`` plus the full-human fit's own sandwich: the
        uncertainty about the population coefficients.
    design_influence : ndarray of shape (k, p)
        One row per reviewed item with ``pi < 1``: ``sqrt(w (w - 1)) H^-1 psi_i``,
        so that ``around_human_fit = design_influence.T @ design_influence``;
        :func:`design_degrees_of_freedom` reads how many items a variance rests on.
    """
    if design.n_params > DENSE_LIMIT:
        raise ValueError(
            f"the covariance needs a dense {design.n_params} x {design.n_params} Hessian, formed only up to "
            f"{DENSE_LIMIT} parameters; reduce the features (for example with PCA) to get intervals."
        )
    inverse = _pseudo_inverse(design.hessian())
    rows = design.reviewed_with_uncertainty()
    weight, scale = design.act_weight[rows], design.sample_weight[rows]
    psi = scale[:, None] * (
        design.gradients(design.human_codes, rows) - power * design.gradients(design.machine_codes, rows)
    )
    design_influence = (psi @ inverse) * np.sqrt(weight * (weight - 1))[:, None]
    reviewed = np.flatnonzero(design.act_weight > 0)
    human = design.gradients(design.human_codes, reviewed) * design.sample_weight[reviewed, None]
    population_part = (human * design.act_weight[reviewed, None]).T @ human
    around_human_fit = design_influence.T @ design_influence
    return around_human_fit, around_human_fit + inverse @ population_part @ inverse, design_influence


def design_degrees_of_freedom(design_influence, directions):
    """Satterthwaite's degrees of freedom of the design variance of ``directions @ params``.

    The design variance of a linear combination ``c`` of the parameters is the
    sum over the reviewed items with ``pi < 1`` of ``a_i = (B_i c)**2`` (``B``
    the ``design_influence`` of :func:`act_covariance`). When a few items carry
    most of it (a few explored items with large weights, or under ``lam = 1``
    the few of them whose machine label was wrong), the estimated variance is
    as uncertain as a variance from ``(sum a)**2 / sum a**2`` observations, and
    a normal quantile understates the interval; :meth:`coef_ci` and its kin use
    Student's t with that many degrees of freedom, less one (at least one).

    Parameters
    ----------
    design_influence : ndarray of shape (k, p)
    directions : ndarray of shape (m, p)

    Returns
    -------
    df : ndarray of shape (m,)
        ``inf`` where the design variance is 0.
    """
    contributions = (design_influence @ np.asarray(directions, dtype=float).T) ** 2  # (k, m)
    total, squares = contributions.sum(axis=0), (contributions**2).sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(squares > 0, total**2 / np.where(squares > 0, squares, 1.0), np.inf)
