"""models.svm.model / trainer / data: the TF2 linear SVM itself."""
import numpy as np
import pytest
import tensorflow as tf

from models.svm import data, trainer
from models.svm.model import LinearSVM


def separable_blobs(n_per_class=60, num_class=4, dim=6, seed=0):
    """Well separated Gaussian blobs: a linearly separable toy set."""
    rng = np.random.RandomState(seed)
    centers = rng.normal(scale=6.0, size=(num_class, dim))
    x = np.concatenate([c + rng.normal(scale=0.5, size=(n_per_class, dim)) for c in centers])
    ids = np.repeat(np.arange(num_class), n_per_class)
    return x.astype(np.float32), ids


def quick_params(**overrides):
    base = dict(batch_size=16, num_epochs=15, evaluate_every=0, checkpoint_every=0,
                regulation_rate=1e-4, learning_rate=0.05, seed=1, log_every=0)
    base.update(overrides)
    return trainer.TrainParams(**base)


def test_learns_separable_toy_set():
    x, ids = separable_blobs()
    model, history = trainer.fit(x, ids, 4, quick_params())
    loss, acc = trainer.evaluate(model, x, ids)
    assert acc == 1.0
    assert history["steps"] == 15 * 15  # 240 rows / 16 per batch, 15 epochs
    assert loss < 0.5


def test_training_is_deterministic():
    x, ids = separable_blobs(seed=3)
    a, _ = trainer.fit(x, ids, 4, quick_params(num_epochs=3))
    b, _ = trainer.fit(x, ids, 4, quick_params(num_epochs=3))
    c, _ = trainer.fit(x, ids, 4, quick_params(num_epochs=3, seed=2))
    assert np.array_equal(a.W.numpy(), b.W.numpy()) and np.array_equal(a.b.numpy(), b.b.numpy())
    assert not np.array_equal(a.W.numpy(), c.W.numpy())


def test_loss_is_squared_hinge_plus_l2():
    rng = np.random.RandomState(0)
    model = LinearSVM(5, 3, regulation_rate=0.01)
    model.W.assign(rng.normal(size=(5, 3)).astype(np.float32))
    model.b.assign(rng.normal(size=3).astype(np.float32))
    x = rng.normal(size=(7, 5)).astype(np.float32)
    y = data.one_vs_rest_targets(np.array([0, 1, 2, 0, 1, 2, 0]), 3)
    scores = x @ model.W.numpy() + model.b.numpy()
    expected = np.mean(np.sum(np.maximum(0, 1 - y * scores) ** 2, axis=1)) \
        + 0.01 * np.sum(model.W.numpy() ** 2)
    assert float(model.loss(tf.constant(x), tf.constant(y))) == pytest.approx(expected, rel=1e-5)
    out = model.serve(tf.constant(x))
    assert out["predictClass"].dtype == tf.int64
    assert np.array_equal(out["predictClass"].numpy(), np.argmax(scores, axis=1))


def test_regularisation_shrinks_weights():
    x, ids = separable_blobs(seed=5)
    weak, _ = trainer.fit(x, ids, 4, quick_params(num_epochs=5, regulation_rate=1e-5))
    strong, _ = trainer.fit(x, ids, 4, quick_params(num_epochs=5, regulation_rate=1.0))
    assert np.linalg.norm(strong.W.numpy()) < 0.5 * np.linalg.norm(weak.W.numpy())


def test_checkpoints_keep_num_checkpoints(tmp_path):
    x, ids = separable_blobs()
    _, history = trainer.fit(x, ids, 4, quick_params(num_epochs=2, checkpoint_every=5,
                                                     num_checkpoints=2), checkpoint_dir=str(tmp_path))
    # 30 steps, a checkpoint every 5 -> 6 saved, only the last 2 kept.
    assert len(history["checkpoints"]) == 6
    assert tf.train.latest_checkpoint(str(tmp_path)).endswith("ckpt-30")
    assert sorted(p.name for p in tmp_path.glob("*.index")) == ["ckpt-25.index", "ckpt-30.index"]
    restored = LinearSVM(6, 4, 1e-4)
    tf.train.Checkpoint(model=restored).restore(str(tmp_path / "ckpt-30")).expect_partial()
    assert np.abs(restored.W.numpy()).sum() > 0


def test_one_vs_rest_targets():
    y = data.one_vs_rest_targets(np.array([2, 0]), 3)
    assert y.tolist() == [[-1, -1, 1], [1, -1, -1]] and y.dtype == np.float32


def test_class_mapping():
    assert data.build_classes(["b", "a", "b"]) == ["a", "b"]
    assert data.build_classes(["3", "0"]) == ["0", "1", "2", "3"]
    assert data.build_classes(["3", "0"], num_class=6) == [str(i) for i in range(6)]
    assert data.labels_to_ids(["07", "2"], data.build_classes(["7", "2"])).tolist() == [7, 2]
    with pytest.raises(ValueError, match="num_class"):
        data.build_classes(["a", "b"], num_class=3)
    with pytest.raises(ValueError, match="does not fit"):
        data.build_classes(["5"], num_class=3)
    with pytest.raises(ValueError, match="not among"):
        data.labels_to_ids(["c"], ["a", "b"])


def test_batch_iter_is_seeded_and_covers_every_row():
    batches = list(data.batch_iter(10, 4, 2, seed=7))
    assert [len(rows) for _, rows in batches] == [4, 4, 2, 4, 4, 2]
    for epoch in (0, 1):
        rows = np.concatenate([r for e, r in batches if e == epoch])
        assert sorted(rows.tolist()) == list(range(10))
    again = list(data.batch_iter(10, 4, 2, seed=7))
    assert all(np.array_equal(a, b) for (_, a), (_, b) in zip(batches, again))
