"""Every shipped size of a model family against its peer's architecture: the same tensors in the same shapes,
and the parameter counts and GFLOPs the papers publish."""

from __future__ import annotations

import pytest
import torch

from detr_toolkit import RTDETR
from detr_toolkit.config import load_model_config
from detr_toolkit.nn import build_model
from detr_toolkit.weights import hf_rtdetr

# transformers' configs of the official sizes (as its conversion scripts write them), per shipped config.
RESNET = {"model_type": "rt_detr_resnet", "out_indices": [2, 3, 4]}
BASIC = {**RESNET, "layer_type": "basic", "hidden_sizes": [64, 128, 256, 512]}
SMALL = {"encoder_in_channels": [128, 256, 512], "hidden_expansion": 0.5}
R101 = {"backbone_config": {**RESNET, "depths": [3, 4, 23, 3]}, "encoder_hidden_dim": 384, "encoder_ffn_dim": 2048,
        "decoder_in_channels": [384, 384, 384]}  # fmt: skip
PEER_CONFIGS = {
    "rtdetr-r18": ("RTDetrConfig", {"backbone_config": {**BASIC, "depths": [2, 2, 2, 2]}, **SMALL, "decoder_layers": 3}),
    "rtdetr-r34": ("RTDetrConfig", {"backbone_config": {**BASIC, "depths": [3, 4, 6, 3]}, **SMALL, "decoder_layers": 4}),
    "rtdetr-r50": ("RTDetrConfig", {"backbone_config": RESNET}),
    "rtdetr-r101": ("RTDetrConfig", R101),
    "rtdetrv2-s": ("RTDetrV2Config", {"backbone_config": {**BASIC, "depths": [2, 2, 2, 2]}, **SMALL,
                                      "decoder_layers": 3}),
    "rtdetrv2-m": ("RTDetrV2Config", {"backbone_config": RESNET, "hidden_expansion": 0.5}),
    "rtdetrv2-l": ("RTDetrV2Config", {"backbone_config": RESNET}),
    "rtdetrv2-x": ("RTDetrV2Config", R101),
}  # fmt: skip
# (parameters in millions, GFLOPs at 640x640) as the papers give them (RT-DETR Table 2, RT-DETRv2 Table 1).
PUBLISHED = {
    "rtdetr-r18": (20, 60), "rtdetr-r34": (31, 92), "rtdetr-r50": (42, 136), "rtdetr-r101": (76, 259),
    "rtdetrv2-s": (20, 60), "rtdetrv2-m": (36, 100), "rtdetrv2-l": (42, 136), "rtdetrv2-x": (76, 259),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(PEER_CONFIGS))
def test_shapes_equal_the_peers(name):
    """Built on the meta device (nothing allocated): every tensor of transformers' model, renamed to ours, has
    our tensor's shape, and no tensor is left over on either side."""
    import transformers

    config_name, kwargs = PEER_CONFIGS[name]
    with torch.device("meta"):
        peer = transformers.RTDetrForObjectDetection if config_name == "RTDetrConfig" else (
            transformers.RTDetrV2ForObjectDetection)  # fmt: skip
        theirs = peer(getattr(transformers, config_name)(**kwargs, num_labels=80)).state_dict()
        ours = build_model(load_model_config(name)).state_dict()
    renamed = {hf_rtdetr.rename(k): v.shape for k, v in theirs.items()}
    renamed.pop(None, None)
    renamed["decoder.denoising_class_embed.weight"] = torch.Size([80, 256])  # less transformers' padding row
    mine = {k: v.shape for k, v in ours.items() if not k.endswith(("num_batches_tracked", "anchors", "valid_mask"))}
    assert renamed == mine


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_size_and_cost_are_the_papers(name):
    params, _, gflops = RTDETR(f"{name}.yaml").info(verbose=False)
    published_params, published_gflops = PUBLISHED[name]
    assert abs(params / 1e6 - published_params) < 1.0
    assert abs(gflops - published_gflops) / published_gflops < 0.02


def test_the_official_recipe_freezes_norms_and_stem():
    """R50/R101 train with fixed batch-norm statistics and a fixed stem; R18/R34 train every part."""
    from torchvision.ops import FrozenBatchNorm2d

    r50, r18 = build_model(load_model_config("rtdetr-r50")), build_model(load_model_config("rtdetr-r18"))
    assert not any(p.requires_grad for p in r50.backbone.stem.parameters())
    assert all(p.requires_grad for p in r50.backbone.stages.parameters())
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in r50.backbone.modules())
    assert any(isinstance(m, FrozenBatchNorm2d) for m in r50.backbone.modules())
    assert all(p.requires_grad for p in r18.parameters())
