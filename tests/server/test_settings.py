"""Settings, the declared type of the parsed flags, stays in step with the flag table."""
from __future__ import annotations

import dataclasses
import typing

import pytest

from pyserving import cli
from pyserving.flags import FLAGS
from pyserving.settings import Settings


def test_one_field_per_flag_with_its_type_and_default():
    fields = dataclasses.fields(Settings)
    hints = typing.get_type_hints(Settings)
    assert [f.name for f in fields] == [flag.name for flag in FLAGS]
    for field, flag in zip(fields, FLAGS):
        assert hints[field.name] is flag.type, field.name
        assert field.default == flag.default, field.name


@pytest.mark.parametrize("argv,attribute,value", [
    ([], "saved_model_tag_set", ("serve",)),
    (["--saved_model_tags=serve, gpu,,"], "saved_model_tag_set", ("serve", "gpu")),
    (["--tensorflow_session_parallelism=3"], "intra_op_threads", 3),
    (["--tensorflow_session_parallelism=3"], "inter_op_threads", 3),
    (["--tensorflow_inter_op_parallelism=2"], "inter_op_threads", 2),
    (["--tensorflow_inter_op_parallelism=2"], "intra_op_threads", 0),
    ([], "tflite_interpreters", 0),
    (["--prefer_tflite_model", "--num_tflite_pools=2", "--num_tflite_interpreters_per_pool=3"],
     "tflite_interpreters", 6),
    ([], "warmup_iterations", 0),
    (["--enable_model_warmup=false"], "warmup_iterations", None),
    (["--load_retry_interval_micros=1500000"], "load_retry_interval_s", 1.5),
    (["--load_retry_interval_micros=-1"], "load_retry_interval_s", 0.0),
    (["--model_config_file=/c"], "polls_model_config", False),
    (["--model_config_file=/c", "--model_config_file_poll_wait_seconds=2"], "polls_model_config", True),
])
def test_derived_values(argv, attribute, value):
    settings, _given = cli.parse(argv)
    assert getattr(settings, attribute) == value


def test_flags_that_have_no_effect_warn_once_each_when_set():
    settings, given = cli.parse(["--num_load_threads=4", "--enable_profiler=false", "--port=1",
                                 "--flush_filesystem_caches=true"])  # set to its default: no warning
    assert cli.no_effect_warnings(settings, given) == [
        "--num_load_threads has no effect in pyserving (accepted for compatibility)",
        "--enable_profiler has no effect in pyserving (accepted for compatibility)",
    ]


def test_the_listen_address_is_an_ip_address_and_every_interface_without_one():
    settings, _given = cli.parse(["--model_base_path=/m"])
    assert settings.listen_host == "0.0.0.0" and cli.validate(settings) == []
    for address in ("127.0.0.1", "::1"):
        settings, _given = cli.parse(["--model_base_path=/m", f"--pyserving_listen_address={address}"])
        assert settings.listen_host == address and cli.validate(settings) == []
    settings, _given = cli.parse(["--model_base_path=/m", "--pyserving_listen_address=localhost"])
    assert cli.validate(settings) == [
        "--pyserving_listen_address: expected an IP address such as 127.0.0.1, got 'localhost'"]
