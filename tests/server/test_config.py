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


def error_of(text) -> ServingError:
    with pytest.raises(ServingError) as err:
        parse(text)
    return err.value


def one_model(fields: str) -> str:
    return "model_config_list { config { " + fields + " } }"


def test_version_policies_and_their_defaults():
    def policy(text):
        return parse(one_model(f'name: "a" base_path: "/m/a" model_platform: "tensorflow" {text}'))[0].policy

    assert policy("") == VersionPolicy("latest", num_versions=1)  # no policy: the latest version
    assert policy("model_version_policy { latest { } }") == VersionPolicy("latest", num_versions=1)
    assert policy("model_version_policy { latest { num_versions: 3 } }") == VersionPolicy("latest", num_versions=3)
    assert policy("model_version_policy { specific { versions: 4 } }") == VersionPolicy("specific", versions=(4,))


def test_a_model_keeps_its_name_base_path_and_platform():
    [model] = parse(one_model('name: "half" base_path: "/srv/models/half" model_platform: "tensorflow"'))
    assert (model.name, model.base_path, model.platform) == ("half", "/srv/models/half", "tensorflow")


@pytest.mark.parametrize("text,code,message", [
    (one_model('name: "a" base_path: "/x" model_platform: "tensorflow" model_version_policy { specific { } }'),
     Code.INVALID_ARGUMENT, "Specific version policy lists no versions"),
    (one_model('base_path: "/x" model_platform: "tensorflow"'), Code.INVALID_ARGUMENT,
     "A model config has an empty name"),
    (one_model('name: "a" base_path: "hdfs://namenode/a" model_platform: "tensorflow"'), Code.UNIMPLEMENTED,
     "Model a: base path hdfs://namenode/a has a scheme pyserving does not read (hdfs://); use a local path, "
     "gs:// or s3://"),
    ("custom_model_config { }", Code.UNIMPLEMENTED,
     "custom_model_config is not supported (TF Serving's OSS build has none)"),
    (one_model('name: "a" base_path: "/x" model_platform: "tensorflow" logging_config { }'),
     Code.FAILED_PRECONDITION, "No request-logger-creator provided."),  # server_core.cc's words
])
def test_invalid_config_messages(text, code, message):
    error = error_of(text)
    assert (error.code, error.message) == (code, message)


def test_a_model_without_platform_is_refused_in_server_core_cc_s_words():
    message = error_of(one_model('name: "a" base_path: "/x"')).message
    assert message.startswith("Illegal setting neither ModelServerConfig::model_type (deprecated) nor "
                              "ModelServerConfig::model_platform.")


def test_text_without_a_file_is_named_config_in_parse_errors():
    with pytest.raises(ServingError) as err:
        config.parse_text("model_config_list {")
    assert err.value.code == Code.INVALID_ARGUMENT
    assert err.value.message == "Invalid protobuf file: '<config>'"  # ParseProtoTextFile's status
    assert err.value.parser_line.startswith("Error parsing text-format tensorflow.serving.ModelServerConfig: 1:")


def test_a_missing_config_file_is_not_found(tmp_path):
    path = tmp_path / "absent.config"
    with pytest.raises(ServingError) as err:
        config.read_file(str(path))
    assert (err.value.code, err.value.message) == (
        Code.NOT_FOUND, f"Could not read model config file {path}: No such file or directory")


def test_a_config_file_is_read_as_utf8(tmp_path):
    path = tmp_path / "models.config"
    path.write_bytes(one_model('name: "modèle" base_path: "/m/é" model_platform: "tensorflow"').encode())
    [model] = config.read_file(str(path))
    assert (model.name, model.base_path) == ("modèle", "/m/é")
