"""kit/rollout/model_check.py without TensorFlow: what is not a SavedModel, and which signature changes break
a client of the stable version (the loading child process is tested through `inv publish` in
tests/kit/rollout/test_updates.py)."""
from __future__ import annotations

import pytest

from kit.rollout import model_check


def tensor(dtype: str, shape):
    return {"dtype": dtype, "shape": shape}


def signatures(inputs: dict, outputs: dict | None = None, key: str = "serving_default") -> dict:
    return {key: {"inputs": inputs, "outputs": outputs if outputs is not None else {"y": tensor("DT_FLOAT", [-1, 1])}}}


STABLE = signatures({"x": tensor("DT_FLOAT", [-1, 3])})


@pytest.mark.parametrize("new,problems", [
    (STABLE, []),
    ({**STABLE, **signatures({"z": tensor("DT_INT64", None)}, key="extra")}, []),  # a new signature breaks nobody
    (signatures({"x": tensor("DT_FLOAT", [-1, -1])}), []),  # any size where 3 was required
    (signatures({"x": tensor("DT_FLOAT", None)}), []),  # any rank
    (signatures({"x": tensor("DT_FLOAT", [-1, 3])}, {"y": tensor("DT_FLOAT", [-1, 1]),
                                                     "z": tensor("DT_STRING", [-1])}), []),  # a new output
    (signatures({"x": tensor("DT_FLOAT", [-1, 3])}, key="predict"), ["signature 'serving_default' is missing"]),
    (signatures({"x2": tensor("DT_FLOAT", [-1, 3])}),
     ["serving_default: input 'x' is missing",
      "serving_default: new input 'x2' (clients of the stable version do not send it)"]),
    (signatures({"x": tensor("DT_FLOAT", [-1, 3]), "w": tensor("DT_FLOAT", [-1])}),
     ["serving_default: new input 'w' (clients of the stable version do not send it)"]),
    (signatures({"x": tensor("DT_DOUBLE", [-1, 3])}), ["serving_default: input 'x' dtype DT_FLOAT -> DT_DOUBLE"]),
    (signatures({"x": tensor("DT_FLOAT", [-1, 4])}), ["serving_default: input 'x' shape [-1, 3] -> [-1, 4]"]),
    (signatures({"x": tensor("DT_FLOAT", [8, 3])}), ["serving_default: input 'x' shape [-1, 3] -> [8, 3]"]),
    (signatures({"x": tensor("DT_FLOAT", [-1, 3, 1])}),
     ["serving_default: input 'x' shape [-1, 3] -> [-1, 3, 1]"]),
    (signatures({"x": tensor("DT_FLOAT", [-1, 3])}, {}), ["serving_default: output 'y' is missing"]),
    (signatures({"x": tensor("DT_FLOAT", [-1, 3])}, {"y": tensor("DT_INT64", [-1, 1])}),
     ["serving_default: output 'y' dtype DT_FLOAT -> DT_INT64"]),
])
def test_what_breaks_a_client_of_the_stable_version(new, problems):
    assert model_check.incompatibilities(STABLE, new) == problems


def test_the_savedmodel_s_init_op_is_no_signature_a_client_calls():
    init = signatures({}, {"__saved_model_init_op": tensor("DT_INVALID", None)}, key="__saved_model_init_op")
    assert model_check.incompatibilities({**STABLE, **init}, STABLE) == []


def test_an_unknown_rank_accepts_any_shape_and_is_narrowed_by_any_known_one():
    assert model_check.accepts(None, [-1, 3]) and model_check.accepts(None, None)
    assert not model_check.accepts([-1, 3], None)
    assert model_check.accepts([-1], [5]) and not model_check.accepts([5], [-1]) and model_check.accepts([], [])


def test_a_folder_without_a_model_file_is_not_a_savedmodel(tmp_path):
    (tmp_path / "README.txt").write_text("notes")
    assert model_check.not_a_savedmodel(tmp_path) == (
        f"{tmp_path} is not a SavedModel: it holds no saved_model.pb or saved_model.pbtxt")
    assert model_check.not_a_savedmodel(tmp_path / "README.txt") == f"{tmp_path / 'README.txt'} is not a folder"
    assert model_check.not_a_savedmodel(tmp_path / "absent") == f"{tmp_path / 'absent'} is not a folder"


@pytest.mark.parametrize("model_file", ["saved_model.pb", "saved_model.pbtxt"])
def test_a_folder_with_a_model_file_is_one(tmp_path, model_file):
    (tmp_path / model_file).write_bytes(b"")
    assert model_check.not_a_savedmodel(tmp_path) is None


def test_a_base_path_names_its_version_folders_and_the_source_to_publish_instead(tmp_path):
    (tmp_path / "00000123").mkdir()  # TF Serving reads it as version 123
    (tmp_path / "7").mkdir()
    (tmp_path / "notes").mkdir()  # not a version
    assert model_check.not_a_savedmodel(tmp_path) == (
        f"{tmp_path} is not a SavedModel but a base path holding version folder(s) 00000123, 7: "
        f"publish one of them, e.g. --source={tmp_path / '00000123'}")
