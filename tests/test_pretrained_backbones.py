"""Pretrained backbones named in a model config (`backbone: {weights: FILE}`): timm's ResNet-d and HGNetv2 files,
RT-DETR's PaddlePaddle-converted ResNet-vd files and transformers' DINOv2 / DINOv3 folders, saved here with random
weights, give the feature maps their own networks give; a file that does not fit is named with what does not; a new
model trains from them, a resumed or loaded one does not need the file."""

from __future__ import annotations

import copy
import shutil

import peers
import pytest
import timm
import torch
from conftest import TINY_VIT_CONFIG
from safetensors.torch import save_file

from detr_toolkit import RTDETR
from detr_toolkit.config import load_model_config
from detr_toolkit.engine.trainer import Trainer
from detr_toolkit.errors import CheckpointError, ConfigError
from detr_toolkit.nn.backbones import DINOv3
from detr_toolkit.settings import TrainArgs
from detr_toolkit.weights.backbone import load_backbone_weights


def timm_file(name: str, path, seed: int = 0):
    """timm's `name` with random weights and batch-norm statistics (so that every tensor matters), saved as
    safetensors as timm saves to the hub; -> (path, the timm model in eval mode)."""
    torch.manual_seed(seed)
    model = timm.create_model(name, pretrained=False).eval()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.weight.uniform_(0.5, 1.5)
                module.bias.normal_(0, 0.1)
                module.running_mean.normal_(0, 0.1)
                module.running_var.uniform_(0.5, 1.5)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, path)
    return path, model


def with_weights(config_name: str, weights) -> dict:
    config = load_model_config(config_name)
    config["backbone"]["weights"] = str(weights)
    return config


@pytest.mark.parametrize(
    ("timm_name", "config_name"),
    [("resnet18d", "rtdetr-r18.yaml"), ("resnet50d", "rtdetr-r50.yaml"), ("hgnetv2_b0", "dfine-s.yaml")],
)
def test_timm_backbones_give_timms_features(timm_name, config_name, tmp_path):
    """ResNet-18d (basic blocks: the first stage's identity shortcut becomes our 1x1 projection set to the
    identity), ResNet-50d (frozen norms, as rtdetr-r50's recipe) and HGNetv2-B0 (learnable affine blocks): the
    maps our backbone returns equal timm's intermediates of the same stages."""
    path, theirs = timm_file(timm_name, tmp_path / f"{timm_name}.safetensors")
    ours = RTDETR(with_weights(config_name, path)).model.backbone.eval()
    images = torch.rand(2, 3, 96, 96)
    stages = [i + (1 if timm_name.startswith("resnet") else 0) for i in ours.return_stages]  # timm: 0 is the stem
    with torch.no_grad():
        expected = theirs.forward_intermediates(images, indices=stages, intermediates_only=True)
        got = ours(images)
    assert len(got) == len(expected) == 3
    for mine, reference in zip(got, expected):
        assert mine.shape == reference.shape
        assert (mine - reference).abs().max() <= 1e-5 * reference.abs().max()
    fresh = RTDETR(load_model_config(config_name)).model.backbone.eval()
    with torch.no_grad():
        assert (fresh(images)[-1] - expected[-1]).abs().max() > 0.1 * expected[-1].abs().max()  # the file mattered


def transformers_vit(model_type: str, folder):
    """A small transformers DINOv2 (with or without registers) or DINOv3 ViT with random weights and layer scales,
    saved with `save_pretrained`; -> the model in eval mode."""
    import transformers

    sizes = {"hidden_size": 32, "num_hidden_layers": 3, "num_attention_heads": 2, "patch_size": 16}
    config, model = {
        "dinov2": (transformers.Dinov2Config, transformers.Dinov2Model),
        "dinov2_with_registers": (transformers.Dinov2WithRegistersConfig, transformers.Dinov2WithRegistersModel),
        "dinov3_vit": (transformers.DINOv3ViTConfig, transformers.DINOv3ViTModel),
    }[model_type]
    extra = {"intermediate_size": 64} if model_type == "dinov3_vit" else {"image_size": 64}
    extra |= {"num_register_tokens": 2} if model_type != "dinov2" else {}
    torch.manual_seed(0)
    model = model(config(**sizes, **extra)).eval()
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lambda1" in name or "token" in name:
                parameter.normal_(0, 0.5 if "token" in name else 0.3).add_(1.0 if "lambda1" in name else 0.0)
    model.save_pretrained(folder)
    return model


