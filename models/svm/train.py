"""Train the multi-class linear SVM on a text CSV and export it for TF Serving.

    python -m models.svm.train --train_data_file models/svm/data/sample.csv \
        --dev_data_file models/svm/data/sample_dev.csv --export_path_base build/models/svm \
        --num_class 8 --batch_size 64 --num_epochs 20 --evaluate_every 20 \
        --checkpoint_every 20 --num_checkpoints 5 --regulation_rate 1e-4 --model_version 1
"""
import argparse
import contextlib
import logging
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TF is imported

from models.svm import data, trainer  # noqa: E402
from models.svm.export import export_model  # noqa: E402
from models.svm.transformer import TextTransformer  # noqa: E402
from pyserving.version_dir import version_path  # noqa: E402

logger = logging.getLogger(__name__)

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULTS = trainer.TrainParams()


def build_parser():
    p = argparse.ArgumentParser(
        prog="python -m models.svm.train",
        description="Train a linear SVM (TF2) on Chinese text and export it as a "
                    "SavedModel for TF Serving.")
    p.add_argument("--train_data_file", default=os.path.join(HERE, "data", "sample.csv"),
                   help="CSV with columns text,label (default: the shipped sample)")
    p.add_argument("--dev_data_file", default=os.path.join(HERE, "data", "sample_dev.csv"),
                   help="CSV used for the Evaluation blocks")
    p.add_argument("--export_path_base", default="build/models/svm",
                   help="model base dir; the version goes to <base>/<model_version>")
    p.add_argument("--checkpoint_dir", default=None,
                   help="default: <base>_checkpoints/<model_version> beside the export base")
    p.add_argument("--num_class", type=int, default=0,
                   help="number of classes (0: infer from the training labels)")
    p.add_argument("--batch_size", type=int, default=DEFAULTS.batch_size)
    p.add_argument("--num_epochs", type=int, default=DEFAULTS.num_epochs)
    p.add_argument("--evaluate_every", type=int, default=DEFAULTS.evaluate_every,
                   help="evaluate on the dev set after this many steps")
    p.add_argument("--checkpoint_every", type=int, default=DEFAULTS.checkpoint_every,
                   help="save a checkpoint after this many steps")
    p.add_argument("--num_checkpoints", type=int, default=DEFAULTS.num_checkpoints,
                   help="number of checkpoints to keep")
    p.add_argument("--regulation_rate", type=float, default=DEFAULTS.regulation_rate,
                   help="L2 weight: loss = mean squared hinge + rate * ||W||^2")
    p.add_argument("--learning_rate", type=float, default=DEFAULTS.learning_rate,
                   help="Adam learning rate (start value)")
    p.add_argument("--lr_decay", choices=["linear", "none"], default="linear",
                   help="linear: decay the learning rate to 0 over the run (converges to "
                        "the optimum); none: keep it constant")
    p.add_argument("--seed", type=int, default=DEFAULTS.seed)
    p.add_argument("--model_version", type=int, default=1)
    return p


def default_checkpoint_dir(export_path_base, model_version):
    base = os.path.normpath(os.path.abspath(export_path_base))
    return os.path.join(base + "_checkpoints", str(model_version))


class _Stdout:
    """sys.stdout as it is when written to: while the progress bar shows, rich points it at its
    console, which prints the log lines above the bar instead of through it."""

    def write(self, text):
        return sys.stdout.write(text)

    def flush(self):
        sys.stdout.flush()


def progress_bar(stack):
    """on_step for trainer.fit: a progress bar that disappears when done, on an interactive
    terminal only (the kit says so with TTY_COMPATIBLE/TTY_INTERACTIVE, as its pipe is not one)."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    console = Console()
    if not console.is_interactive:
        return None
    progress = stack.enter_context(Progress(
        TextColumn("training"), BarColumn(), MofNCompleteColumn(), TextColumn("steps"), TimeRemainingColumn(),
        console=console, transient=True))
    bar = progress.add_task("training", total=None)
    return lambda step, total: progress.update(bar, completed=step, total=total)


def run(args):
    """Train, evaluate, checkpoint and export; return a summary dict."""
    target = version_path(args.export_path_base, args.model_version)
    if os.path.exists(target):  # fail before training, not after
        raise FileExistsError("export dir %s already exists; choose another --model_version" % target)
    texts, labels = data.load_data_and_labels(args.train_data_file)
    classes = data.build_classes(labels, args.num_class or None)
    ids_train = data.labels_to_ids(labels, classes)
    transformer = TextTransformer(classes=classes).fit(texts)
    x_train = transformer.transform_sparse(texts)
    x_dev = ids_dev = None
    if args.dev_data_file:
        dev_texts, dev_labels = data.load_data_and_labels(args.dev_data_file)
        x_dev = transformer.transform_sparse(dev_texts)
        ids_dev = data.labels_to_ids(dev_labels, classes)
    logger.info("Train/Dev split: %d/%d, %d features, %d classes",
                len(ids_train), 0 if ids_dev is None else len(ids_dev),
                transformer.n_features, len(classes))

    params = trainer.TrainParams(
        batch_size=args.batch_size, num_epochs=args.num_epochs,
        evaluate_every=args.evaluate_every, checkpoint_every=args.checkpoint_every,
        num_checkpoints=args.num_checkpoints, regulation_rate=args.regulation_rate,
        learning_rate=args.learning_rate, lr_decay=args.lr_decay == "linear", seed=args.seed)
    checkpoint_dir = args.checkpoint_dir or default_checkpoint_dir(
        args.export_path_base, args.model_version)
    with contextlib.ExitStack() as stack:
        model, history = trainer.fit(x_train, ids_train, len(classes), params,
                                     x_dev, ids_dev, checkpoint_dir, on_step=progress_bar(stack))
    summary = {"steps": history["steps"], "checkpoint_dir": checkpoint_dir,
               "checkpoints": history["checkpoints"]}
    if x_dev is not None:
        if history["dev"] and history["dev"][-1][0] == history["steps"]:
            _, dev_loss, dev_acc = history["dev"][-1]  # the last step was just evaluated
        else:
            dev_loss, dev_acc = trainer.evaluate(model, x_dev, ids_dev)
            logger.info("Evaluation:")
            logger.info("step %d, loss %g, acc %g", history["steps"], dev_loss, dev_acc)
        summary.update(dev_loss=dev_loss, dev_acc=dev_acc)
    summary["export_path"] = export_model(model, transformer, args.export_path_base,
                                          args.model_version)
    return summary


def main(argv=None):
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=_Stdout(), format="%(asctime)s: %(message)s")
    for noisy in ("tensorflow", "absl"):  # TF's Python INFO logs would flood the step lines
        logging.getLogger(noisy).setLevel(logging.ERROR)
    run(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
