"""ACTNeuralNetClassifier: the ACT loss in torch, skorch parity, and the ACTClassifier wiring."""

import importlib
import pickle
import sys

import numpy as np
import pytest
import sklearn
from conftest import require_extra
from sklearn.base import clone
from sklearn.datasets import load_digits
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from act_sklearn import ACTClassifier, ACTSampler
from act_sklearn.models.neighbor_spread import act_targets
from act_sklearn.stats import act_loss, act_soft_targets, act_weights, soft_target_cross_entropy

torch = require_extra("torch", "torch")
require_extra("skorch", "torch")
require_extra("hypothesis", "test")
import torch.nn.functional as F  # noqa: E402
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from skorch import NeuralNetClassifier  # noqa: E402

from act_sklearn import ACTNeuralNetClassifier  # noqa: E402
from act_sklearn.models.torch import ACTCrossEntropyLoss  # noqa: E402

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def small_module(n_features=64, n_classes=10):
    return torch.nn.Sequential(
        torch.nn.Linear(n_features, 32), torch.nn.ReLU(), torch.nn.Linear(32, n_classes)
    )


def make_net(**params):
    defaults = dict(module=small_module, max_epochs=3, lr=0.1, batch_size=64)
    return ACTNeuralNetClassifier(**{**defaults, **params})


@pytest.fixture(scope="module")
def job():
    """Digits with a 25%-wrong machine annotator and an informative criticizer."""
    X, y = load_digits(return_X_y=True)
    rng = np.random.default_rng(0)
    wrong = rng.random(y.size) < 0.25
    machine = np.where(wrong, (y + 1 + rng.integers(0, 9, y.size)) % 10, y)
    error_proba = np.clip(0.5 * wrong + 0.5 * rng.random(y.size), 0, 1)
    return (X / 16).astype(np.float32), y, machine, error_proba


# -- the loss ---------------------------------------------------------------------


@st.composite
def act_designs(draw):
    n = draw(st.integers(1, 25))
    k = draw(st.integers(2, 5))
    rng = np.random.default_rng(draw(st.integers(0, 2**31 - 1)))
    logits = rng.normal(scale=draw(st.sampled_from([0.1, 1.0, 10.0])), size=(n, k))
    machine, human = rng.integers(0, k, n), rng.integers(0, k, n)
    proba = rng.uniform(draw(st.sampled_from([1e-3, 0.1, 0.9])), 1.0, n)
    weights = act_weights(rng.random(n) < proba, proba)
    power = draw(st.floats(0, 1))
    clip = draw(st.sampled_from([None, 0.0, 1.0, 5.0]))
    return logits, machine, human, weights, power, clip


@settings(max_examples=200, deadline=None)
@given(act_designs())
def test_torch_loss_and_gradient_equal_the_numpy_act_loss(design):
    logits, machine, human, weights, power, clip = design
    targets = act_soft_targets(machine, human, weights, logits.shape[1], power, clip)
    expected_loss, expected_grad = soft_target_cross_entropy(logits, targets)

    z = torch.tensor(logits, requires_grad=True)
    loss = ACTCrossEntropyLoss()(z, torch.tensor(targets))
    loss.backward()

    assert loss.item() == pytest.approx(expected_loss, rel=1e-9, abs=1e-9)
    np.testing.assert_allclose(z.grad.numpy(), expected_grad, rtol=1e-7, atol=1e-9)
    if clip is None:  # and the per-item form of stats.act_loss
        log_proba = torch.log_softmax(z.detach(), dim=1).numpy()
        rows = np.arange(machine.size)
        per_item = act_loss(-log_proba[rows, machine], -log_proba[rows, human], weights, power)
        assert loss.item() == pytest.approx(per_item, rel=1e-9, abs=1e-9)