@pytest.mark.parametrize("model_type", ["dinov2", "dinov2_with_registers", "dinov3_vit"])
def test_transformers_vits_give_their_hidden_states(model_type, tmp_path):
    """RF-DETR's ViT from a DINOv2 folder (class token, registers, position table at its own grid: no resize) and
    DEIMv2's DINOv3 backbone from a DINOv3 folder (rotary positions): the normed patch tokens of the last block
    equal the peer's last hidden state; the ViT's projector and DINOv3's adapter keep their fresh weights."""
    theirs = transformers_vit(model_type, tmp_path / model_type)
    registers = 0 if model_type == "dinov2" else 2
    if model_type == "dinov3_vit":
        section = {"type": "dinov3", "patch_size": 16, "dim": 32, "depth": 3, "num_heads": 2, "ffn_dim": 64,
                   "num_registers": 2, "key_bias": False, "return_blocks": [0, 1, 2], "tap_norm": "all",
                   "weights": str(tmp_path / model_type)}  # fmt: skip
        ours = DINOv3(**{k: v for k, v in section.items() if k not in ("type", "weights")})
        fresh = {k: v.clone() for k, v in ours.state_dict().items() if k.startswith("adapter.")}
        load_backbone_weights(ours, section)
    else:
        plain = copy.deepcopy(TINY_VIT_CONFIG)
        plain["backbone"].update(depth=3, pos_embed_size=4, num_registers=registers, window_grid=1,
                                 global_blocks=[0, 1, 2], out_indices=[1, 2])  # fmt: skip
        config = copy.deepcopy(plain)
        config["backbone"]["weights"] = str(tmp_path / model_type)
        torch.manual_seed(5)
        fresh = {k: v for k, v in RTDETR(plain).model.backbone.state_dict().items() if k.startswith("projector.")}
        torch.manual_seed(5)
        ours = RTDETR(config).model.backbone
    ours.eval()
    images = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        hidden = theirs(pixel_values=images).last_hidden_state[:, 1 + registers :]
        mine = ours.taps(images)[-1].flatten(2).transpose(1, 2)
    assert hidden.std() > 0.1
    assert (mine - hidden).abs().max() < 1e-5
    own = ours.state_dict()
    assert all(torch.equal(own[k], v) for k, v in fresh.items())


def test_a_vit_folder_that_disagrees_with_the_config_is_named(tmp_path):
    transformers_vit("dinov2", tmp_path / "dinov2")
    config = copy.deepcopy(TINY_VIT_CONFIG)
    config["backbone"].update(depth=3, pos_embed_size=4, num_heads=4, weights=str(tmp_path / "dinov2"))
    with pytest.raises(CheckpointError, match="config.json has num_attention_heads=2; the model config's backbone has "
                                              "num_heads=4"):  # fmt: skip
        RTDETR(config)
    section = {"type": "dinov3", "dim": 32, "depth": 3, "num_heads": 2, "weights": str(tmp_path / "dinov2")}
    with pytest.raises(CheckpointError, match="a transformers dinov2 folder; a dinov3 backbone reads dinov3_vit"):
        load_backbone_weights(DINOv3(dim=32, depth=3, num_heads=2, return_blocks=[0, 1, 2]), section)


@pytest.mark.slow
def test_rtdetr_paddle_backbone_file_gives_the_official_models_backbone(tmp_path, monkeypatch):
    """An RT-DETR ResNet-vd file as the official recipe downloads it (ResNet*_vd_pretrained_from_paddle.pth: the
    PResNet's own state dict), cut here from an official checkpoint made of transformers' peer and put where its
    name is looked for offline: a model whose config names it computes the checkpoint's backbone maps."""
    from detr_toolkit.weights import hub

    monkeypatch.setenv("DETR_TOOLKIT_CACHE", str(tmp_path / "cache"))
    official, _, _ = peers.official_checkpoint(tmp_path, "rt_detr_official")
    whole = torch.load(official, weights_only=True)["ema"]["module"]
    name = "ResNet18_vd_pretrained_from_paddle.pth"
    hub.official_file(name).parent.mkdir(parents=True)
    torch.save({k.removeprefix("backbone."): v for k, v in whole.items() if k.startswith("backbone.")},
               hub.official_file(name))  # fmt: skip
    reference = RTDETR(official)
    config = copy.deepcopy(reference.config)
    config["backbone"]["weights"] = name
    ours = RTDETR(config)
    images = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        for mine, theirs in zip(ours.model.backbone(images), reference.model.backbone(images)):
            assert torch.equal(mine, theirs)
    assert not torch.equal(
        ours.model.decoder.dec_score_head[0].weight, reference.model.decoder.dec_score_head[0].weight
    )


