"""pyserving/runtime/savedmodel.py: a SavedModel folder that cannot load fails with TF Serving's code and
words, those of TensorFlow's C++ reader (tensorflow/cc/saved_model/reader.cc, ReadBinaryProto and
ReadTextProto in tensorflow/core/platform/env.cc), not the Python loader's."""
from __future__ import annotations

import shutil

import pytest

from pyserving.errors import Code, ServingError
from pyserving.examples import half_plus_two
from pyserving.runtime import savedmodel


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    base = tmp_path_factory.mktemp("hp2")
    half_plus_two.write_tf1(str(base), 1)
    return base / "1"


def _load_error(path) -> ServingError:
    with pytest.raises(ServingError) as caught:
        savedmodel.load(str(path))
    return caught.value


def test_a_truncated_saved_model_pb_is_data_loss_cant_parse_as_binary_proto(good, tmp_path):
    broken = tmp_path / "2"
    shutil.copytree(good, broken)
    (broken / "saved_model.pb").write_bytes((good / "saved_model.pb").read_bytes()[:100])
    error = _load_error(broken)
    assert (error.code, error.message) == (Code.DATA_LOSS, f"Can't parse {broken}/saved_model.pb as binary proto")


def test_a_malformed_saved_model_pbtxt_is_data_loss_cant_parse_as_text_proto(tmp_path):
    (tmp_path / "saved_model.pbtxt").write_text("meta_graphs { this is not a text proto")
    error = _load_error(tmp_path)
    assert (error.code, error.message) == (Code.DATA_LOSS, f"Can't parse {tmp_path}/saved_model.pbtxt as text proto")


def test_a_folder_without_a_saved_model_file_is_not_found(tmp_path):
    error = _load_error(tmp_path)
    assert error.code == Code.NOT_FOUND
    assert error.message == f"Could not find SavedModel .pb or .pbtxt at supplied export directory path: {tmp_path}"


def test_the_good_model_loads_and_answers(good):
    import numpy as np

    servable = savedmodel.load(str(good))
    try:
        out = servable.run("serving_default", {"x": np.array([[1.0], [3.0]], np.float32)}, ["y"])
        np.testing.assert_allclose(out["y"], [[2.5], [3.5]])
    finally:
        servable.close()
