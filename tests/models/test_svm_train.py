"""python -m models.svm.train end to end (in-process): log, checkpoints, export."""
import contextlib
import logging
import os
import re
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2

from models.svm import data, train
from models.svm.transformer import TextTransformer

DATA_DIR = Path(train.HERE) / "data"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    base = tmp_path_factory.mktemp("svm") / "export" / "svm"
    argv = ["--export_path_base", str(base), "--num_class", "8", "--batch_size", "32",
            "--num_epochs", "4", "--evaluate_every", "10", "--checkpoint_every", "10",
            "--num_checkpoints", "2", "--regulation_rate", "1e-4", "--model_version", "3"]
    records = []
    handler = logging.Handler()
    handler.emit = lambda record: records.append(record.getMessage())
    logging.getLogger("models.svm").addHandler(handler)
    logging.getLogger("models.svm").setLevel(logging.INFO)
    try:
        assert train.main(argv) == 0
    finally:
        logging.getLogger("models.svm").removeHandler(handler)
    return base, records


def test_help_lists_tutorial_flags(capsys):
    with pytest.raises(SystemExit) as exit_info:
        train.build_parser().parse_args(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for flag in ("--train_data_file", "--dev_data_file", "--export_path_base", "--num_class",
                 "--batch_size", "--num_epochs", "--evaluate_every", "--checkpoint_every",
                 "--num_checkpoints", "--regulation_rate", "--model_version", "--seed",
                 "--learning_rate", "--checkpoint_dir"):
        assert flag in text


def test_logs_steps_and_evaluations(trained):
    _, records = trained
    # 400 rows in batches of 32: 13 steps an epoch, 52 in 4 epochs. A training line every 10 steps
    # (--evaluate_every), each followed by an evaluation, and one for the last step.
    steps = [int(r.split(",")[0].split()[1]) for r, before in zip(records, ["", *records]) if r.startswith("step ")
             and before != "Evaluation:"]
    assert steps == [10, 20, 30, 40, 50, 52]
    assert all(", loss " in r and ", acc " in r for r in records if r.startswith("step "))
    assert records.count("Evaluation:") == 6  # at 10, 20, 30, 40, 50, and the final one at 52
    assert any(r.startswith("Saved model checkpoint to") for r in records)


def test_the_progress_bar_shows_on_an_interactive_terminal_only(monkeypatch, capsys):
    with contextlib.ExitStack() as stack:
        assert train.progress_bar(stack) is None  # pytest's captured output is no terminal
    monkeypatch.setenv("TTY_COMPATIBLE", "1")  # what the kit sets when its own output is a terminal
    monkeypatch.setenv("TTY_INTERACTIVE", "1")
    with contextlib.ExitStack() as stack:
        on_step = train.progress_bar(stack)
        on_step(1, 52)
        on_step(52, 52)
    drawn = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", capsys.readouterr().out)  # without colours and cursor moves
    assert "training" in drawn and "52/52 steps" in drawn


def test_checkpoints_beside_export(trained):
    base, _ = trained
    ckpt_dir = base.parent / "svm_checkpoints" / "3"
    latest = tf.train.latest_checkpoint(str(ckpt_dir))
    assert latest and latest.endswith("ckpt-52")  # 13 steps * 4 epochs, final save
    assert len(list(ckpt_dir.glob("ckpt-*.index"))) == 2  # --num_checkpoints


def test_export_layout_and_signature(trained):
    base, _ = trained
    version_dir = base / "3"
    assert sorted(os.listdir(base)) == ["3"]  # no staging dir left behind
    assert (version_dir / "assets.extra" / "transformer.json").is_file()

    proto = saved_model_pb2.SavedModel()
    proto.ParseFromString((version_dir / "saved_model.pb").read_bytes())
    sig = proto.meta_graphs[0].signature_def["serving_default"]
    transformer = TextTransformer.load_from_version_dir(version_dir)
    assert list(sig.inputs) == ["x"]
    assert sig.inputs["x"].dtype == tf.float32.as_datatype_enum
    assert [d.size for d in sig.inputs["x"].tensor_shape.dim] == [-1, transformer.n_features]
    assert sig.outputs["predictClass"].dtype == tf.int64.as_datatype_enum
    assert [d.size for d in sig.outputs["scores"].tensor_shape.dim] == [-1, 8]
    assert sig.method_name == "tensorflow/serving/predict"


def test_exported_model_answers_and_is_accurate(trained):
    base, _ = trained
    version_dir = base / "3"
    transformer = TextTransformer.load_from_version_dir(version_dir)
    texts, labels = data.load_data_and_labels(DATA_DIR / "sample_dev.csv")
    ids = data.labels_to_ids(labels, transformer.classes)

    loaded = tf.saved_model.load(str(version_dir))
    out = loaded.signatures["serving_default"](x=tf.constant(transformer.transform(texts)))
    assert set(out) == {"predictClass", "scores"}
    assert out["predictClass"].dtype == tf.int64 and out["predictClass"].shape == (len(texts),)
    assert out["scores"].dtype == tf.float32 and out["scores"].shape == (len(texts), 8)
    assert np.array_equal(out["predictClass"].numpy(), np.argmax(out["scores"].numpy(), axis=1))
    assert np.mean(out["predictClass"].numpy() == ids) >= 0.9


def test_refuses_to_overwrite_a_version(trained):
    base, _ = trained
    with pytest.raises(FileExistsError):
        train.main(["--export_path_base", str(base), "--num_epochs", "1", "--model_version", "3",
                    "--checkpoint_dir", str(base.parent / "other_ckpt")])
