"""The weight EMA: d * ema + (1 - d) * model per step with the ramped decay for parameters and batch-norm
statistics; other buffers copied."""

from __future__ import annotations

import math

import torch
from torch import nn

from detr_toolkit.engine.ema import ModelEMA


def test_ema_follows_the_formula_across_steps_and_models():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    ema = ModelEMA(model, decay=0.9, tau=2)
    expected = {k: v.clone() for k, v in ema.module.state_dict().items()}
    for step in range(1, 4):
        with torch.no_grad():  # an optimizer step and a batch-norm update, in place
            for param in model.parameters():
                param.add_(torch.randn_like(param))
        model.train()(torch.randn(2, 3, 8, 8))
        ema.update(model)
        d = 0.9 * (1 - math.exp(-step / 2))
        for key, value in model.state_dict().items():
            if value.dtype.is_floating_point:
                expected[key] = d * expected[key] + (1 - d) * value
            else:
                expected[key] = value.clone()
        for key, value in ema.module.state_dict().items():
            torch.testing.assert_close(value, expected[key], rtol=1e-6, atol=1e-6)
    assert ema.module.state_dict()["1.num_batches_tracked"] == 3
    other = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))  # another model: its own tensors are averaged
    ema.update(other)
    d = 0.9 * (1 - math.exp(-4 / 2))
    torch.testing.assert_close(ema.module[0].weight, d * expected["0.weight"] + (1 - d) * other[0].weight)


def test_ema_copies_constant_buffers_such_as_anchors_with_inf():
    """A decoder's anchors are inf at invalid positions: averaged by lerp they became NaN (inf - inf), and the EMA
    model's proposals at those positions NaN boxes (seen training rtdetr-l from scratch on a GPU: val NaN from the
    second epoch). Constant buffers are copied, so they stay what the model holds."""
    from conftest import TINY_CONFIG

    from detr_toolkit.nn import build_model

    # at 640 the border cells of stride 8 have their centres within 1% of the edge: invalid
    model = build_model({**TINY_CONFIG, "imgsz": 640, "decoder": {**TINY_CONFIG["decoder"], "eval_size": 640}})
    anchors = model.decoder.anchors
    assert torch.isinf(anchors).any()  # invalid positions, as upstream RT-DETR marks them
    ema = ModelEMA(model, decay=0.9, tau=2)
    for _ in range(3):
        with torch.no_grad():
            for param in model.parameters():
                param.add_(0.01)
        ema.update(model)
    assert torch.equal(ema.module.decoder.anchors, anchors)
    assert not torch.equal(ema.module.decoder.enc_score_head.bias, model.decoder.enc_score_head.bias)  # averaged
    ema.module.eval()
    with torch.no_grad():
        outputs = ema.module(torch.rand(1, 3, 640, 640))
    assert torch.isfinite(outputs["boxes"]).all() and torch.isfinite(outputs["logits"]).all()


def test_weights_with_stale_anchors_load_the_ones_their_config_gives(tmp_path):
    """Checkpoints saved before that fix hold NaN anchors: those are left out, the config's are kept."""
    from pathlib import Path

    from detr_toolkit import RTDETR
    from detr_toolkit.nn.decoders.anchors import generate_anchors

    model = RTDETR(Path(__file__).parent.parent / "assets" / "rtdetr-tiny-shapes.safetensors")
    decoder = model.model.decoder
    # computed here (the file's own may differ in the last bit: log() rounds differently on another CPU)
    expected, _ = generate_anchors(decoder.eval_shapes, decoder.anchor_size)
    model.model.decoder.anchors[0, :3] = float("nan")
    model.save(tmp_path / "stale.safetensors")
    assert torch.equal(RTDETR(tmp_path / "stale.safetensors").model.decoder.anchors, expected)
