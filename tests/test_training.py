import numpy as np
import pytest
import torch

from models.training import Recipe, train_binary


def data(n=60, d=32, seed=0):
    rng = np.random.default_rng(seed)
    y = (np.arange(n) % 3 != 0).astype(np.float32)  # imbalanced like the photos
    X = rng.normal(size=(n, d)).astype(np.float32) + y[:, None] * 0.8
    return X / np.linalg.norm(X, axis=1, keepdims=True), y


def test_the_seeds_recipe_is_the_default():
    r = Recipe()
    assert (r.lr, r.batch_size, r.epochs) == (3e-3, 3, 7)


def test_same_seed_same_weights_and_it_learns():
    X, y = data()
    a = train_binary(X, y, "enc")
    b = train_binary(X, y, "enc")
    for (ka, va), (kb, vb) in zip(a.head.module.state_dict().items(), b.head.module.state_dict().items()):
        assert ka == kb and torch.equal(va, vb)
    assert len(a.history) == 7
    assert a.history[-1].loss < a.history[0].loss
    assert a.final.accuracy > 0.85
    assert a.head.meta.metrics["recipe"]["lr"] == 3e-3
    c = train_binary(X, y, "enc", Recipe(seed=1))
    assert not torch.equal(c.head.module.net[0].weight, a.head.module.net[0].weight)


def test_global_rng_is_left_alone():
    torch.manual_seed(123)
    expected = torch.rand(1)
    torch.manual_seed(123)
    train_binary(*data(), "enc")
    assert torch.equal(torch.rand(1), expected)


def test_one_class_is_refused():
    X, _ = data()
    with pytest.raises(ValueError, match="both classes"):
        train_binary(X, np.ones(len(X), np.float32), "enc")


def test_early_stopping_keeps_the_best_checkpoint_not_the_last():
    from models.training import train_head

    X, y = data(n=90)
    # a large learning rate that keeps rising past the optimum makes later epochs worse
    r = Recipe(lr=0.3, batch_size=8, epochs=30, val_fraction=0.3, patience=4, seed=2)
    res = train_head("binary", X, y.astype(int), "enc", r)
    best = res.history[res.best_epoch - 1].val["log_loss"]
    assert best == min(h.val["log_loss"] for h in res.history)
    assert res.head.meta.metrics["validation"]["log_loss"] == best
    # the weights kept are the best epoch's: re-scoring the validation rows reproduces its F1
    from models.metrics import classification_metrics
    from models.training import stratified_split

    _, va = stratified_split(y.astype(int), 0.3, 2)
    kept = classification_metrics(y.astype(int)[va], res.head.predict(X[va]), ("field", "road"))
    assert kept["log_loss"] == pytest.approx(best, abs=1e-6)
    assert res.best_epoch < len(res.history)  # it did run past the best epoch, and went back


def test_lr_halving_and_class_weighting():
    from models.training import class_weights, train_head

    X, y = data()
    res = train_head("binary", X, y.astype(int), "enc", Recipe(epochs=6, lr_halve_every=2, batch_size=8))
    assert [h.lr for h in res.history] == [3e-3, 3e-3, 1.5e-3, 1.5e-3, 7.5e-4, 7.5e-4]
    w = class_weights(np.array([0, 1, 1, 1]), 2)
    assert w[0] == pytest.approx(2.0) and w[1] == pytest.approx(2 / 3)


def test_three_class_head_and_metrics():
    from models.metrics import classification_metrics
    from models.training import train_head

    rng = np.random.default_rng(0)
    y = np.arange(150) % 3
    X = rng.normal(size=(150, 16)).astype(np.float32) + np.eye(16)[y] * 3
    res = train_head("three_class", X, y, "enc", Recipe(batch_size=16, epochs=15, val_fraction=0.2))
    p = res.head.predict(X)
    assert p.shape == (150, 3)
    np.testing.assert_allclose(p.sum(1), 1, atol=1e-5)
    m = classification_metrics(y, p, ("field", "road", "road_and_field"))
    assert m["accuracy"] > 0.9 and m["macro_f1"] > 0.9 and 0 <= m["ece"] < 0.3
    assert np.array(m["confusion"]).sum() == 150
    assert m["per_class"]["road_and_field"]["support"] == 50


def test_stratified_split_keeps_proportions():
    from models.training import stratified_split

    y = np.array([0] * 45 + [1] * 108)
    tr, va = stratified_split(y, 0.2, 0)
    assert len(set(tr) & set(va)) == 0 and len(tr) + len(va) == 153
    assert (y[va] == 0).sum() == 9 and (y[va] == 1).sum() == 22
