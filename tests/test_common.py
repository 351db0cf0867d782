"""scikit-learn's estimator checks for every public estimator, from one table.

``ESTIMATORS`` holds the instances checked. ``KNOWN_FAILURES`` lists, per
estimator, the checks it is known to fail and why; they run as strict xfails,
so a check that starts passing must leave the table. ``NOT_RUN`` lists the
checks that could not fail for an estimator (they call no method it has, or
return at once for its tags), with what tests the property instead.

Which checks apply:

- estimators on numeric features (``LEGACY``) run all of scikit-learn's checks;
- the others run its API checks (``legacy=False``): the criticizers and
  ``ACTSampler`` have no ``predict`` or ``transform`` for the legacy checks to
  call and read no feature matrix in ``fit``;
- text-input estimators (the LLM and zero-shot components: their tags say
  ``two_d_array=False``) get no check but the clone check from scikit-learn's
  generator, so they run the API checks it yields for a numeric estimator. Their ``fit`` reads
  no X, so the checks that fit pass or fail on their merits; a check that
  labels the numeric matrix it passes is a known failure.

The LLM components talk to a scripted transport (tests/fake_llm.py) with no
cache, never to the network, and each check asserts that no request was sent.
"""

from functools import partial
from importlib.util import find_spec
from unittest import SkipTest

import httpx2
import numpy as np
import pytest
from conftest import require_extra
from fake_llm import FakeLLM
from sklearn.datasets import load_iris
from sklearn.exceptions import NotFittedError
from sklearn.frozen import FrozenEstimator
from sklearn.linear_model import LogisticRegression
from sklearn.utils import get_tags
from sklearn.utils.estimator_checks import estimator_checks_generator

import act_sklearn
from act_sklearn import (
    ACTClassifier,
    ACTLogisticRegression,
    ACTSampler,
    ClassifierCriticizer,
    CriticizerEnsemble,
    LLMBackend,
    MLLMAnnotator,
    MLLMCriticizer,
)
from act_sklearn.offline import ZeroShotAnnotator, ZeroShotCriticizer

# Every request of an LLM component ends here: a check that reached the model
# would get an answer from the script, and fail the no-request assertion.
LLM = FakeLLM()
BACKEND = LLMBackend(
    model="fake-model",
    base_url="http://127.0.0.1:9/v1",
    http_transport=httpx2.MockTransport(LLM),
    cache_path=False,
    max_retries=0,
)
_X, _y = load_iris(return_X_y=True)


def _contiguous_fit(estimator, X, y):
    """``estimator.fit(X, y)``, with ``coef_`` and ``intercept_`` made contiguous.

    Before scikit-learn 1.9, LogisticRegression keeps them as strided views of one
    array. check_estimators_overwrite_params compares ``joblib.hash`` (which hashes
    strides) of a deepcopy made before fit with the parameters after it; deepcopy
    makes the views contiguous, so the check saw a mutation that never happened.
    """
    estimator.fit(X, y)
    estimator.coef_ = np.ascontiguousarray(estimator.coef_)
    estimator.intercept_ = np.ascontiguousarray(estimator.intercept_)
    return estimator


IRIS_CRITIC = ClassifierCriticizer(FrozenEstimator(_contiguous_fit(LogisticRegression(max_iter=1000), _X, _y)))

ESTIMATORS = [
    ACTLogisticRegression(),
    ACTClassifier(),
    ACTSampler(),
    IRIS_CRITIC,
    CriticizerEnsemble([IRIS_CRITIC, MLLMCriticizer(BACKEND, strategy="naive")]),
    MLLMAnnotator(BACKEND),
    MLLMCriticizer(BACKEND),
    # WordLlama for both: it loads in a fraction of a second (the API checks fit often)
    ZeroShotAnnotator(encoder="wordllama"),
    ZeroShotCriticizer(encoder="wordllama"),
]

# What an estimator needs beyond a core install: (a module to import, the extra that installs it).
EXTRAS = {
    "ZeroShotAnnotator": ("wordllama", "demo"),
    "ZeroShotCriticizer": ("wordllama", "demo"),
    "ACTNeuralNetClassifier": ("skorch", "torch"),
}
HAVE_TORCH = find_spec("torch") is not None and find_spec("skorch") is not None