def test_reduction_modes_and_class_index_targets():
    logits = torch.randn(6, 3, generator=torch.Generator().manual_seed(0))
    labels = torch.tensor([0, 1, 2, 2, 1, 0])
    one_hot = F.one_hot(labels, 3).double()
    for reduction in ("mean", "sum", "none"):
        criterion = ACTCrossEntropyLoss(reduction=reduction)
        expected = F.cross_entropy(logits, labels, reduction=reduction)
        torch.testing.assert_close(criterion(logits, labels), expected)
        torch.testing.assert_close(criterion(logits, one_hot), expected)


def test_pi_one_equals_cross_entropy_on_corrected_labels(job):
    X, y, machine, error_proba = job
    reviewed = error_proba > 0.6
    corrected = np.where(reviewed, y, machine)
    weights = act_weights(reviewed, np.ones(y.size))
    targets = act_soft_targets(machine, y, weights, 10)
    logits = torch.randn(y.size, 10, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(
        ACTCrossEntropyLoss()(logits, torch.tensor(targets, dtype=torch.float32)),
        F.cross_entropy(logits, torch.tensor(corrected)),
    )

    # And training: the ACT design with pi = 1 is plain training on the corrected labels
    # (the same stratified validation split, the same losses every epoch).
    torch.manual_seed(0)
    act = make_net().fit(X, np.where(reviewed, y, -1), machine_labels=machine, act_weight=weights)
    torch.manual_seed(0)
    plain = make_net().fit(X, corrected)
    for key in ("train_loss", "valid_loss", "valid_acc"):
        np.testing.assert_allclose(act.history[:, key], plain.history[:, key], rtol=1e-6)


# -- skorch parity ---------------------------------------------------------------


def test_ordinary_labels_train_exactly_like_skorch_cross_entropy(job):
    X, y, _, _ = job
    torch.manual_seed(0)
    ours = make_net().fit(X, y)
    torch.manual_seed(0)
    theirs = NeuralNetClassifier(
        small_module, criterion=torch.nn.CrossEntropyLoss, max_epochs=3, lr=0.1, batch_size=64, verbose=0
    ).fit(X, y)
    for key in ("train_loss", "valid_loss", "valid_acc"):
        assert ours.history[:, key] == theirs.history[:, key]
    np.testing.assert_array_equal(ours.predict_proba(X), theirs.predict_proba(X))
    np.testing.assert_array_equal(ours.predict(X), theirs.predict(X))


def test_string_labels_and_a_given_class_order(job):
    X, y, machine, _ = job
    names = np.array(list("abcdefghij"))
    net = make_net(train_split=None).fit(X, names[y])
    assert list(net.classes_) == list(names)
    assert set(net.predict(X[:50])) <= set(names)
    reordered = names[::-1]
    net = make_net(train_split=None, classes=reordered).fit(
        X, names[y], machine_labels=names[machine], act_weight=np.ones(y.size)
    )
    proba = net.predict_proba(X[:20])
    np.testing.assert_array_equal(net.predict(X[:20]), reordered[proba.argmax(axis=1)])


# -- ACTClassifier, Pipeline, GridSearchCV ----------------------------------------------


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("clip", [None, 1.0])
def test_act_classifier_trains_the_net_on_the_act_design(job, device, clip):
    X, y, machine, error_proba = job
    sampler = ACTSampler(budget=0.3, rule="normalize", explore=0.1, random_state=0)
    torch.manual_seed(0)
    act = ACTClassifier(make_net(clip=clip, device=device, max_epochs=8), sampler=sampler)
    act.fit(X, y, machine_labels=machine, error_proba=error_proba)
    assert act.estimator_.clip == clip
    assert act.n_human_labels_ == round(0.3 * y.size)
    # the net learnt the digits, not the annotator's mistakes
    assert act.score(X, y) > np.mean(machine == y) + 0.1
    assert np.all(np.isfinite(act.estimator_.history[:, "train_loss"]))


def test_auto_power_is_tuned_on_the_last_layer_and_the_net_trained_again(job):
    X, y, machine, error_proba = job
    sampler = ACTSampler(budget=0.3, rule="normalize", explore=0.2, random_state=0)
    torch.manual_seed(0)
    act = ACTClassifier(make_net(max_epochs=8), sampler=sampler, power="auto")
    act.fit(X, y, machine_labels=machine, error_proba=error_proba)
    # heavy weights on a 25%-wrong annotator: the variance-minimising power is well below the paper's 1
    assert 0.0 <= act.power_ < 0.9 and act.estimator_.power_ == act.power_
    assert len(act.estimator_.history) == 8  # the second training started from scratch
    assert act.score(X, y) > np.mean(machine == y) + 0.1
    # a module that does not end in a Linear onto the classes is tuned on the logits' bias
    module = torch.nn.Sequential(
        torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 20), torch.nn.MaxPool1d(2)
    )
    design = make_net(module=module, max_epochs=1).fit(
        X, np.where(act.reviewed_, y, -1), machine_labels=machine, act_weight=1 / act.inclusion_proba_ * act.reviewed_,
        power="auto",
    )
    assert 0.0 <= design.power_ <= 1.0
    # partial_fit trains on; it cannot tune: a clear error naming the way that does
    weights = 1 / act.inclusion_proba_ * act.reviewed_
    with pytest.raises(ValueError, match=r"power='auto' tunes the power on a fit from scratch.*net\.power_"):
        design.partial_fit(X, np.where(act.reviewed_, y, -1), machine_labels=machine, act_weight=weights, power="auto")
    design.partial_fit(X, np.where(act.reviewed_, y, -1), machine_labels=machine, act_weight=weights,
                       power=design.power_)
    assert len(design.history) == 2


