"""The kappa functions against tables worked by hand, and against scikit-learn where it applies."""
import random
from collections import Counter

import pytest
from sklearn.metrics import cohen_kappa_score

from store.agreement import cohen_kappa, fleiss_kappa


def _pairs(table: dict[tuple[str, str], int]) -> list[tuple[str, str]]:
    return [pair for pair, n in table.items() for _ in range(n)]


def test_cohen_kappa_of_a_hand_worked_two_class_table():
    # 50 items: both yes 20, A yes/B no 5, A no/B yes 10, both no 15.
    # p_o = 35/50 = 0.70; A yes 25/50, B yes 30/50 -> p_e = .5*.6 + .5*.4 = 0.50; kappa = 0.40
    pairs = _pairs({("road", "road"): 20, ("road", "field"): 5, ("field", "road"): 10,
                    ("field", "field"): 15})
    assert cohen_kappa(pairs) == pytest.approx(0.4)
    a, b = zip(*pairs)
    assert cohen_kappa(pairs) == pytest.approx(cohen_kappa_score(a, b))


def test_cohen_kappa_of_a_hand_worked_three_class_table():
    # rows A, columns B over field/road/road_and_field:
    #   [[10, 2, 0], [1, 8, 1], [0, 3, 5]]   n = 30
    # p_o = 23/30; A marginals 12,10,8; B marginals 11,13,6
    # p_e = (12*11 + 10*13 + 8*6) / 900 = 310/900; kappa = (23/30 - 310/900) / (1 - 310/900)
    c = ("field", "road", "road_and_field")
    m = [[10, 2, 0], [1, 8, 1], [0, 3, 5]]
    pairs = _pairs({(c[i], c[j]): m[i][j] for i in range(3) for j in range(3)})
    expected = (23 / 30 - 310 / 900) / (1 - 310 / 900)
    assert cohen_kappa(pairs) == pytest.approx(expected)
    a, b = zip(*pairs)
    assert cohen_kappa(pairs) == pytest.approx(cohen_kappa_score(a, b))


def test_cohen_kappa_agrees_with_sklearn_on_random_tables():
    rng = random.Random(7)
    classes = ("field", "road", "road_and_field")
    for _ in range(50):
        n = rng.randint(5, 60)
        a = [rng.choice(classes) for _ in range(n)]
        b = [x if rng.random() < 0.6 else rng.choice(classes) for x in a]
        ours = cohen_kappa(list(zip(a, b)))
        theirs = cohen_kappa_score(a, b)
        if ours is None:
            assert theirs != theirs or theirs == 0  # sklearn: nan where kappa is undefined
        else:
            assert ours == pytest.approx(theirs)


def test_perfect_and_undefined_cohen_kappa():
    assert cohen_kappa([("road", "road"), ("field", "field")]) == pytest.approx(1.0)
    assert cohen_kappa([("road", "road")] * 4) is None  # chance agreement is already 1
    assert cohen_kappa([]) is None


def test_fleiss_kappa_of_the_worked_example_from_fleiss_1971_as_on_wikipedia():
    # Wikipedia's "Fleiss' kappa" worked example: 10 items, 14 raters, 5 categories -> 0.210
    rows = [[0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0],
            [2, 2, 8, 1, 1], [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2],
            [6, 5, 2, 1, 0], [0, 2, 2, 3, 7]]
    items = [Counter({j: n for j, n in enumerate(r) if n}) for r in rows]
    assert fleiss_kappa(items) == pytest.approx(0.2099, abs=1e-4)


def test_fleiss_kappa_with_two_raters_by_hand():
    # 4 items, 2 raters: agree, agree, disagree, agree. P_i = 1,1,0,1 -> P_bar = .75
    # votes: road 4, field 3, road_and_field 1 of 8 -> P_e = (16+9+1)/64 = 26/64
    items = [Counter(road=2), Counter(field=2), Counter(road=1, road_and_field=1),
             Counter(field=1, road=1)]
    # the fourth disagrees too: P_i = 1,1,0,0 -> P_bar = .5; road 4, field 3, r&f 1 -> 26/64
    p_e = 26 / 64
    assert fleiss_kappa(items) == pytest.approx((0.5 - p_e) / (1 - p_e))


def test_fleiss_kappa_needs_items_rated_twice():
    assert fleiss_kappa([Counter(road=1), Counter(field=1)]) is None
    assert fleiss_kappa([]) is None
    assert fleiss_kappa([Counter(road=2), Counter(road=3)]) is None  # only one class ever used
