"""The offline demo: the whole ACT loop on 20 Newsgroups posts, with no network and no key.

An annotator (WordLlama zero-shot) labels 8 newsgroups' training posts, a
different model (MiniLM zero-shot) criticises the labels, the gold labels
answer as reviewers for the selected items, a TF-IDF model trains on the
result, and the report compares it on the test posts with the same model
trained on the machine labels alone and on all gold labels. Both offline models
are stand-ins for an MLLM; pass LLM components to run the same loop on a server.
"""

import numpy as np

from ..datasets import DEMO_NEWSGROUPS, load_newsgroups
from ..stats.sampling import DEFAULT_EXPLORE
from .default_models import default_text_model
from .report import report
from .run_folder import RunFolder
from .simulation import simulate

TEMPLATE = "a newsgroup post about {}"
INSTRUCTIONS = "Which newsgroup was this post written for?"


def offline_components(classes=tuple(DEMO_NEWSGROUPS), progress=False):
    """The demo's stand-in annotator and criticizer: two different packaged models."""
    from ..offline import ZeroShotAnnotator, ZeroShotCriticizer

    shared = dict(classes=list(classes), class_descriptions=DEMO_NEWSGROUPS, template=TEMPLATE, progress=progress)
    return ZeroShotAnnotator("wordllama", max_words=512, **shared), ZeroShotCriticizer("minilm", max_words=48, **shared)


def demo_items(n_items=None, *, data_home=None, random_state=0):
    """The training posts of the 8 demo newsgroups as run-folder items, with gold labels."""
    posts = load_newsgroups(subset="train", categories=list(DEMO_NEWSGROUPS), data_home=data_home)
    order = np.arange(len(posts.data))
    if n_items is not None and n_items < order.size:
        order = np.sort(np.random.default_rng(random_state).choice(order.size, n_items, replace=False))
    return [
        dict(item_id=f"train-{i:05d}", text=posts.data[i], image=None, gold=str(posts.target[i])) for i in order
    ]


def run_demo(
    run,
    *,
    annotator=None,
    criticizer=None,
    budget=0.2,
    rule="threshold",
    explore=DEFAULT_EXPLORE,
    n_items=None,
    data_home=None,
    random_state=0,
    log=print,
):
    """Run the demo into ``run`` (a :class:`RunFolder` or a path) and return the report's figures.

    ``annotator``/``criticizer`` default to :func:`offline_components`.
    """
    if annotator is None or criticizer is None:
        offline_annotator, offline_criticizer = offline_components(progress=True)
        annotator = offline_annotator if annotator is None else annotator
        criticizer = offline_criticizer if criticizer is None else criticizer
    items = demo_items(n_items, data_home=data_home, random_state=random_state)
    settings = dict(dataset="20 Newsgroups (8 groups, train posts)", n_items=len(items), template=TEMPLATE)
    run = run if isinstance(run, RunFolder) else RunFolder(run)
    with run.locked():
        run.start(items, classes=list(DEMO_NEWSGROUPS), settings=settings)
        log(f"20 Newsgroups: {len(items)} training posts in {len(DEMO_NEWSGROUPS)} newsgroups -> {run.path}")
        model = simulate(
            run, annotator, criticizer, budget=budget, rule=rule, explore=explore, random_state=random_state, log=log
        )
        downstream = downstream_accuracy(run, model, data_home=data_home)
        run.finish_step("evaluate", downstream_test_accuracy=downstream)  # the report shows it from now on
        log("test accuracy of the downstream model: " + ", ".join(f"{k} {_percent(v)}" for k, v in downstream.items()))
        return report(run)


def downstream_accuracy(run, act_model, *, data_home=None):
    """Accuracy on the test posts of the same TF-IDF model trained three ways.

    None where the labels hold a single class (a random server model may answer
    one label for everything), since no classifier trains on that.
    """
    test_texts, test_labels = load_newsgroups(
        subset="test", categories=list(DEMO_NEWSGROUPS), data_home=data_home, return_X_y=True
    )
    texts = [item["text"] for item in run.items()]
    machine, gold = run.machine_labels(), run.gold()

    def score(model):
        return float(np.mean(model.predict(test_texts) == test_labels))

    def trained_on(labels):
        return score(default_text_model().fit(texts, labels)) if np.unique(labels).size > 1 else None

    return {
        "machine labels only": trained_on(machine),
        f"ACT ({act_model.n_human_labels_} human labels)": score(act_model),
        "all gold labels": trained_on(gold),
    }


def _percent(value):
    return "n/a (one class)" if value is None else f"{value:.2%}"
