"""The ViT family: shipped configs have the peers' shapes; windows, strides and non-square inputs behave."""

from __future__ import annotations

import copy
import inspect

import pytest
import torch
from conftest import PHOTOS

from detr_toolkit import RTDETR
from detr_toolkit.config import load_model_config
from detr_toolkit.errors import ConfigError
from detr_toolkit.nn.backbones import BACKBONES, ViT
from detr_toolkit.nn.detector import DECODERS, ENCODERS
from detr_toolkit.nn.projector import MultiScaleProjector
from detr_toolkit.weights.hf_lwdetr import convert_config


def with_defaults(section: dict, registry: dict) -> dict:
    """A config section with every constructor default filled in (the ViT's projector too)."""

    def defaults(cls):
        return {k: p.default for k, p in inspect.signature(cls).parameters.items() if p.default is not p.empty}

    filled = {**defaults(registry[section["type"]]), **section}
    if "projector" in filled:
        filled["projector"] = {**defaults(MultiScaleProjector), **(filled["projector"] or {})}
    return {k: list(v) if isinstance(v, tuple) else v for k, v in filled.items()}


def rf_detr_config(decoder_layers: int = 3, **backbone):
    from transformers import RfDetrConfig

    vit = {"model_type": "rf_detr_dinov2", "hidden_size": 384, "num_attention_heads": 6, "num_hidden_layers": 12}
    return RfDetrConfig(
        backbone_config={**vit, **backbone}, decoder_layers=decoder_layers, decoder_n_points=2, num_labels=80
    )


def lw_detr_tiny_config():
    from transformers import LwDetrConfig

    vit = {
        "model_type": "lw_detr_vit", "hidden_size": 192, "num_hidden_layers": 6, "num_attention_heads": 3,
        "window_block_indices": [0, 2, 4], "out_indices": [1, 3, 5], "image_size": 640, "pretrain_image_size": 640,
        "patch_size": 16, "num_windows": 16,
    }  # fmt: skip
    return LwDetrConfig(
        backbone_config=vit, projector_scale_factors=[1.0], num_queries=100, decoder_n_points=2, num_labels=80
    )


PEER_SHAPES = {
    "rfdetr-base": lambda: rf_detr_config(image_size=518, patch_size=14, num_windows=4,
                                          out_features=["stage2", "stage5", "stage8", "stage11"]),
    "rfdetr-small": lambda: rf_detr_config(image_size=512, patch_size=16, num_windows=2,
                                           out_features=["stage3", "stage6", "stage9", "stage12"]),
    "rfdetr-nano": lambda: rf_detr_config(image_size=384, patch_size=16, num_windows=2, decoder_layers=2,
                                          out_features=["stage3", "stage6", "stage9", "stage12"]),
    "lwdetr-tiny": lw_detr_tiny_config,
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(PEER_SHAPES))
def test_shipped_vit_configs_are_the_peer_architectures(name):
    """Our YAML equals the config we translate from transformers' RF-DETR / LW-DETR of that size."""
    peer = PEER_SHAPES[name]()
    translated = convert_config(peer.to_dict(), None)
    shipped = load_model_config(name)
    for part, registry in (("backbone", BACKBONES), ("encoder", ENCODERS), ("decoder", DECODERS)):
        assert with_defaults(shipped[part], registry) == with_defaults(translated[part], registry), part
    assert (shipped["mean"], shipped["std"], shipped["nc"]) == (translated["mean"], translated["std"], 80)


VIT_TINY = {
    "nc": 3,
    "imgsz": 112,
    "mean": [0.5, 0.5, 0.5],
    "std": [0.25, 0.25, 0.25],
    "backbone": {
        "type": "vit", "dim": 32, "depth": 3, "num_heads": 2, "patch_size": 14, "pos_embed_size": 4, "window_grid": 2,
        "global_blocks": [2], "out_indices": [1, 2], "num_registers": 2,
        "projector": {"scale_factors": [2.0, 1.0, 0.5], "out_channels": 32, "blocks": 1},
    },
    "encoder": {"type": "hybrid", "hidden_dim": 32, "ffn_dim": 64, "num_heads": 4, "csp_blocks": 1},
    "decoder": {"type": "rtdetr", "hidden_dim": 32, "num_queries": 20, "num_layers": 2, "num_heads": 4,
                "num_points": 2, "ffn_dim": 64, "eval_size": None},
}  # fmt: skip


def test_vit_in_front_of_the_rtdetr_family_predicts():
    model = RTDETR(copy.deepcopy(VIT_TINY))
    result = model.predict(PHOTOS[0], conf=0.0, verbose=False)[0]
    assert len(result) == 20 and result.boxes.xyxy.isfinite().all()
    params, _, gflops = model.info(verbose=False)
    assert params > 0 and gflops > 0
    with pytest.raises(ConfigError, match="imgsz=100: must be a multiple of 28 for this model"):
        model.predict(PHOTOS[0], imgsz=100, verbose=False)


def test_windows_are_independent_until_a_global_block():
    """Blocks before the first global one see only their window: pixels of the other windows change nothing."""
    torch.manual_seed(0)
    vit = ViT(dim=32, depth=2, num_heads=2, patch_size=14, pos_embed_size=4, window_grid=2, global_blocks=(1,),
              out_indices=(0, 1), projector={"out_channels": 16, "blocks": 1}).eval()  # fmt: skip
    taps = []
    vit.projector.register_forward_hook(lambda module, inputs, output: taps.append(inputs[0]))  # the raw ViT maps
    image = torch.rand(1, 3, 112, 168)  # non-square: an 8 x 12 patch grid, windows of 4 x 6
    changed = image.clone()
    changed[:, :, 56:, 84:] = torch.rand(1, 3, 56, 84)  # only the bottom-right window
    with torch.no_grad():
        vit(image), vit(changed)
    (local, mixed), (local2, mixed2) = taps
    assert torch.equal(local[..., :4, :], local2[..., :4, :]) and torch.equal(local[..., :, :6], local2[..., :, :6])
    assert not torch.equal(local[..., 4:, 6:], local2[..., 4:, 6:])
    assert not torch.allclose(mixed[..., :4, :6], mixed2[..., :4, :6])  # the global block lets it through


@pytest.mark.parametrize("kind", ["rf_detr", "lw_detr"])
def test_projector_norm_epsilons_are_the_peers(kind):
    """The projector's convolution norms take norm_eps; each level's closing LayerNorm takes out_norm_eps, which
    RF-DETR and LW-DETR keep at 1e-6 whatever norm_eps is (transformers' modules, compared here)."""
    import peers
    from torch import nn

    peer, _ = peers.transformers_model(kind)
    theirs = [m.eps for n, m in peer.named_modules() if "projector" in n and n.endswith("layer_norm")]
    ours = MultiScaleProjector([32, 32], scale_factors=[1.0], out_channels=16, blocks=1, norm="batch", norm_eps=1e-3,
                               out_norm_eps=1e-4)  # fmt: skip
    assert ours.levels[0].norm.eps == 1e-4
    assert {m.eps for m in ours.modules() if isinstance(m, nn.BatchNorm2d)} == {1e-3}
    converted = convert_config(peer.config.to_dict(), None)
    default = MultiScaleProjector([32], **converted["backbone"]["projector"])
    assert [level.norm.eps for level in default.levels] == theirs
