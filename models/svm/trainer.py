"""Minibatch training loop: step logs, periodic evaluation and checkpoints."""
import dataclasses
import logging
import os
from typing import Callable, Optional

import numpy as np
import tensorflow as tf

from models.svm import data
from models.svm.model import Adam, LinearSVM, make_train_step

logger = logging.getLogger(__name__)

EVAL_CHUNK = 4096  # rows densified at a time, to bound memory on large corpora


@dataclasses.dataclass
class TrainParams:
    batch_size: int = 64
    num_epochs: int = 20
    evaluate_every: int = 100
    checkpoint_every: int = 100
    num_checkpoints: int = 5
    regulation_rate: float = 1e-4
    learning_rate: float = 1e-2
    seed: int = 42
    lr_decay: bool = True  # linear decay to 0 over the run: lands on the optimum, not near it
    # Steps between "step N, loss, acc" lines; None: every evaluate_every steps (as the tutorial's
    # script prints) and the last one; 0: none.
    log_every: Optional[int] = None


def _dense(rows):
    return rows.toarray() if hasattr(rows, "toarray") else np.asarray(rows, dtype=np.float32)


def evaluate(model, x, ids):
    """(loss, accuracy) over a whole set, in chunks."""
    if len(ids) == 0:
        return float("nan"), float("nan")
    targets = data.one_vs_rest_targets(ids, model.num_class)
    hinge_sum, correct = 0.0, 0
    for start in range(0, len(ids), EVAL_CHUNK):
        xb = tf.constant(_dense(x[start:start + EVAL_CHUNK]), tf.float32)
        scores = model.scores(xb)
        yb = targets[start:start + EVAL_CHUNK]
        hinge_sum += float(tf.reduce_sum(tf.square(tf.maximum(0.0, 1.0 - yb * scores))))
        correct += int(np.sum(np.argmax(scores.numpy(), axis=1) == ids[start:start + EVAL_CHUNK]))
    reg = model.regulation_rate * float(tf.reduce_sum(tf.square(model.W)))
    return hinge_sum / len(ids) + reg, correct / len(ids)


def fit(x_train, ids_train, num_class, params, x_dev=None, ids_dev=None, checkpoint_dir=None,
        on_step: Optional[Callable[[int, int], None]] = None):
    """Train a LinearSVM on (CSR or dense) features; return (model, history dict).

    Deterministic for a given seed: zero init, seeded shuffling, no dropout. `on_step(step, total)`
    is called after every step (a progress bar).
    """
    tf.random.set_seed(params.seed)
    n_rows, n_features = x_train.shape
    model = LinearSVM(n_features, num_class, params.regulation_rate)
    optimizer = Adam([model.W, model.b], learning_rate=params.learning_rate)
    train_step = make_train_step(model, optimizer)
    targets = data.one_vs_rest_targets(ids_train, num_class)

    manager = None
    if checkpoint_dir:
        os.makedirs(checkpoint_dir, exist_ok=True)
        ckpt = tf.train.Checkpoint(model=model, optimizer=optimizer)
        manager = tf.train.CheckpointManager(ckpt, checkpoint_dir,
                                             max_to_keep=params.num_checkpoints)

    history = {"dev": [], "checkpoints": []}
    step, saved_step = 0, None
    loss = acc = float("nan")
    total_steps = params.num_epochs * ((n_rows - 1) // params.batch_size + 1)
    for _, rows in data.batch_iter(n_rows, params.batch_size, params.num_epochs, params.seed):
        if params.lr_decay:
            optimizer.learning_rate.assign(params.learning_rate * (1.0 - step / total_steps))
        loss, acc = train_step(tf.constant(_dense(x_train[rows]), tf.float32),
                               tf.constant(targets[rows]))
        step += 1
        if on_step is not None:
            on_step(step, total_steps)
        log_every = params.evaluate_every if params.log_every is None else params.log_every
        last = params.log_every is None and step == total_steps
        if (log_every and step % log_every == 0) or last:
            logger.info("step %d, loss %g, acc %g", step, float(loss), float(acc))
        if x_dev is not None and params.evaluate_every and step % params.evaluate_every == 0:
            _log_evaluation(model, x_dev, ids_dev, step, history)
        if manager and params.checkpoint_every and step % params.checkpoint_every == 0:
            history["checkpoints"].append(manager.save(checkpoint_number=step))
            saved_step = step
            logger.info("Saved model checkpoint to %s", history["checkpoints"][-1])
    if manager and step and saved_step != step:
        history["checkpoints"].append(manager.save(checkpoint_number=step))
        logger.info("Saved model checkpoint to %s", history["checkpoints"][-1])
    history["steps"] = step
    history["train_loss"], history["train_acc"] = float(loss), float(acc)
    return model, history


def _log_evaluation(model, x_dev, ids_dev, step, history):
    dev_loss, dev_acc = evaluate(model, x_dev, ids_dev)
    logger.info("Evaluation:")
    logger.info("step %d, loss %g, acc %g", step, dev_loss, dev_acc)
    history["dev"].append((step, dev_loss, dev_acc))
