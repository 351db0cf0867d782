"""ACTNeuralNetClassifier: any torch module, trained through skorch on the ACT loss.

The only module of act_sklearn that imports torch or skorch; import it (or
``act_sklearn.ACTNeuralNetClassifier``) only when you need it.
"""

try:
    import skorch  # noqa: F401  (fail here, with the message below, if it is missing)
    import torch
    import torch.nn.functional as F
except ImportError as error:  # pragma: no cover - exercised with the modules hidden
    raise ImportError(
        "ACTNeuralNetClassifier needs torch and skorch. Install torch first, pinned "
        "(`pip install torch==2.13.0`; an unpinned torch pulls gigabytes of CUDA "
        "packages on machines without a GPU), then `pip install 'act-sklearn[torch]'`."
    ) from error

import numbers

import numpy as np
from skorch.callbacks import EpochScoring
from skorch.classifier import NeuralNetClassifier
from skorch.dataset import ValidSplit
from skorch.utils import to_numpy

from ..stats.estimating_equation import SoftmaxDesign, tuned_power
from ._design import check_act_design
from .neighbor_spread import act_targets

__all__ = ["ACTCrossEntropyLoss", "ACTNeuralNetClassifier"]


class ACTCrossEntropyLoss(torch.nn.CrossEntropyLoss):
    """Cross-entropy on logits that also takes the ACT's signed soft targets.

    With class indices as targets it is ``torch.nn.CrossEntropyLoss``. With a
    float target ``q`` of shape (batch, n_classes) (see
    :func:`act_sklearn.stats.act_soft_targets`) it is the ACT loss
    ``mean_i( -q_i . log_softmax(z_i) ) = mean_i( sum(q_i) * logsumexp(z_i) - q_i . z_i )``,
    which allows the negative entries that ``torch``'s probability targets do
    not promise to handle. Subclassing ``CrossEntropyLoss`` tells skorch to apply
    softmax in ``predict_proba``.
    """

    def forward(self, input, target):
        if target.dim() == input.dim() and target.is_floating_point():
            per_item = -(target.to(input.dtype) * F.log_softmax(input, dim=-1)).sum(dim=-1)
            if self.reduction == "none":
                return per_item
            return per_item.sum() if self.reduction == "sum" else per_item.mean()
        return super().forward(input, target)


def _act_accuracy(net, X, y):
    """Validation accuracy; under the ACT design an unbiased estimate of it.

    With signed soft targets ``q``, ``mean_i q_i[prediction_i]`` has expectation
    ``mean_i 1[prediction_i = human label_i]`` for every ``power`` (E[w] = 1), so
    it estimates the accuracy against human labels that were mostly never read.
    Single draws can leave [0, 1] when some weights are large.
    """
    predicted = net.predict_proba(X).argmax(axis=1)
    targets = to_numpy(y)
    if targets.ndim == 2:
        return float(np.mean(targets[np.arange(predicted.size), predicted]))
    return float(np.mean(targets == predicted))


