"""models.mnist.mnist_saved_model: training on the digits stand-in and the two signatures."""
import os

import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2

from kit.process import free_port
from models.mnist import input_data, mnist_saved_model

FLOAT, STRING = tf.float32.as_datatype_enum, tf.string.as_datatype_enum


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    base = tmp_path_factory.mktemp("mnist")
    datasets = input_data.read_data_sets()
    path, test_acc = mnist_saved_model.train_and_export(datasets, str(base), 2, 300, seed=0)
    return base, path, test_acc, datasets


def shape(info):
    return [d.size for d in info.tensor_shape.dim]


def test_trains_to_sensible_accuracy(exported):
    _, _, test_acc, _ = exported
    assert test_acc >= 0.85


def test_signature_defs(exported):
    base, path, _, _ = exported
    assert path == os.path.join(str(base), "2") and sorted(os.listdir(base)) == ["2"]
    proto = saved_model_pb2.SavedModel()
    with open(os.path.join(path, "saved_model.pb"), "rb") as f:
        proto.ParseFromString(f.read())
    (meta,) = proto.meta_graphs
    assert list(meta.meta_info_def.tags) == ["serve"]
    predict = meta.signature_def["predict_images"]
    assert predict.method_name == "tensorflow/serving/predict"
    assert list(predict.inputs) == ["images"] and list(predict.outputs) == ["scores"]
    assert predict.inputs["images"].dtype == FLOAT and shape(predict.inputs["images"]) == [-1, 784]
    assert predict.outputs["scores"].dtype == FLOAT and shape(predict.outputs["scores"]) == [-1, 10]
    classify = meta.signature_def["serving_default"]
    assert classify.method_name == "tensorflow/serving/classify"
    assert list(classify.inputs) == ["inputs"] and classify.inputs["inputs"].dtype == STRING
    assert classify.outputs["classes"].dtype == STRING and classify.outputs["scores"].dtype == FLOAT
    assert shape(classify.outputs["classes"]) == [-1, 10]


def test_loaded_signatures_answer(exported):
    _, path, test_acc, datasets = exported
    loaded = tf.saved_model.load(path)
    images = datasets.test.images[:20]
    scores = loaded.signatures["predict_images"](images=tf.constant(images))["scores"].numpy()
    assert scores.shape == (20, 10)
    np.testing.assert_allclose(scores.sum(axis=1), 1.0, rtol=1e-5)

    examples = [tf.train.Example(features=tf.train.Features(feature={
        "x": tf.train.Feature(float_list=tf.train.FloatList(value=row))})).SerializeToString()
        for row in images]
    out = loaded.signatures["serving_default"](inputs=tf.constant(examples))
    classes, top_scores = out["classes"].numpy(), out["scores"].numpy()
    assert classes.shape == (20, 10) and top_scores.shape == (20, 10)
    assert np.all(np.diff(top_scores, axis=1) <= 0)  # top_k: sorted descending
    assert [int(c) for c in classes[:, 0]] == scores.argmax(axis=1).tolist()
    full = loaded.signatures["predict_images"](images=tf.constant(datasets.test.images))["scores"]
    accuracy = np.mean(full.numpy().argmax(axis=1) == datasets.test.labels)
    assert accuracy == pytest.approx(test_acc, abs=1e-6)


def test_cli_help_and_errors(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        mnist_saved_model.build_parser().parse_args(["--help"])
    assert exit_info.value.code == 0
    assert "--training_iteration" in capsys.readouterr().out
    assert mnist_saved_model.main(["--training_iteration=0", str(tmp_path)]) == 2
    capsys.readouterr()
    # --data_dir without the files: no silent fallback, and one line rather than a traceback.
    assert mnist_saved_model.main(["--data_dir", str(tmp_path), str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: MNIST files missing in {tmp_path}: ") and err.count("\n") == 1
    assert not (tmp_path / "out").exists()


def test_download_without_a_network_stops_with_one_line(tmp_path, capsys):
    mirror = f"http://127.0.0.1:{free_port()}/"  # nothing listens there: refused, as offline
    argv = ["--download", f"--work_dir={tmp_path / 'download'}", f"--source_url={mirror}", str(tmp_path / "out")]
    assert mnist_saved_model.main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: cannot download {mirror}train-images-idx3-ubyte.gz: ") and err.count("\n") == 1
    assert "Connection refused" in err
    assert os.listdir(tmp_path / "download") == [] and not (tmp_path / "out").exists()


def test_cli_exports_with_dataset_named(tmp_path, capsys):
    assert mnist_saved_model.main(["--training_iteration=20", "--model_version=4", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "Dataset: scikit-learn digits (offline stand-in for MNIST, 1797 images" in out
    assert "training accuracy" in out and "Done exporting!" in out
    assert (tmp_path / "4" / "saved_model.pb").is_file()