def test_production_mode_and_full_human_reference(job):
    X, y, machine, error_proba = job
    sampler = ACTSampler(budget=0.2, rule="sigmoid", explore=0.2, random_state=1).fit(error_proba)
    y_reviewed = np.where(sampler.reviewed_, y, -1)
    torch.manual_seed(0)
    production = ACTClassifier(make_net(clip=1.0)).fit(
        X, y_reviewed, machine_labels=machine, inclusion_proba=sampler.inclusion_proba_
    )
    assert production.n_human_labels_ == sampler.reviewed_.sum()
    torch.manual_seed(0)
    human = ACTClassifier(make_net(max_epochs=8)).fit(X, y)
    assert human.n_human_labels_ == y.size
    assert human.score(X, y) > np.mean(machine == y) + 0.1


def test_in_a_pipeline_and_grid_search(job):
    X, y, machine, error_proba = job
    pipeline = make_pipeline(StandardScaler(), make_net(train_split=None))
    act = ACTClassifier(pipeline, sampler=ACTSampler(explore=0.1, random_state=0))
    search = GridSearchCV(
        act,
        {"sampler__budget": [0.1, 0.4], "estimator__actneuralnetclassifier__clip": [None, 1.0]},
        cv=2,
    )
    search.fit(X, y, machine_labels=machine, error_proba=error_proba)
    assert search.best_params_["sampler__budget"] == 0.4
    assert search.best_estimator_.predict(X[:5]).shape == (5,)


def test_metadata_routing(job):
    X, y, machine, error_proba = job
    with sklearn.config_context(enable_metadata_routing=True):
        act = ACTClassifier(make_net(), sampler=ACTSampler(budget=0.2, random_state=0))
        act.fit(X, y, machine_labels=machine, error_proba=error_proba)
        net = make_net(train_split=None).set_fit_request(
            machine_labels=True, act_weight=True, power=True
        )
        act = ACTClassifier(make_pipeline(StandardScaler(), net), sampler=ACTSampler(budget=0.2))
        act.fit(X, y, machine_labels=machine, error_proba=error_proba)
    assert act.n_human_labels_ == round(0.2 * y.size)


# -- clone, pickle, skorch's params API -------------------------------------------------


