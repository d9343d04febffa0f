"""Train and export a simple Softmax Regression TensorFlow model.

The model is from the TensorFlow "MNIST For ML Beginners" tutorial, exported the
way tensorflow_serving/example/mnist_saved_model.py does (TF1 graph through
tf.compat.v1 and SavedModelBuilder) with two signatures:
  predict_images   images [None, 784] float32 -> scores [None, 10] float32
  serving_default  (classify) inputs: serialized tf.Example strings with feature
                   x (784 floats) -> classes [None, 10] string, scores [None, 10] float32

Usage: python -m models.mnist.mnist_saved_model [--training_iteration=x] \
           [--model_version=y] [--data_dir=DIR | --download] export_dir
"""
import argparse
import logging
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TF is imported

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from models.mnist import idx, input_data  # noqa: E402
from pyserving.runtime import warmup  # noqa: E402
from pyserving.version_dir import publish_version, version_path  # noqa: E402

logger = logging.getLogger(__name__)

v1 = tf.compat.v1
PREDICT_SIGNATURE = "predict_images"


def build_graph(learning_rate):
    """Return a dict of the graph's tensors/ops (call inside a Graph context)."""
    # Shaped (unlike the original) so the signatures advertise [None, ...] shapes.
    serialized_tf_example = v1.placeholder(tf.string, shape=[None], name="tf_example")
    feature_configs = {"x": tf.io.FixedLenFeature(shape=[input_data.IMAGE_PIXELS], dtype=tf.float32)}
    tf_example = tf.io.parse_example(serialized_tf_example, feature_configs)
    x = tf.identity(tf_example["x"], name="x")  # fed directly for training and predict_images
    y_ = v1.placeholder(tf.float32, shape=[None, input_data.NUM_CLASSES])
    w = v1.Variable(tf.zeros([input_data.IMAGE_PIXELS, input_data.NUM_CLASSES]), name="w")
    b = v1.Variable(tf.zeros([input_data.NUM_CLASSES]), name="b")
    logits = tf.matmul(x, w) + b
    y = tf.nn.softmax(logits, name="y")
    # Same objective as the original -sum(y_ * log(y)), without its log(0) -> NaN risk.
    cross_entropy = tf.reduce_sum(tf.nn.softmax_cross_entropy_with_logits(labels=y_, logits=logits))
    train_step = v1.train.GradientDescentOptimizer(learning_rate).minimize(cross_entropy)
    values, indices = tf.nn.top_k(y, input_data.NUM_CLASSES)
    # A gather over constant names replaces the original contrib lookup table
    # (same output, no table initializer needed).
    class_names = tf.constant([str(i) for i in range(input_data.NUM_CLASSES)])
    prediction_classes = tf.gather(class_names, indices)
    correct = tf.equal(tf.argmax(y, 1), tf.argmax(y_, 1))
    accuracy = tf.reduce_mean(tf.cast(correct, tf.float32))
    return dict(serialized_tf_example=serialized_tf_example, x=x, y_=y_, y=y,
                train_step=train_step, values=values, classes=prediction_classes,
                accuracy=accuracy)


def build_signatures(t):
    build = v1.saved_model.utils.build_tensor_info
    consts = v1.saved_model.signature_constants
    classification_signature = v1.saved_model.signature_def_utils.build_signature_def(
        inputs={consts.CLASSIFY_INPUTS: build(t["serialized_tf_example"])},
        outputs={consts.CLASSIFY_OUTPUT_CLASSES: build(t["classes"]),
                 consts.CLASSIFY_OUTPUT_SCORES: build(t["values"])},
        method_name=consts.CLASSIFY_METHOD_NAME)
    prediction_signature = v1.saved_model.signature_def_utils.build_signature_def(
        inputs={"images": build(t["x"])},
        outputs={"scores": build(t["y"])},
        method_name=consts.PREDICT_METHOD_NAME)
    return {PREDICT_SIGNATURE: prediction_signature,
            consts.DEFAULT_SERVING_SIGNATURE_DEF_KEY: classification_signature}


