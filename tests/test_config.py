"""Typed config: defaults, YAML layering under overrides, errors that name key and value, safe YAML, round trip."""
from __future__ import annotations

import pytest
import yaml

from ripple.config import ConfigError, RippleConfig, TrainConfig, from_dict, load_config
from ripple.data.storage import StorageOptions


def _write(tmp_path, text: str, name: str = "cfg.yaml") -> str:
    p = tmp_path / name
    p.write_text(text)
    return str(p)


def test_defaults_without_a_file():
    cfg = load_config()
    assert cfg == RippleConfig()
    assert cfg.scaling.num_workers == 2 and cfg.train.epochs == 30
    assert cfg.storage == StorageOptions()
    assert load_config(None, {}) == cfg
    assert from_dict({}) == cfg


def test_empty_file_is_defaults(tmp_path):
    assert load_config(_write(tmp_path, "")) == RippleConfig()


def test_file_is_layered_under_overrides(tmp_path):
    path = _write(tmp_path, """
data: s3://bucket/data
run_name: from-file
scaling:
  num_workers: 3
  use_gpu: true
train:
  epochs: 5
  lr: 0.01
sampling:
  fanouts: [5, 5]
storage:
  endpoint_url: http://minio:9000
""")
    cfg = load_config(path, {"scaling.num_workers": 4, "run_name": "from-flag", "train.epochs": None,
                             "storage.endpoint_url": None, "data": None})
    assert cfg.scaling.num_workers == 4  # flag beats file
    assert cfg.run_name == "from-flag"
    assert cfg.scaling.use_gpu is True  # file beats default
    assert cfg.train.epochs == 5  # a None override (flag not given) keeps the file's value
    assert cfg.train.lr == 0.01
    assert cfg.data == "s3://bucket/data"
    assert cfg.sampling.fanouts == [5, 5]
    assert cfg.storage.endpoint_url == "http://minio:9000"
    assert cfg.train.patience == TrainConfig().patience and cfg.model.heads == 4  # untouched defaults


def test_override_creates_missing_sections(tmp_path):
    cfg = load_config(_write(tmp_path, "run_name: r\n"), {"train.epochs": 2, "storage.endpoint_url": "http://x:1"})
    assert cfg.train.epochs == 2 and cfg.storage.endpoint_url == "http://x:1" and cfg.run_name == "r"


def test_int_is_accepted_for_float():
    cfg = from_dict({"train": {"lr": 1}, "scaling": {"cpus_per_worker": 2}})
    assert cfg.train.lr == 1.0 and isinstance(cfg.train.lr, float)
    assert isinstance(cfg.scaling.cpus_per_worker, float)


@pytest.mark.parametrize("raw, named", [
    ({"scaling": {"num_wrokers": 2}}, "num_wrokers"),
    ({"trian": {"epochs": 2}}, "trian"),
    ({"model": {"hidden": 64, "layers": 3}}, "layers"),
])
def test_unknown_key_is_named(raw, named):
    with pytest.raises(ConfigError) as e:
        from_dict(raw)
    assert named in str(e.value)
    assert "allowed" in str(e.value)


def test_unknown_key_in_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match="bogus_key"):
        load_config(_write(tmp_path, "scaling:\n  bogus_key: 1\n"))


@pytest.mark.parametrize("raw, key, value", [
    ({"scaling": {"num_workers": "two"}}, "scaling.num_workers", "'two'"),
    ({"scaling": {"num_workers": True}}, "scaling.num_workers", "True"),
    ({"scaling": {"use_gpu": "yes please"}}, "scaling.use_gpu", "'yes please'"),
    ({"train": {"lr": "fast"}}, "train.lr", "'fast'"),
    ({"sampling": {"fanouts": "15,10"}}, "sampling.fanouts", "'15,10'"),
    ({"sampling": {"fanouts": [15, "ten"]}}, "sampling.fanouts[1]", "'ten'"),
    ({"run_name": 7}, "run_name", "7"),
    ({"scaling": 3}, "scaling", "3"),
])
def test_wrong_type_names_key_and_value(raw, key, value):
    with pytest.raises(ConfigError) as e:
        from_dict(raw)
    msg = str(e.value)
    assert key in msg and value in msg


def test_wrong_type_in_file_names_key_and_value(tmp_path):
    with pytest.raises(ConfigError) as e:
        load_config(_write(tmp_path, "scaling:\n  num_workers: two\n"))
    assert "scaling.num_workers" in str(e.value) and "two" in str(e.value)