if HAVE_TORCH:
    import torch

    from act_sklearn.models.torch import ACTNeuralNetClassifier

    class ZeroLinearLogits(torch.nn.Module):
        """Logits for three classes from any number of features, of any dtype.

        A torch module has a fixed shape, which the checks' data (2 to 10
        features) cannot match; ``LazyLinear`` takes the width of the first
        batch. Zero weights and skorch's unshuffled batches make training, and
        so the checks' outcomes, deterministic.
        """

        def __init__(self, n_classes=3):
            super().__init__()
            self.linear = torch.nn.LazyLinear(n_classes)

        def forward(self, X):
            X = X.float()
            if isinstance(self.linear.weight, torch.nn.parameter.UninitializedParameter):
                self.linear(X)  # takes the width of X
                with torch.no_grad():
                    self.linear.weight.zero_()
                    self.linear.bias.zero_()
            return self.linear(X)

    ESTIMATORS.append(ACTNeuralNetClassifier(ZeroLinearLogits, max_epochs=2, lr=0.1, train_split=None))

LEGACY = {"ACTLogisticRegression", "ACTClassifier", "ACTNeuralNetClassifier"}

# -- the checks each estimator is known to fail, and why -------------------------------

FITS_ON_ERROR_PROBA = (
    "ACTSampler.fit takes error probabilities in [0, 1], one per item, not a feature "
    "matrix: the check's 2-D features get the ValueError they deserve; "
    "tests/test_sampler.py checks the same property on valid input"
)
LABELS_A_NUMERIC_MATRIX = (
    "score and fit_transform label the check's numeric matrix, which {what} refuses with "
    "an error that says what it reads (tests/test_{module}.py checks the message)"
)
SKORCH_VALIDATES_NOTHING = (
    "skorch hands X to the torch module as it is, without scikit-learn's check_array: "
    "{what}"
)

KNOWN_FAILURES = {
    "ACTClassifier": {
        "check_classifiers_classes": (
            "-1 marks an item no human reviewed (scikit-learn's semi-supervised "
            "convention), so -1 cannot be a class label"
        ),
    },
    "ACTSampler": {
        name: FITS_ON_ERROR_PROBA
        for name in [
            "check_fit_score_takes_y",
            "check_estimators_overwrite_params",
            "check_dont_overwrite_parameters",
            "check_estimators_fit_returns_self",
            "check_readonly_memmap_input",
            "check_n_features_in_after_fitting",
            "check_positive_only_tag_during_fit",
        ]
    },
    **{
        name: {
            "check_n_features_in_after_fitting": (
                "fit reads no X (the classifier is used as it is, already fitted), so there is "
                "no n_features_in_ to record; the classifier checks the features of X itself"
            ),
        }
        for name in ("ClassifierCriticizer", "CriticizerEnsemble")
    },
    "MLLMAnnotator": {
        "check_fit_score_takes_y": LABELS_A_NUMERIC_MATRIX.format(what="an LLM", module="annotator"),
    },
    "ZeroShotAnnotator": {
        "check_fit_score_takes_y": LABELS_A_NUMERIC_MATRIX.format(
            what="a text embedding model", module="zero_shot"
        ),
    },
    "ACTNeuralNetClassifier": {
        "check_no_attributes_set_in_init": (
            "skorch's NeuralNet.__init__ sets history_, initialized_ and virtual_params_"
        ),
        **{
            name: (
                "skorch records no n_features_in_: its X may be a dict of tensors or a torch "
                "Dataset, which have no feature count"
            )
            for name in ("check_n_features_in", "check_n_features_in_after_fitting")
        },
        "check_complex_data": SKORCH_VALIDATES_NOTHING.format(what="complex X is not refused"),
        "check_dtype_object": SKORCH_VALIDATES_NOTHING.format(
            what="an object array of numbers, which check_array converts, reaches torch's "
            "DataLoader as objects"
        ),
        "check_estimators_empty_data_messages": SKORCH_VALIDATES_NOTHING.format(
            what="empty X is not refused"
        ),
        "check_estimators_nan_inf": SKORCH_VALIDATES_NOTHING.format(
            what="NaN or inf in X is not refused"
        ),
        **{
            name: SKORCH_VALIDATES_NOTHING.format(
                what="sparse X fails inside torch, with an error that does not say that sparse "
                "input is not supported"
            )
            for name in (
                "check_estimator_sparse_tag",
                "check_estimator_sparse_array",
                "check_estimator_sparse_matrix",
            )
        },
        "check_estimators_partial_fit_n_features": SKORCH_VALIDATES_NOTHING.format(
            what="a partial_fit on another number of features fails inside torch with a RuntimeError "
            "(a shape mismatch), not scikit-learn's ValueError"
        ),
        "check_fit2d_predict1d": SKORCH_VALIDATES_NOTHING.format(
            what="1-d X reaches the module, whose shape error does not say 'Reshape your data'"
        ),
        "check_classifier_data_not_an_array": (
            "skorch takes arrays, tensors, dicts or Datasets; an array-like without len() is refused"
        ),
        "check_classifiers_train": (
            "skorch reads a list X as one module input per element, not as rows, so "
            "fit(X.tolist(), y) finds X and y of different lengths"
        ),
        "check_classifiers_regression_target": (
            "the label set is np.unique(y), as in skorch: a continuous y becomes one class per value"
        ),
        "check_supervised_y_no_nan": (
            "the label set is np.unique(y), as in skorch: inf in y becomes a class, not an error"
        ),
        "check_supervised_y_2d": (
            "a column y is refused with a ValueError that asks for 1-d labels, where scikit-learn "
            "would warn (DataConversionWarning) and ravel it"
        ),
        "check_requires_y_none": (
            "fit(X, None) says 'ACTNeuralNetClassifier needs y: pass labels ...', not one of the "
            "phrases the check looks for ('requires y to be passed, but the target y is None')"
        ),
        "check_set_params": (
            "skorch lists its bookkeeping attribute _params_to_validate among get_params(); the "
            "check's fuzz sets it to a float, on which set_params then calls .add"
        ),
    },
}

