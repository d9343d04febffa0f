"""ModelServerConfig parsing and validation."""
from __future__ import annotations

import pytest

from pyserving.core import config
from pyserving.errors import Code, ServingError
from pyserving.types import VersionPolicy


def parse(text):
    return config.from_proto(config.parse_text(text))


def test_full_config():
    models = parse('''model_config_list {
      config { name: "a" base_path: "/m/a" model_platform: "tensorflow"
               model_version_policy { specific { versions: 1 versions: 3 } }
               version_labels { key: "stable" value: 1 } version_labels { key: "canary" value: 3 } }
      config { name: "b" base_path: "/m/b" model_platform: "tensorflow" model_version_policy { all {} } }
      config { name: "c" base_path: "/m/c" model_type: TENSORFLOW model_version_policy { latest { num_versions: 2 } } }
    }''')
    assert [m.name for m in models] == ["a", "b", "c"]
    assert models[0].policy == VersionPolicy("specific", versions=(1, 3))
    assert dict(models[0].labels) == {"stable": 1, "canary": 3}
    assert models[1].policy.kind == "all"
    assert models[2].policy == VersionPolicy("latest", num_versions=2) and models[2].platform == "tensorflow"


@pytest.mark.parametrize("text,code,message", [
    ('model_config_list { config { name: "a" base_path: "rel" model_platform: "tensorflow" } }',
     Code.INVALID_ARGUMENT, "to have an absolute path or URI"),
    ('model_config_list { config { name: "a" base_path: "/x" } }', Code.INVALID_ARGUMENT, "Illegal setting neither"),
    ('model_config_list { config { name: "a" base_path: "/x" model_platform: "pytorch" } }',
     Code.INVALID_ARGUMENT, "requests unsupported platform pytorch"),
    ('model_config_list { config { name: "a" base_path: "/x" model_platform: "tensorflow" } '
     'config { name: "a" base_path: "/y" model_platform: "tensorflow" } }', Code.INVALID_ARGUMENT, "multiple times"),
    ('model_config_list { config { name: "a" base_path: "/x" model_platform: "tensorflow" '
     'version_labels { key: "bad-label" value: 1 } } }', Code.INVALID_ARGUMENT, "Invalid version label"),
    ('model_config_list { config { name: "a" base_path: "/x" model_platform: "tensorflow" '
     'logging_config { sampling_config { sampling_rate: 1 } } } }', Code.FAILED_PRECONDITION,
     "No request-logger-creator provided."),
    ('custom_model_config { }', Code.UNIMPLEMENTED, "custom_model_config"),
])
def test_invalid_configs(text, code, message):
    with pytest.raises(ServingError) as err:
        parse(text)
    assert err.value.code == code and message in err.value.message


def test_malformed_text_names_the_file(tmp_path):
    path = tmp_path / "models.config"
    path.write_text("model_config_list { config { ")
    with pytest.raises(ServingError, match=f"Invalid protobuf file: '{path}'"):
        config.read_file(str(path))