def test_clone_pickle_and_save_load_params(job, tmp_path):
    X, y, machine, _ = job
    net = make_net(clip=0.5, train_split=None, module__n_classes=10)
    assert clone(net).get_params()["clip"] == 0.5
    assert clone(net).get_params()["module__n_classes"] == 10
    net.fit(X, y, machine_labels=machine, act_weight=np.where(machine != y, 4.0, 0.0))
    expected = net.predict_proba(X)

    restored = pickle.loads(pickle.dumps(net))
    np.testing.assert_array_equal(restored.predict_proba(X), expected)
    np.testing.assert_array_equal(restored.classes_, net.classes_)

    params, optimizer, history = (tmp_path / name for name in ("p.pt", "o.pt", "h.json"))
    net.save_params(f_params=params, f_optimizer=optimizer, f_history=history)
    fresh = make_net(clip=0.5, train_split=None, module__n_classes=10, classes=net.classes_)
    fresh.initialize()
    fresh.load_params(f_params=params, f_optimizer=optimizer, f_history=history)
    np.testing.assert_allclose(fresh.predict_proba(X), expected)
    assert len(fresh.history) == len(net.history)


def test_warm_start_and_partial_fit_keep_the_label_set(job):
    X, y, _, _ = job
    net = make_net(train_split=None, max_epochs=1)
    net.partial_fit(X[:100], y[:100], classes=np.arange(10))
    net.partial_fit(X[100:], y[100:])
    assert len(net.history) == 2
    assert list(net.classes_) == list(range(10))
    with pytest.raises(ValueError, match="outside classes_"):
        net.partial_fit(X[:3], np.array([0, 1, 11]))


# -- errors ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(act_weight=None), "together"),
        (dict(act_weight=-np.ones(1797)), "non-negative"),
        (dict(act_weight=np.ones(5)), "one entry per sample"),
        (dict(power=1.5), "power must be a float in"),
        (dict(y=np.eye(10)[np.arange(1797) % 10]), "1-d labels"),
    ],
)
def test_bad_act_design_is_a_clear_error(job, change, message):
    X, y, machine, _ = job
    arguments = dict(y=y, machine_labels=machine, act_weight=np.ones(y.size), power=1.0)
    with pytest.raises(ValueError, match=message):
        make_net().fit(X, **{**arguments, **change})


def test_negative_clip_is_a_clear_error(job):
    X, y, machine, _ = job
    with pytest.raises(ValueError, match="clip must be None or a non-negative"):
        make_net(clip=-1).fit(X, y, machine_labels=machine, act_weight=np.ones(y.size))


def test_missing_skorch_gives_an_install_hint(monkeypatch):
    monkeypatch.setitem(sys.modules, "skorch", None)
    monkeypatch.delitem(sys.modules, "act_sklearn.models.torch")
    with pytest.raises(ImportError, match=r"pip install torch==2.13.0.*act-sklearn\[torch\]"):
        importlib.import_module("act_sklearn.models.torch")


def test_targets_spread_to_neighbors_on_array_input_and_are_cut_on_other_input(job):
    X, y, machine, error_proba = job
    rng = np.random.default_rng(0)
    proba = np.full(y.size, 0.05)
    reviewed = (rng.random(y.size) < proba) | (np.arange(y.size) == np.flatnonzero(machine != y)[0])
    weights = act_weights(reviewed, proba)
    human = np.where(reviewed, y, -1)
    net = make_net(train_split=None).initialize()
    net.classes_inferred_ = np.arange(10)
    spread = net._targets(human, machine, weights, 1.0, net._neighbor_features(torch.from_numpy(X))).numpy()
    cut = net._targets(human, machine, weights, 1.0, net._neighbor_features({"X": X})).numpy()
    expected_spread = act_targets(
        np.asarray(machine), np.where(reviewed, y, 0), weights, 10, clip=0.5, features=X.reshape(len(X), -1)
    )
    np.testing.assert_allclose(spread, expected_spread, rtol=1e-6)
    expected_cut = act_soft_targets(np.asarray(machine), np.where(reviewed, y, 0), weights, 10, clip=0.5)
    np.testing.assert_allclose(cut, expected_cut, rtol=1e-6)
    assert spread.min() >= 0 and cut.min() < 0
    assert make_net(spread_to_neighbors=False)._neighbor_features(X) is None
