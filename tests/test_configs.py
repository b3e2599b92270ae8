"""Model configs: shipped YAMLs describe ultralytics' architectures exactly; bad keys are named."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
from conftest import TINY_CONFIG

from detr_toolkit import RTDETR
from detr_toolkit.config import load_model_config
from detr_toolkit.errors import ConfigError, LimitError
from detr_toolkit.nn import build_model
from detr_toolkit.settings import TrainArgs

RECIPES = sorted((Path(__file__).parent.parent / "configs" / "train").glob("*.yaml"))


@pytest.mark.slow
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


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.stem)
def test_shipped_training_recipes_hold_known_settings_in_range(recipe):
    args = TrainArgs.from_sources(recipe, data="data.yaml")  # an unknown key or a value out of range raises
    assert args.given - {"data"}, f"{recipe.name} sets nothing"
    load_model_config(args.model)  # the model it names (or the default) resolves


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda c: c.update(colour="red"), r"unknown model config key\(s\) \['colour'\]"),
        (lambda c: c["backbone"].update(depth=3), r"backbone \(hgnetv2\): unknown key\(s\) \['depth'\]"),
        (lambda c: c["encoder"].update(type="transformer"), r"encoder: unknown type 'transformer'"),
        (
            lambda c: c["decoder"].update(eval_size=100),
            r"decoder: eval_size=100 must be a multiple of the largest stride 32",
        ),
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


@pytest.mark.parametrize(
    "edit, error, message",
    [
        (
            lambda c: c["decoder"].update(num_queries="300"),
            ConfigError,
            r"decoder \(rtdetr\): num_queries='300' must be int",
        ),
        (lambda c: c["encoder"].update(num_heads=True), ConfigError, r"num_heads=True must be int"),
        (lambda c: c["decoder"].update(num_layers=-1), ConfigError, r"\(rtdetr\): num_layers=-1 must be at least 1"),
        (lambda c: c["backbone"]["stages"][2].update(downsample=False), ConfigError, r"parts do not fit together"),
        (lambda c: c["decoder"].update(num_points=[4, 0, 4]), ConfigError, r"num_points holds 0, must be at least 1"),
        (
            lambda c: c.update(imgsz=100),
            ConfigError,
            r"imgsz=100: must be a positive multiple of the model's stride 32",
        ),
        (lambda c: c.update(mean=[0.5, "x", 0.5]), ConfigError, r"mean must be a list of 3 numbers"),
        (lambda c: c["decoder"].update(num_layers=10**6), LimitError, r"num_layers=1000000: 1,000,000 layers"),
        (lambda c: c["decoder"].update(num_queries=10**7), LimitError, r"DETR_TOOLKIT_MAX_MODEL_QUERIES"),
        (
            lambda c: c["backbone"]["stages"][0].update(blocks=10**6),
            LimitError,
            r"backbone \(hgnetv2\) stages: blocks=1000000: 1,000,000 layers",
        ),
        (lambda c: c["backbone"].update(return_stages=[-1, 2]), ConfigError, r"return_stages holds -1, must be at lea"),
        (lambda c: c["encoder"].update(hidden_dim=60000, ffn_dim=60000), LimitError, r"MODEL_PARAMETERS"),
    ],
    ids=[
        "text",
        "bool",
        "negative",
        "stages",
        "zero-points",
        "stride",
        "mean",
        "layers",
        "queries",
        "nested-blocks",
        "negative-index",
        "parameters",
    ],
)
def test_malformed_and_oversized_configs_fail_before_allocating(edit, error, message):
    """Types from the constructors' signatures, value limits, the parameter count and a forward pass of shapes on
    the meta device: each fails in one line, in bounded time, without allocating the model."""
    import time

    config = copy.deepcopy(TINY_CONFIG)
    config.pop("names")
    edit(config)
    start = time.perf_counter()
    with pytest.raises(error, match=message):
        build_model(config)
    assert time.perf_counter() - start < 20


def test_value_rules_follow_the_constructors_annotations():
    """Zero is a valid count of denoising queries, a negative eval_idx indexes from the end, and a float argument
    written as an integer (dropout: 0) is not a count; a width of 0 is refused."""
    config = copy.deepcopy(TINY_CONFIG)
    config["decoder"].update(num_denoising=0, eval_idx=-2, dropout=0)
    model = build_model(config)
    assert model.decoder.eval_idx == len(model.decoder.layers) - 2
    config["decoder"]["hidden_dim"] = 0
    with pytest.raises(ConfigError, match=r"decoder \(rtdetr\): hidden_dim=0 must be at least 1"):
        build_model(config)


def test_limits_can_be_raised(monkeypatch):
    config = copy.deepcopy(TINY_CONFIG)
    config.pop("names")
    config["decoder"]["num_layers"] = 5
    monkeypatch.setenv("DETR_TOOLKIT_MAX_MODEL_LAYERS", "4")
    with pytest.raises(
        LimitError, match="num_layers=5: 5 layers.* above the limit of 4 .set DETR_TOOLKIT_MAX_MODEL_LAY"
    ):
        build_model(config)
    monkeypatch.setenv("DETR_TOOLKIT_MAX_MODEL_LAYERS", "5")
    assert len(build_model(config).decoder.layers) == 5


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
    with pytest.raises(ConfigError, match=r"names must name exactly the classes 0\.\.3"):
        RTDETR(wrong_names)


def test_info_counts_parameters_and_flops():
    model = RTDETR(copy.deepcopy(TINY_CONFIG))
    params, trainable, gflops = model.info(verbose=False)
    assert params == sum(p.numel() for p in model.model.parameters()) and trainable == params
    assert 0 < gflops < 1


def test_a_config_overrides_its_base(tmp_path):
    """`base:` names a config (beside it or shipped); mappings of the same type merge key by key, the rest
    replaces."""
    (tmp_path / "small.yaml").write_text("base: rtdetr-r50.yaml\nnc: 3\ndecoder: {num_layers: 2}\n")
    (tmp_path / "smaller.yaml").write_text("base: small.yaml\nbackbone: {depths: [1, 1, 1, 1]}\n")
    config = load_model_config(tmp_path / "smaller.yaml")
    shipped = load_model_config("rtdetr-r50")
    assert config["nc"] == 3 and config["names"] == {0: "0", 1: "1", 2: "2"}
    assert config["decoder"] == {**shipped["decoder"], "num_layers": 2}
    assert config["backbone"] == {**shipped["backbone"], "depths": [1, 1, 1, 1]}
    assert "base" not in config
    # a section of another type keeps nothing of the base's (DEIMv2-S: a ViT where its base, N, has HGNetv2)
    (tmp_path / "vit.yaml").write_text("base: small.yaml\nbackbone: {type: dinov3, dim: 64}\n")
    assert load_model_config(tmp_path / "vit.yaml")["backbone"] == {"type": "dinov3", "dim": 64}
    assert load_model_config("deimv2-s")["backbone"]["type"] == "dinov3"


def test_a_base_that_leads_back_is_named(tmp_path):
    (tmp_path / "a.yaml").write_text("base: b.yaml\n")
    (tmp_path / "b.yaml").write_text("base: a.yaml\n")
    with pytest.raises(ConfigError, match=r"b.yaml: base 'a.yaml' leads back to itself"):
        load_model_config(tmp_path / "a.yaml")
    (tmp_path / "c.yaml").write_text("base: [a.yaml]\n")
    with pytest.raises(ConfigError, match=r"c.yaml: base must name a config file"):
        load_model_config(tmp_path / "c.yaml")