# -- the checks that could not fail for an estimator, and what tests the property ------

NO_METHOD_BEFORE_FIT = (
    "the check calls predict, predict_proba, decision_function and predict_log_proba, "
    "which {what} does not have: it would pass whatever {what} did; {instead}"
)
READS_NO_2D_ARRAY = (
    "the check returns at once for an estimator whose tags say it reads no 2-D array "
    "(input_tags.two_d_array=False)"
)
RETURNS_AT_ONCE = "the check returns at once for an estimator without {what}"
CRITICIZER_UNFITTED = NO_METHOD_BEFORE_FIT.format(
    what="a criticizer", instead="test_criticizers_refuse_to_criticize_before_fit checks predict_error_proba"
)
NOT_RUN = {
    "ACTLogisticRegression": {
        "check_estimators_partial_fit_n_features": RETURNS_AT_ONCE.format(what="partial_fit"),
    },
    "ACTClassifier": {
        "check_estimators_partial_fit_n_features": RETURNS_AT_ONCE.format(what="partial_fit"),
        "check_non_transformer_estimators_n_iter": RETURNS_AT_ONCE.format(what="a max_iter parameter"),
    },
    "ACTNeuralNetClassifier": {
        "check_non_transformer_estimators_n_iter": RETURNS_AT_ONCE.format(
            what="a max_iter parameter (skorch's is max_epochs)"
        ),
        "check_decision_proba_consistency": RETURNS_AT_ONCE.format(what="decision_function"),
    },
    "ACTSampler": {
        "check_estimators_unfitted": NO_METHOD_BEFORE_FIT.format(
            what="ACTSampler", instead="its results are fitted attributes only"
        ),
    },
    "ClassifierCriticizer": {"check_estimators_unfitted": CRITICIZER_UNFITTED},
    "CriticizerEnsemble": {"check_estimators_unfitted": CRITICIZER_UNFITTED},
    "MLLMAnnotator": {"check_n_features_in_after_fitting": READS_NO_2D_ARRAY},
    "MLLMCriticizer": {
        "check_estimators_unfitted": CRITICIZER_UNFITTED,
        "check_n_features_in_after_fitting": READS_NO_2D_ARRAY,
    },
    "ZeroShotAnnotator": {"check_n_features_in_after_fitting": READS_NO_2D_ARRAY},
    "ZeroShotCriticizer": {
        "check_estimators_unfitted": CRITICIZER_UNFITTED,
        "check_n_features_in_after_fitting": READS_NO_2D_ARRAY,
    },
}


# -- the parameters: (estimator, check) pairs -------------------------------------------


def _check_function(check):
    while isinstance(check, partial):
        check = check.func
    return check


