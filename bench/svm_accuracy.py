"""Accuracy of our TF2 linear SVM vs scikit-learn's LinearSVC on the same split.

    .venv/bin/python bench/svm_accuracy.py            # 60,000 questions, 124 classes

Both models see identical features (our jieba + TF-IDF transformer fitted on
the train split) and solve the same problem, so their dev accuracies should agree.

Mapping regulation_rate (lambda) -> C. Per class c (one-vs-rest, y in {-1,+1}) ours minimises
    (1/n) * sum_i max(0, 1 - y_i (w.x_i + b))^2  +  lambda * ||w||^2
and LinearSVC(loss='squared_hinge', penalty='l2') minimises
    1/2 * ||w||^2  +  C * sum_i max(0, 1 - y_i (w.x_i + b))^2.
Dividing ours by 2*lambda gives the second form with  C = 1 / (2 * lambda * n)
(n = number of training rows), so both have the same minimiser. One difference
remains: liblinear also penalises b (as the weight of a constant feature of value
intercept_scaling); we pass a large intercept_scaling so that penalty is negligible.
"""
import argparse
import logging
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
from sklearn.svm import LinearSVC  # noqa: E402

from models.svm import corpus, data, trainer  # noqa: E402
from models.svm.transformer import TextTransformer  # noqa: E402

INTERCEPT_SCALING = 100.0


def regulation_rate_to_c(regulation_rate, n_train):
    return 1.0 / (2.0 * regulation_rate * n_train)


def main(argv=None):
    defaults = trainer.TrainParams()
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rows", type=int, default=60000)
    p.add_argument("--classes", type=int, default=124)
    p.add_argument("--dev_fraction", type=float, default=0.1)
    p.add_argument("--corpus_seed", type=int, default=20190101)
    p.add_argument("--regulation_rate", type=float, default=defaults.regulation_rate)
    p.add_argument("--learning_rate", type=float, default=defaults.learning_rate)
    p.add_argument("--batch_size", type=int, default=defaults.batch_size)
    # The CLI's defaults: 20 epochs with linear lr decay reach LinearSVC's optimum;
    # 5 already give the same accuracy (at an objective ~5% higher).
    p.add_argument("--num_epochs", type=int, default=defaults.num_epochs)
    p.add_argument("--seed", type=int, default=defaults.seed)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    rows = corpus.generate(args.rows, args.classes, args.corpus_seed)
    train_rows, dev_rows = corpus.split(rows, args.dev_fraction, args.corpus_seed)
    train_texts, train_labels = zip(*train_rows)
    dev_texts, dev_labels = zip(*dev_rows)
    classes = data.build_classes(train_labels)
    y_train = data.labels_to_ids(train_labels, classes)
    y_dev = data.labels_to_ids(dev_labels, classes)

    t0 = time.time()
    transformer = TextTransformer(classes=classes).fit(train_texts)
    x_train = transformer.transform_sparse(train_texts)
    x_dev = transformer.transform_sparse(dev_texts)
    t_features = time.time() - t0
    n_train = len(y_train)
    c = regulation_rate_to_c(args.regulation_rate, n_train)
    print("corpus: %d questions, %d classes (train %d / dev %d), %d features (jieba+tfidf, %.1fs)"
          % (len(rows), len(classes), n_train, len(y_dev), transformer.n_features, t_features))
    print("regulation_rate=%g  ->  LinearSVC C = 1/(2*%g*%d) = %.6g"
          % (args.regulation_rate, args.regulation_rate, n_train, c))

    params = trainer.TrainParams(batch_size=args.batch_size, num_epochs=args.num_epochs,
                                 regulation_rate=args.regulation_rate,
                                 learning_rate=args.learning_rate, seed=args.seed,
                                 evaluate_every=0, checkpoint_every=0, log_every=0)
    t0 = time.time()
    model, history = trainer.fit(x_train, y_train, len(classes), params)
    _, ours = trainer.evaluate(model, x_dev, y_dev)
    t_ours = time.time() - t0
    print("ours  (TF2 SVM, Adam lr=%g linearly decayed, batch %d, %d epochs, %d steps): "
          "dev accuracy %.4f  (%.1fs)"
          % (args.learning_rate, args.batch_size, args.num_epochs, history["steps"], ours, t_ours))

    t0 = time.time()
    svc = LinearSVC(loss="squared_hinge", penalty="l2", C=c, dual=False,
                    intercept_scaling=INTERCEPT_SCALING, max_iter=5000)
    svc.fit(x_train, y_train)
    theirs = float(np.mean(svc.predict(x_dev) == y_dev))
    t_svc = time.time() - t0
    print("sklearn LinearSVC(loss='squared_hinge', penalty='l2', C=%.6g): dev accuracy %.4f  (%.1fs)"
          % (c, theirs, t_svc))
    ours_pred = np.argmax(model.scores(x_dev.toarray()).numpy(), axis=1)
    agree = float(np.mean(ours_pred == svc.predict(x_dev)))
    # Both solutions scored by our objective (LinearSVC's weights plugged into our model).
    obj_ours, _ = trainer.evaluate(model, x_train, y_train)
    model.W.assign(svc.coef_.T.astype(np.float32))
    model.b.assign(svc.intercept_.astype(np.float32))
    obj_svc, _ = trainer.evaluate(model, x_train, y_train)
    print("objective on train (mean squared hinge + lambda*||W||^2): ours %.5f, LinearSVC %.5f"
          % (obj_ours, obj_svc))
    print("dev predictions agreeing: %.2f%%" % (100 * agree))
    diff = ours - theirs
    print("difference (ours - LinearSVC): %+.2f points" % (100 * diff))
    return 0


if __name__ == "__main__":
    sys.exit(main())