def train_and_export(datasets, export_path_base, model_version, training_iteration,
                     seed=0, batch_size=50, learning_rate=0.01):
    """Train, print accuracies, export atomically; return (export_path, test_accuracy)."""
    graph = tf.Graph()
    with graph.as_default():
        v1.set_random_seed(seed)
        t = build_graph(learning_rate)
        with v1.Session(graph=graph) as sess:
            sess.run(v1.global_variables_initializer())
            print("Training model...")
            for _ in range(training_iteration):
                images, labels = datasets.train.next_batch(batch_size)
                sess.run(t["train_step"], feed_dict={t["x"]: images, t["y_"]: labels})
            train_acc = sess.run(t["accuracy"], feed_dict={
                t["x"]: datasets.train.images, t["y_"]: datasets.train.one_hot_labels})
            test_acc = sess.run(t["accuracy"], feed_dict={
                t["x"]: datasets.test.images, t["y_"]: datasets.test.one_hot_labels})
            print("training accuracy %g" % train_acc)
            print("test accuracy %g" % test_acc)
            print("Done training!")

            export_path = version_path(export_path_base, model_version)
            print("Exporting trained model to", export_path)

            def write(staging):
                builder = v1.saved_model.Builder(staging)
                builder.add_meta_graph_and_variables(
                    sess, [v1.saved_model.tag_constants.SERVING],
                    signature_def_map=build_signatures(t))
                builder.save()
                # Warmup requests (TF Serving's format) replayed by the server while it loads.
                warmup.write_requests(staging, [warmup.predict_log(
                    "predict_images", {"images": np.asarray(datasets.test.images[:1], np.float32)})])

            publish_version(export_path_base, model_version, write, staging_prefix=".tmp-export-")
            print("Done exporting!")
    return export_path, float(np.float32(test_acc))


def build_parser():
    p = argparse.ArgumentParser(
        prog="python -m models.mnist.mnist_saved_model",
        description="Train and export the MNIST softmax-regression model for TF Serving.",
        usage="python -m models.mnist.mnist_saved_model [--training_iteration=x] "
              "[--model_version=y] [--data_dir=DIR | --download] export_dir")
    p.add_argument("export_dir", help="model base dir; the version goes to <export_dir>/<version>")
    p.add_argument("--training_iteration", type=int, default=1000, help="number of training iterations")
    p.add_argument("--model_version", type=int, default=1, help="version number of the model")
    p.add_argument("--data_dir", default=None,
                   help="folder with the four MNIST IDX .gz files (missing files are an error)")
    p.add_argument("--download", action="store_true",
                   help="download MNIST (sha256-verified) into --data_dir or --work_dir")
    p.add_argument("--work_dir", default="/tmp/mnist_data", help="download folder without --data_dir")
    p.add_argument("--source_url", default=idx.DEFAULT_SOURCE_URL, help="MNIST mirror for --download")
    p.add_argument("--batch_size", type=int, default=50)
    p.add_argument("--learning_rate", type=float, default=0.01)
    p.add_argument("--seed", type=int, default=0, help="seed for batch order and TF ops")
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.training_iteration <= 0:
        print("Please specify a positive value for training iteration.")
        return 2
    if args.model_version <= 0:
        print("Please specify a positive value for version number.")
        return 2
    logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(message)s")
    # The v1 SavedModel API logs deprecation warnings that are no use to a user here.
    for noisy in ("tensorflow", "absl"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    try:
        datasets = input_data.read_data_sets(data_dir=args.data_dir, download=args.download,
                                             work_dir=args.work_dir, seed=args.seed, source_url=args.source_url)
    except (OSError, ValueError) as err:  # no network, missing or corrupt files: one line, not a traceback
        print("error: %s" % err, file=sys.stderr)
        return 1
    print("Dataset: %s" % datasets.description)
    train_and_export(datasets, args.export_dir, args.model_version, args.training_iteration,
                     seed=args.seed, batch_size=args.batch_size, learning_rate=args.learning_rate)
    return 0


if __name__ == "__main__":
    sys.exit(main())