def _check_id(check):
    """``check_name`` or ``check_name(keyword=value)``, as scikit-learn names its checks."""
    inner = check.func if isinstance(check, partial) else check  # unbind the estimator's name
    keywords = inner.keywords if isinstance(inner, partial) else {}
    name = _check_function(check).__name__
    return f"{name}({','.join(f'{k}={v}' for k, v in keywords.items())})" if keywords else name


def _api_checks_for_text_input(estimator):
    """scikit-learn's API checks for an estimator that reads text.

    scikit-learn yields none but the clone check where ``input_tags.two_d_array``
    is False; these are the API checks it yields for a numeric estimator, bound
    to ``estimator``'s name.
    """
    name = type(estimator).__name__
    for _, check in estimator_checks_generator(ACTLogisticRegression(), legacy=False):
        if _check_function(check).__name__ == "check_estimators_unfitted" and not get_tags(estimator).requires_fit:
            continue
        yield estimator, partial(check.func, name)


def _needs_torch(estimator):
    """ACTNeuralNetClassifier's checks, where torch or skorch is missing: skip naming the extra."""
    require_extra("torch", "torch")
    require_extra("skorch", "torch")


def _checks(estimator):
    if not get_tags(estimator).input_tags.two_d_array:
        return list(_api_checks_for_text_input(estimator))
    return list(estimator_checks_generator(estimator, legacy=type(estimator).__name__ in LEGACY))


CHECKS = {type(estimator).__name__: _checks(estimator) for estimator in ESTIMATORS}


def _check_params():
    for name, checks in CHECKS.items():
        for estimator, check in checks:
            check_name = _check_function(check).__name__
            if check_name in NOT_RUN.get(name, {}):
                continue
            marks = ()
            if check_name in KNOWN_FAILURES.get(name, {}):
                # raises=Exception: a missing extra's skip, or its failure on CI, is no known failure
                reason = KNOWN_FAILURES[name][check_name]
                marks = pytest.mark.xfail(reason=reason, raises=Exception, strict=True)
            yield pytest.param(estimator, check, marks=marks, id=f"{name}-{_check_id(check)}")
    if not HAVE_TORCH:
        yield pytest.param(None, _needs_torch, id="ACTNeuralNetClassifier-needs-the-torch-extra")


@pytest.mark.parametrize("estimator, check", list(_check_params()))
def test_estimator_check(estimator, check):
    module, extra = EXTRAS.get(type(estimator).__name__, (None, None))
    if module is not None:
        require_extra(module, extra)
    sent = len(LLM.requests)
    try:
        check(estimator)
    except SkipTest as skip:  # scikit-learn's checks of pandas input skip without it
        if "pandas is not installed" in str(skip):
            require_extra("pandas", "test")
        raise
    assert len(LLM.requests) == sent, "an estimator check sent a request to the LLM"


# -- the table itself, and what NOT_RUN points to -----------------------------------------


def test_the_table_holds_every_public_estimator():
    public = {
        name
        for name in act_sklearn.__all__
        if name == "ACTNeuralNetClassifier" or hasattr(getattr(act_sklearn, name), "fit")
    }
    assert set(CHECKS) | {"ACTNeuralNetClassifier"} == public
    listed = set(KNOWN_FAILURES) | set(NOT_RUN) | set(EXTRAS) | LEGACY
    assert listed <= public, f"the tables name estimators that are not public: {listed - public}"


@pytest.mark.parametrize("table", [KNOWN_FAILURES, NOT_RUN], ids=["KNOWN_FAILURES", "NOT_RUN"])
def test_the_tables_name_only_checks_that_scikit_learn_yields(table):
    for name, reasons in table.items():
        if name not in CHECKS:  # ACTNeuralNetClassifier without torch
            continue
        yielded = {_check_function(check).__name__ for _, check in CHECKS[name]}
        assert set(reasons) <= yielded, f"{name}: no such check is yielded: {set(reasons) - yielded}"


CRITICIZERS = [estimator for estimator in ESTIMATORS if hasattr(estimator, "predict_error_proba")]


@pytest.mark.parametrize("criticizer", CRITICIZERS, ids=lambda critic: type(critic).__name__)
def test_criticizers_refuse_to_criticize_before_fit(criticizer):
    sent = len(LLM.requests)
    with pytest.raises(NotFittedError):  # before reading X: any X will do
        criticizer.predict_error_proba(["a post about the moon", "a post about hockey"], [0, 1])
    assert len(LLM.requests) == sent