class ACTNeuralNetClassifier(NeuralNetClassifier):
    """A skorch classifier whose loss is the ACT loss on signed soft targets.

    Fit it on ordinary labels (plain cross-entropy, exactly what skorch's
    ``NeuralNetClassifier(criterion=torch.nn.CrossEntropyLoss)`` does) or on the
    ACT design, which is what :class:`~act_sklearn.ACTClassifier` passes::

        fit(X, y, machine_labels=m, act_weight=xi / pi, power=lam)

    Then each item's target is ``q = lam * (1 - w) * onehot(m) + w * onehot(h)``
    (``w = xi / pi``), negative at the machine label of an item reviewed with
    ``pi < 1`` (see :func:`act_sklearn.stats.act_soft_targets`).

    The module must return **logits** (unnormalised class scores of shape
    (batch, n_classes)), as for ``torch.nn.CrossEntropyLoss``; ``predict_proba``
    applies softmax. All of skorch's parameters (``optimizer``, ``lr``,
    ``max_epochs``, ``batch_size``, ``device``, ``callbacks``, ``module__*``, ...)
    work as in ``NeuralNetClassifier``.

    Parameters
    ----------
    module : torch module class or instance
        Returns logits.
    clip : float >= 0 or None, default=0.5
        Bound on the negative target weight of a reviewed item's machine label:
        ``q <- max(q, -clip)``. The exact ACT loss (None) is unbiased for the
        full-human loss, but its negative weights reach ``1 - 1/pi``: -199 for
        ``pi = 0.005``, as the normalize rule and explore give small-``pi`` items.
        A network's loss is then unbounded below: it keeps lowering the loss by
        pushing those few items' machine-label logits towards minus infinity, and
        test accuracy falls as the training loss runs negative (the ACT paper's
        normalize collapse; ``benchmarks/torch_stability.py``). ``clip=c`` bounds
        each item's pull on its machine label to ``c`` times that of one ordinary
        label, a little bias for a large cut in variance; ``clip=0`` drops the
        negative part, so the loss is a non-negative weighted cross-entropy
        (bounded below). Use a clip whenever some reviewed item has ``pi < 1``:
        explore > 0, or the normalize, sigmoid and sqrt rules; hence the default
        0.5, the linear model's (``benchmarks/quality.py``: on the digits MLP the
        cut at -0.5 left 12 of 70 configurations with a seed below machine-label
        training where -1 left 18, and the spread below 3). None (the exact loss)
        is opt-in. No effect on ordinary labels or where every ``pi`` is 0 or 1.
    spread_to_neighbors : bool, default=True
        With a ``clip``: take each negative machine-label weight from the
        unreviewed items nearest to the reviewed item (Euclidean, in ``X``
        flattened to one row per item) that share its machine label, at most
        ``clip * power`` from each, instead of cutting it at ``-clip``
        (:func:`act_sklearn.models.neighbor_spread.spread_to_neighbors`; every
        target weight then stays non-negative), as ``ACTLogisticRegression``
        does. On the digits MLP it raised the mean test accuracy over the cut
        from 89.54% to 90.65% (``benchmarks/quality.py``). Needs ``X`` as an
        array or tensor; other inputs (dicts, datasets) get the cut.
    criterion : torch criterion class, default=ACTCrossEntropyLoss
    train_split : callable or None, default=ValidSplit(5, stratified=True)
        skorch's validation split (stratified on the final labels under the ACT
        design); None trains on every item, which ACT usually wants, since each
        held-out item is a human label not learnt from.
    verbose : int, default=0
        skorch's epoch table is printed for ``verbose >= 1``; silent by default,
        like scikit-learn's estimators.
    classes : array-like or None, default=None
        The label set; inferred from the labels (machine and human) when None.
    **kwargs
        Any other ``NeuralNetClassifier`` parameter.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        Class labels; column ``k`` of ``predict_proba`` is ``classes_[k]``.
    module_, optimizer_, criterion_, history_ : skorch's fitted components.
    power_ : float or None
        The power trained with under the ACT design (tuned with ``power="auto"``);
        None on ordinary labels.

    Notes
    -----
    ``history_`` records ``train_loss`` (the ACT loss of the training batches)
    and, with a ``train_split``, ``valid_loss`` and ``valid_acc``; under the ACT
    design both validation figures are inverse-probability-weighted estimates of
    their values against human labels.

    Examples
    --------
    >>> import torch
    >>> from sklearn.datasets import load_digits
    >>> from act_sklearn import ACTNeuralNetClassifier
    >>> X, y = load_digits(return_X_y=True)
    >>> X = (X / 16).astype("float32")
    >>> module = torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10))
    >>> _ = torch.manual_seed(0)
    >>> net = ACTNeuralNetClassifier(module, optimizer=torch.optim.Adam, lr=0.01,
    ...                              max_epochs=5, train_split=None)
    >>> net = net.fit(X, y)
    >>> net.score(X, y) > 0.9
    True
    """

    def __init__(
        self,
        module,
        *args,
        clip=0.5,
        spread_to_neighbors=True,
        criterion=ACTCrossEntropyLoss,
        train_split=ValidSplit(5, stratified=True),
        verbose=0,
        **kwargs,
    ):
        super().__init__(
            module, *args, criterion=criterion, train_split=train_split, verbose=verbose, **kwargs
        )
        self.clip = clip
        self.spread_to_neighbors = spread_to_neighbors

    @property
    def _default_callbacks(self):
        callbacks = dict(super()._default_callbacks)
        callbacks["valid_acc"] = EpochScoring(_act_accuracy, name="valid_acc", lower_is_better=False)
        return list(callbacks.items())

    def fit(self, X, y, *, machine_labels=None, act_weight=None, power=1.0, **fit_params):
        """Initialise and train on ordinary labels, or on the ACT design.

        Parameters
        ----------
        X : input data skorch accepts (arrays, tensors, dicts of them, ...)
        y, machine_labels, act_weight, power
            The labels and the ACT design, as in :meth:`ACTLogisticRegression.fit
            <act_sklearn.ACTLogisticRegression.fit>` (``y`` is read only where ``act_weight > 0``).
            ``power="auto"`` trains at ``lam = 1``, tunes ``lam`` on the last
            ``Linear`` layer (its inputs as features: the PPI++ plug-in of a
            linear softmax model on them) and trains again from scratch with it.
        **fit_params : dict
            Passed to the module's ``forward`` and to ``train_split``, as in skorch.

        Returns
        -------
        self : object
        """
        tune = isinstance(power, str) and power == "auto" and machine_labels is not None
        self.power_ = None if machine_labels is None else (1.0 if tune else power)
        self._fit_from_start(X, y, machine_labels, act_weight, self.power_, fit_params)
        if tune:
            # PPI++ on the last layer: the power that minimises the variance of its
            # estimating equation at the lam = 1 fit; then train again from scratch
            self.power_ = tuned_power(self._last_layer_design(X, y, machine_labels, act_weight))
            self._fit_from_start(X, y, machine_labels, act_weight, self.power_, fit_params)
        return self

    def _fit_from_start(self, X, y, machine_labels, act_weight, power, fit_params):
        if not self.warm_start or not self.initialized_:
            self.initialize()
            self.__dict__.pop("classes_inferred_", None)  # a fresh fit learns the label set anew
        return self.partial_fit(
            X,
            y,
            machine_labels=machine_labels,
            act_weight=act_weight,
            power=1.0 if power is None else power,
            _routing_method="fit",
            **fit_params,
        )

    def _last_layer_design(self, X, y, machine_labels, act_weight):
        """The ACT design of the last ``Linear`` layer, on the inputs it receives.

        A network whose last layer is not a ``Linear`` onto the classes is
        treated as a bias on the logits (gradients ``p - onehot`` alone).
        """
        linear_layers = [m for m in self.module_.modules() if isinstance(m, torch.nn.Linear)]
        last = linear_layers[-1] if linear_layers else None
        captured = []
        if last is not None and last.out_features == self.classes_.size:
            handle = last.register_forward_hook(lambda module, inputs, output: captured.append(inputs[0].detach()))
        else:
            handle = None
        try:
            proba = self.predict_proba(X)
        finally:
            if handle is not None:
                handle.remove()
        if captured:
            features, fit_intercept = to_numpy(torch.cat(captured)).astype(float), last.bias is not None
        else:
            features, fit_intercept = np.zeros((proba.shape[0], 0)), True
        y = np.asarray(to_numpy(y) if torch.is_tensor(y) else y)
        machine_labels, act_weight, reviewed = check_act_design(y, machine_labels, act_weight, "auto")
        human_codes = np.zeros(y.shape[0], dtype=np.int64)
        human_codes[reviewed] = self._codes(y[reviewed], "y (reviewed items)")
        return SoftmaxDesign(
            features,
            proba,
            self._codes(machine_labels, "machine_labels"),
            human_codes,
            act_weight,
            fit_intercept=fit_intercept,
            ridge=1e-8 * proba.shape[0],
        )

    def partial_fit(
        self, X, y, classes=None, *, machine_labels=None, act_weight=None, power=1.0, **fit_params
    ):
        """Train further (no re-initialisation); arguments as in :meth:`fit`.

        ``classes`` (all labels, for the first call) fixes the label set when
        ``classes`` was not given at construction.

        Returns
        -------
        self : object
        """
        if isinstance(power, str):
            raise ValueError(
                f"partial_fit takes power as a number in [0, 1], got {power!r}: power='auto' tunes the power "
                "on a fit from scratch. Use fit(..., power='auto'), then partial_fit(..., power=net.power_)."
            )
        if classes is not None and self.classes is None:
            self.classes_inferred_ = np.unique(np.asarray(classes))
        targets = self._targets(y, machine_labels, act_weight, power, self._neighbor_features(X))
        return super().partial_fit(X, targets, **fit_params)

    def _neighbor_features(self, X):
        """``X`` as one row per item for the neighbour spread; None where it cannot be (the cut)."""
        if not self.spread_to_neighbors or not (isinstance(X, np.ndarray) or torch.is_tensor(X)):
            return None
        X = to_numpy(X) if torch.is_tensor(X) else X
        return X.reshape(X.shape[0], -1)

    def check_data(self, X, y):
        # The label set is learnt in _targets, before labels become targets.
        if y is None:
            raise ValueError(
                f"{type(self).__name__} needs y: pass labels (or human labels with the "
                "ACT design) to fit."
            )

    def get_split_datasets(self, X, y=None, **fit_params):
        """skorch's split, stratified on the final labels under the ACT design."""
        dataset = self.get_dataset(X, y)
        if not self.train_split:
            return dataset, None
        # argmax of the signed targets is the human label where reviewed, else the machine one
        labels = to_numpy(y).argmax(axis=1) if torch.is_tensor(y) and y.dim() == 2 else y
        return self.train_split(dataset, labels, **fit_params)

    def _targets(self, y, machine_labels, act_weight, power, features=None):
        """Class indices (ordinary labels) or a float32 tensor of signed soft targets (ACT design)."""
        y = np.asarray(to_numpy(y) if torch.is_tensor(y) else y)
        if y.ndim != 1:
            raise ValueError(
                f"y must be 1-d labels; got shape {y.shape}. Pass class labels, not "
                "one-hot or probability rows."
            )
        machine_labels, act_weight, reviewed = check_act_design(y, machine_labels, act_weight, power)
        if machine_labels is None:
            self._learn_classes(y)
            return self._codes(y, "y")

        if self.clip is not None and not (isinstance(self.clip, numbers.Real) and self.clip >= 0):
            raise ValueError(f"clip must be None or a non-negative float; got {self.clip!r}.")
        self._learn_classes(np.concatenate([machine_labels, y[reviewed]]))
        machine_codes = self._codes(machine_labels, "machine_labels")
        human_codes = np.zeros_like(machine_codes)
        human_codes[reviewed] = self._codes(y[reviewed], "y (reviewed items)")
        targets = act_targets(
            machine_codes, human_codes, act_weight, self.classes_.size, power, self.clip, features
        )
        # A tensor, not an array: the DataLoader then stacks row views once per batch
        # instead of converting every item's row (measured: 10-18% of an MLP epoch).
        return torch.from_numpy(targets.astype(np.float32))

    def _learn_classes(self, labels):
        if self.classes is None and not hasattr(self, "classes_inferred_"):
            self.classes_inferred_ = np.unique(labels)

    def _codes(self, labels, name):
        classes = self.classes_  # user-given classes need not be sorted
        order = np.argsort(classes)
        positions = np.searchsorted(classes, labels, sorter=order)
        codes = order[np.minimum(positions, classes.size - 1)]
        unknown = classes[codes] != labels
        if np.any(unknown):
            raise ValueError(
                f"{name} holds labels outside classes_ {classes.tolist()}: "
                f"{np.unique(labels[unknown]).tolist()[:5]}. Pass every label in "
                "`classes` (or to the first partial_fit)."
            )
        return codes.astype(np.int64)

    def predict(self, X):
        """Class labels (from ``classes_``) of the largest predicted probability.

        Parameters
        ----------
        X : input data skorch accepts

        Returns
        -------
        y_pred : ndarray of shape (n_samples,)
        """
        proba = self.predict_proba(X)  # raises NotFittedError before classes_ is read
        return self.classes_[proba.argmax(axis=1)]