@pytest.mark.parametrize("raw, named", [
    ({"train": {"epochs": 0}}, "train.epochs"),
    ({"train": {"epochs": -3}}, "train.epochs"),
    ({"train": {"lr": 0.0}}, "train.lr"),
    ({"scaling": {"num_workers": 0}}, "num_workers"),
    ({"scaling": {"max_failures": -2}}, "max_failures"),
    ({"model": {"hidden": 30, "heads": 4}}, "model.hidden"),
    ({"sampling": {"batch_size": 0}}, "batch_size"),
    ({"sampling": {"fanouts": []}}, "fanouts"),
    ({"run_name": "a/b"}, "run_name"),
    ({"run_name": ""}, "run_name"),
    ({"scaling": {"placement_strategy": "spread"}}, "scaling.placement_strategy"),
    # one sampled hop per layer
    ({"model": {"num_layers": 3}}, "sampling.fanouts has 2 hops"),
    ({"sampling": {"fanouts": [5]}}, "model.num_layers is 2"),
    ({"sampling": {"per_relation": {"follows": [4, 3, 2]}}}, "sampling.per_relation.follows has 3 hops"),
])
def test_invalid_values(raw, named):
    with pytest.raises(ConfigError, match=named.replace(".", r"\.")):
        from_dict(raw)


def test_three_layers_take_three_fanouts():
    cfg = from_dict({"model": {"num_layers": 3}, "sampling": {"fanouts": [15, 10, 5]}})
    assert cfg.model.num_layers == len(cfg.sampling.fanouts) == 3


def test_epochs_zero_via_override():
    with pytest.raises(ConfigError, match=r"train\.epochs.*0"):
        load_config(None, {"train.epochs": 0})


def test_config_error_is_value_error():
    assert issubclass(ConfigError, ValueError)  # the CLI maps ValueError to exit 2


def test_python_object_tag_is_rejected(tmp_path, monkeypatch):
    called = []
    monkeypatch.setattr("os.system", lambda *a: called.append(a) or 0)
    path = _write(tmp_path, "run_name: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert "cfg.yaml" in str(e.value)
    assert not called
    path = _write(tmp_path, "storage: !!python/object:ripple.data.storage.StorageOptions {anon: true}\n", "b.yaml")
    with pytest.raises(ConfigError, match="b.yaml"):
        load_config(path)


def test_invalid_yaml_names_file(tmp_path):
    with pytest.raises(ConfigError, match="broken.yaml"):
        load_config(_write(tmp_path, "scaling: [1, 2\n", "broken.yaml"))


def test_top_level_must_be_mapping(tmp_path):
    with pytest.raises(ConfigError, match="mapping"):
        load_config(_write(tmp_path, "- 1\n- 2\n"))


def test_missing_file_names_it(tmp_path):
    missing = str(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="nope.yaml"):
        load_config(missing)


def test_to_yaml_round_trips(tmp_path):
    cfg = from_dict({"data": "s3://b/d", "run_name": "rt", "storage": {"endpoint_url": "http://h:1", "region": "eu",
                                                                       "extra": {"use_ssl": False}},
                     "scaling": {"num_workers": 3, "use_gpu": True, "address": "ray://head:10001"},
                     "sampling": {"fanouts": [4, -1], "per_relation": {"follows": [2, 2]}},
                     "train": {"epochs": 3, "lr": 0.5}, "model": {"hidden": 32, "heads": 2}})
    text = cfg.to_yaml()
    assert from_dict(yaml.safe_load(text)) == cfg
    assert load_config(_write(tmp_path, text)) == cfg
    default_text = RippleConfig().to_yaml()
    assert from_dict(yaml.safe_load(default_text)) == RippleConfig()
    assert "!!" not in text and "!!" not in default_text  # plain YAML, safe_load-able anywhere


def test_override_into_empty_section(tmp_path):
    # ``scaling:`` with nothing under it is an empty section, and a flag still lands in it
    cfg = load_config(_write(tmp_path, "scaling:\ntrain:\n"), {"scaling.num_workers": 4})
    assert cfg.scaling.num_workers == 4 and cfg.train == RippleConfig().train


def test_override_into_non_mapping_section_is_config_error(tmp_path):
    with pytest.raises(ConfigError) as e:
        load_config(_write(tmp_path, "train: 3\n"), {"train.epochs": 2})
    assert "train" in str(e.value) and "3" in str(e.value)
