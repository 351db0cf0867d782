"""The models' default ACT targets: negative machine-label weights spread onto the nearest unreviewed items."""

import numpy as np
from conftest import require_extra
from test_loss import act_designs

from act_sklearn.models.neighbor_spread import act_targets
from act_sklearn.stats import act_soft_targets, act_weights

require_extra("hypothesis", "test")
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


def test_spread_takes_a_negative_weight_from_the_nearest_unreviewed_items_with_its_machine_label():
    features = np.array([[0.0], [0.5], [1.0], [2.0], [3.0], [10.0]])
    machine = np.array([0, 1, 0, 0, 0, 0])
    human = np.array([1, 0, 0, 0, 0, 0])
    weights = np.array([2.0, 0.0, 0.0, 0.0, 1.0, 0.0])  # item 0: wrong machine label, w = 2: -1 on label 0
    targets = act_targets(machine, human, weights, 2, clip=0.5, features=features)
    # item 0 keeps its human label; the 1 of weight comes off the two nearest unreviewed label-0 items,
    # 0.5 each; the label-1 item, the reviewed item 4 and the farther items keep theirs
    np.testing.assert_array_equal(targets[:, 0], [0.0, 0.0, 0.5, 0.5, 1.0, 1.0])
    np.testing.assert_array_equal(targets[:, 1], [2.0, 1.0, 0.0, 0.0, 0.0, 0.0])


def test_spread_with_no_room_is_the_clip_at_zero():
    rng = np.random.default_rng(1)
    machine, human = rng.integers(0, 3, 60), rng.integers(0, 3, 60)
    proba = rng.uniform(0.05, 1, 60)
    weights = act_weights(rng.random(60) < proba, proba)
    features = rng.normal(size=(60, 2))
    np.testing.assert_array_equal(
        act_targets(machine, human, weights, 3, clip=0.0, features=features),
        act_soft_targets(machine, human, weights, 3, clip=0.0),
    )


@settings(max_examples=200, deadline=None)
@given(act_designs(), st.sampled_from([0.25, 0.5, 1.0, 3.0]))
def test_spread_keeps_every_weight_non_negative_and_moves_no_more_than_the_negative_mass(design, clip):
    logits, machine, human, weights, power = design
    k = logits.shape[1]
    features = logits  # any matrix of features will do
    exact = act_soft_targets(machine, human, weights, k, power)
    spread = act_targets(machine, human, weights, k, power, clip=clip, features=features)
    rows = np.arange(machine.size)
    assert spread.min() >= 0
    unreviewed = weights == 0
    taken = exact[rows, machine] - spread[rows, machine]
    assert np.all(taken[unreviewed] <= power * min(clip, 1.0) + 1e-12)  # at most the room of each item
    negative = np.minimum(exact[rows, machine], 0.0)
    for label in range(k):  # only from the label that carried negative weight, and at most that weight
        of_label = unreviewed & (machine == label)
        assert taken[of_label].sum() <= -negative[machine == label].sum() + 1e-9
    other = np.ones_like(exact, dtype=bool)
    other[rows, machine] = False
    np.testing.assert_array_equal(spread[other], exact[other])  # human-label weights untouched
    np.testing.assert_array_equal(spread[~unreviewed & (negative == 0), :], exact[~unreviewed & (negative == 0), :])


def test_spread_finds_room_for_the_heaviest_item_of_a_label():
    # two reviewed label-0 items to place: 0.5 (w = 1.5) near three free items, 3 (w = 4) near twenty
    features = np.concatenate([[0.0, 100.0], np.arange(1, 4), np.arange(101, 121)])[:, None]
    machine = np.zeros(features.shape[0], dtype=int)
    human = np.ones_like(machine)
    weights = np.zeros(machine.size)
    weights[:2] = [1.5, 4.0]
    targets = act_targets(machine, human, weights, 2, clip=0.5, features=features)
    np.testing.assert_array_equal(targets[2:5, 0], [0.5, 1.0, 1.0])  # the light item: its nearest
    np.testing.assert_array_equal(targets[5:11, 0], 0.5)  # the heavy item: its six nearest, all of it placed
    np.testing.assert_array_equal(targets[11:, 0], 1.0)


def test_nearest_rows_are_the_exact_neighbours_nearest_first_dense_or_sparse():
    from scipy import sparse
    from scipy.spatial.distance import cdist

    from act_sklearn.models.neighbor_spread import NearestRows

    rng = np.random.default_rng(0)
    rows = rng.normal(size=(300, 20)) + 1e4  # far off the origin: uncentred, float32 would lose the order
    queries = rng.normal(size=(40, 20)) + 1e4
    expected = np.argsort(cdist(queries, rows), axis=1, kind="stable")
    np.testing.assert_array_equal(NearestRows(rows).query(queries, 7), expected[:, :7])
    np.testing.assert_array_equal(NearestRows(rows).query(queries, 300), expected)  # every row
    sparse_rows = sparse.random(300, 50, density=0.1, random_state=1, format="csr")
    sparse_queries = sparse.random(40, 50, density=0.1, random_state=2, format="csr")
    expected = np.argsort(cdist(sparse_queries.toarray(), sparse_rows.toarray()), axis=1, kind="stable")
    found = NearestRows(sparse_rows).query(sparse_queries, 5)
    distances = cdist(sparse_queries.toarray(), sparse_rows.toarray())
    # rows at equal distance (empty rows are all at |q|) may come in another order: compare distances
    np.testing.assert_allclose(np.take_along_axis(distances, found, 1),
                               np.take_along_axis(distances, expected[:, :5], 1), rtol=1e-5)
