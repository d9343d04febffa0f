"""kit/model_config.py: labels and pinned versions, the Docker twin kept in step, container paths."""
from __future__ import annotations

import pytest
from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

from kit import model_config


def test_docker_twin_follows_every_rewrite(build):
    from kit import paths

    svm = paths.MODELS / "svm"
    svm.mkdir(parents=True)
    model_config.write({"svm": svm})
    model_config.write_container_twin()
    model_config.write({"svm": svm}, labels={"svm": {"stable": 1, "canary": 2}}, specific={"svm": [1, 2]})
    twin = text_format.Parse((paths.MODELS / "models.docker.config").read_text(),
                             model_server_config_pb2.ModelServerConfig())
    entry = twin.model_config_list.config[0]
    assert entry.base_path == "/models/svm"
    assert dict(entry.version_labels) == {"stable": 1, "canary": 2}
    assert list(entry.model_version_policy.specific.versions) == [1, 2]
    host = (paths.MODELS / "models.config").read_text()
    assert f'base_path: "{svm}"' in host
    assert not any(p.suffix == ".tmp" for p in paths.MODELS.iterdir())


# --- container_text: models.config as a container sees it ---------------------------

HOST_CONFIG = """
model_config_list {
  config {
    name: "half_plus_two"
    base_path: "/abs/build/models/half_plus_two/"
    model_platform: "tensorflow"
    model_version_policy { specific { versions: 1 versions: 2 } }
  }
  config {
    name: "nested"
    base_path: "/abs/build/models/a/./b"
    model_platform: "tensorflow"
  }
}
"""


def parse(text: str):
    return text_format.Parse(text, model_server_config_pb2.ModelServerConfig())


def test_container_text_rewrites_every_base_path():
    out = parse(model_config.container_text(HOST_CONFIG, "/abs/build/models"))
    expected = parse(HOST_CONFIG)
    expected.model_config_list.config[0].base_path = "/models/half_plus_two"
    expected.model_config_list.config[1].base_path = "/models/a/b"
    assert out == expected  # everything else untouched


def test_container_text_accepts_path_objects_and_other_roots(tmp_path):
    text = HOST_CONFIG.replace("/abs/build/models", str(tmp_path))
    out = parse(model_config.container_text(text, tmp_path / ".", container_root="/srv/m"))
    assert [c.base_path for c in out.model_config_list.config] == ["/srv/m/half_plus_two", "/srv/m/a/b"]


@pytest.mark.parametrize(
    "base_path",
    ["/abs/build/other/x", "/abs/build/models-old/x", "/abs/build/models/../secret"],
)
def test_container_text_rejects_paths_outside_host_root(base_path):
    text = HOST_CONFIG.replace("/abs/build/models/a/./b", base_path)
    with pytest.raises(model_config.ModelConfigError) as err:
        model_config.container_text(text, "/abs/build/models")
    assert str(err.value) == (
        f"model 'nested': base_path {base_path!r} lies outside /abs/build/models, "
        "which is the only folder mounted at /models"
    )


def test_container_text_rejects_relative_paths_and_bad_text():
    with pytest.raises(model_config.ModelConfigError, match="'nested': base_path 'models/b' is not an absolute"):
        model_config.container_text(HOST_CONFIG.replace("/abs/build/models/a/./b", "models/b"), "/abs/build/models")
    with pytest.raises(model_config.ModelConfigError, match="not a ModelServerConfig text proto"):
        model_config.container_text("model_config_list { nonsense: 1 }", "/abs")


def test_container_text_maps_to_a_bucket_uri():
    out = parse(model_config.container_text(HOST_CONFIG, "/abs/build/models", models_uri="gs://b/models/"))
    assert [c.base_path for c in out.model_config_list.config] == ["gs://b/models/half_plus_two", "gs://b/models/a/b"]
