"""Model configs: shipped YAMLs describe ultralytics' architectures exactly; bad keys are named."""

from __future__ import annotations

import copy

import pytest
from conftest import TINY_CONFIG

from detr_toolkit import RTDETR
from detr_toolkit.config import load_model_config
from detr_toolkit.errors import ConfigError
from detr_toolkit.nn import build_model


@pytest.mark.parametrize("name, checkpoint", [("rtdetr-l", "ultralytics_l"), ("rtdetr-x", "ultralytics_x")])
def test_shipped_config_is_the_ultralytics_architecture(name, checkpoint, request):
    """Our YAML builds the same modules (names and shapes) as the config translated from ultralytics' own."""
    shipped = RTDETR(f"configs/{name}.yaml")
    imported = RTDETR(request.getfixturevalue(checkpoint))
    assert shipped.config == imported.config
    ours = {k: v.shape for k, v in shipped.model.state_dict().items()}
    assert ours == {k: v.shape for k, v in imported.model.state_dict().items()}


def test_shipped_names_resolve():
    config = load_model_config("rtdetr-l")
    assert config["nc"] == 80 and config["names"][0] == "0"


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda c: c.update(colour="red"), r"unknown model config key\(s\) \['colour'\]"),
        (lambda c: c["backbone"].update(depth=3), r"backbone: unknown key\(s\) \['depth'\]"),
        (lambda c: c["encoder"].update(type="transformer"), r"encoder: unknown type 'transformer'"),
        (lambda c: c["decoder"].update(feat_strides=[8, 16]), r"decoder: feat_strides"),
        (lambda c: c.update(nc=0), r"nc \(number of classes\) >= 1"),
        (lambda c: c.pop("backbone"), r"backbone: needs a mapping with a 'type'"),
    ],
)
def test_bad_configs_are_named(edit, message):
    config = copy.deepcopy(TINY_CONFIG)
    config.pop("names")
    edit(config)
    with pytest.raises(ConfigError, match=message):
        build_model(config)


def test_bad_yaml_files(tmp_path):
    broken = tmp_path / "broken.yaml"
    broken.write_text("nc: 3\nbackbone: [unclosed\n")
    with pytest.raises(ConfigError, match=r"broken.yaml: malformed YAML at line \d"):
        RTDETR(broken)
    with pytest.raises(ConfigError, match="no such config file"):
        RTDETR(tmp_path / "absent.yaml")
    wrong_names = tmp_path / "names.yaml"
    config = copy.deepcopy(TINY_CONFIG)
    config["names"] = ["a", "b"]
    import yaml

    wrong_names.write_text(yaml.safe_dump(config))
    with pytest.raises(ConfigError, match="exactly nc=4 class names"):
        RTDETR(wrong_names)


def test_info_counts_parameters_and_flops():
    model = RTDETR(copy.deepcopy(TINY_CONFIG))
    params, trainable, gflops = model.info(verbose=False)
    assert params == sum(p.numel() for p in model.model.parameters()) and trainable == params
    assert 0 < gflops < 1