def test_backbone_files_that_do_not_fit_are_named(tmp_path):
    import torchvision

    path, model = timm_file("resnet18d", tmp_path / "resnet18d.safetensors")
    state = dict(model.state_dict())
    del state["layer2.0.conv1.weight"]
    state["layer2.0.extra.weight"] = torch.zeros(1)
    save_file({k: v.contiguous() for k, v in state.items()}, tmp_path / "broken.safetensors")
    with pytest.raises(CheckpointError) as error:
        RTDETR(with_weights("rtdetr-r18.yaml", tmp_path / "broken.safetensors"))
    message = str(error.value)
    assert "broken.safetensors" in message and "\n" not in message
    assert "unexpected: stages.1.0.extra.weight" in message and "missing: stages.1.0.convs.0.conv.weight" in message
    with pytest.raises(CheckpointError, match="of other shapes: stages.0.0.convs.0.conv.weight"):
        RTDETR(with_weights("rtdetr-r50.yaml", path))  # an R18 file for an R50
    with pytest.raises(CheckpointError, match="holds a timm ResNet-d backbone; the model config's backbone is hgnetv2"):
        RTDETR(with_weights("dfine-s.yaml", path))
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), tmp_path / "resnet18-torchvision.pth")
    with pytest.raises(CheckpointError, match="resnet18-torchvision.pth: a ResNet with a single 7x7 stem conv"):
        RTDETR(with_weights("rtdetr-r18.yaml", tmp_path / "resnet18-torchvision.pth"))
    with pytest.raises(CheckpointError, match="absent.pth: no such checkpoint file"):
        RTDETR(with_weights("rtdetr-r18.yaml", tmp_path / "absent.pth"))
    config = load_model_config("rtdetr-r18.yaml")
    config["backbone"]["weights"] = 3
    with pytest.raises(ConfigError, match="backbone: weights must name a file, got 3"):
        RTDETR(config)


@pytest.mark.slow
def test_training_starts_from_the_backbone_file_and_resumes_without_it(shapes, tmp_path):
    """A new training's model has the file's backbone (and the seed's encoder and decoder); the run's checkpoints
    stand alone: the file removed, the run resumes and its weights load."""
    data, _ = shapes
    path, _ = timm_file("hgnetv2_b0", tmp_path / "hgnetv2_b0.safetensors", seed=1)
    config = with_weights("dfine-s.yaml", path)
    narrow = {"hidden_dim": 32, "ffn_dim": 64, "num_heads": 4}
    config["encoder"].update(narrow)
    config["decoder"].update(narrow, num_queries=20, num_points=[2, 2, 2], eval_size=64)
    settings = {"data": str(data), "batch": 4, "imgsz": 64, "workers": 0, "plots": False, "verbose": False}
    args = TrainArgs.create(**settings, project=str(tmp_path), name="setup", val=False)
    trainer = Trainer(copy.deepcopy(config), None, args)
    expected = RTDETR(copy.deepcopy(config)).model.backbone.state_dict()
    for key, tensor in trainer.model.backbone.state_dict().items():
        assert torch.equal(tensor, expected[key]), key
    run = RTDETR(copy.deepcopy(config)).train(**settings, epochs=1, project=tmp_path, name="run")
    shutil.move(path, tmp_path / "elsewhere.safetensors")
    RTDETR(run / "weights" / "last.safetensors").train(resume=str(run / "weights" / "last.pt"), epochs=2)
    trained = RTDETR(run / "weights" / "last.safetensors")
    assert trained.config["backbone"]["weights"] == str(path)  # said, not needed
    changed = "stages.3.blocks.0.layers.0.depthwise.conv.weight"
    assert not torch.equal(trained.model.backbone.state_dict()[changed], expected[changed])  # trained
