"""The official lyuwenyu/RT-DETR and RT-DETRv2 checkpoints (.pth): read through the restricted unpickler, their
architecture inferred from the tensors, they compute what transformers computes with the same weights.

The files are made from transformers' peers, renamed to the official layout (`peers.OFFICIAL_NAMES`, the names
transformers' conversion scripts read from the released files); the loader was also checked against modules
built from the official code (see the closing note of the issue).
"""

from __future__ import annotations

import peers
import pytest
import torch

from detr_toolkit import RTDETR
from detr_toolkit.errors import CheckpointError

CASES = {  # kind of peer -> file name (RT-DETRv2's discrete-sampling checkpoints say "dsp" in theirs)
    "rt_detr_official": "rtdetr_tiny_6x_coco.pth",
    "rt_detr_v2_official": "rtdetrv2_tiny_120e_coco.pth",
    "rt_detr_v2_official_discrete": "rtdetrv2_tiny_dsp_3x_coco.pth",
}


@pytest.mark.parametrize("kind", sorted(CASES))
def test_official_checkpoints_compute_what_transformers_does(kind, tmp_path):
    """EMA weights taken (the file's `model` entry is zeroed), heads and points per level inferred, discrete
    sampling from the file name: logits and boxes equal the peer's on the photos, a batch of 2. In float64: the
    perturbed 300-query peer amplifies float32 rounding to ~1e-3 on its own (see `peers.make_realistic_`)."""
    path, peer, size = peers.official_checkpoint(tmp_path, kind, CASES[kind])
    ours = RTDETR(path)
    assert ours.config["decoder"].get("sampling", "bilinear") == ("discrete" if "discrete" in kind else "bilinear")
    images = peers.photos(size).double()
    with torch.inference_mode():
        theirs, mine = peer.double()(pixel_values=images), ours.model.double()(images)
    assert theirs.logits.std() > 0.5
    assert (mine["logits"] - theirs.logits).abs().max() < 1e-6
    assert (mine["boxes"] - theirs.pred_boxes).abs().max() < 1e-6


def test_a_released_size_takes_its_shipped_config(tmp_path):
    """RT-DETRv2-M's shapes are those of rtdetrv2.yaml's M: its prediction comes from decoder layer 3 (a setting no
    tensor holds), and its 80 classes are COCO's."""
    import transformers

    from detr_toolkit.weights import official_rtdetr

    resnet = {"model_type": "rt_detr_resnet", "out_indices": [2, 3, 4]}
    torch.manual_seed(0)
    peer = transformers.RTDetrV2ForObjectDetection(
        transformers.RTDetrV2Config(backbone_config=resnet, hidden_expansion=0.5, num_labels=80)
    )
    path, _, _ = peers.official_checkpoint(tmp_path, "rt_detr_v2", "m.pth", model=peer)
    from detr_toolkit.weights.safe_pickle import load_foreign_checkpoint

    config, _ = official_rtdetr.convert(load_foreign_checkpoint(path), path)
    assert (
        config["decoder"]["eval_idx"] == 2 and config["names"][0] == "person" and config["encoder"]["expansion"] == 0.5
    )


def test_an_unknown_tensor_is_named(tmp_path):
    path, _, _ = peers.official_checkpoint(tmp_path, "rt_detr_official")
    checkpoint = torch.load(path, weights_only=True)
    checkpoint["ema"]["module"]["decoder.extra_head.weight"] = torch.zeros(2)
    torch.save(checkpoint, tmp_path / "odd.pth")
    with pytest.raises(CheckpointError, match=r"odd.pth: unexpected tensor 'decoder.extra_head.weight'"):
        RTDETR(tmp_path / "odd.pth")


def test_named_official_weights_come_from_the_cache_offline(tmp_path, monkeypatch):
    """`RTDETR("rtdetrv2-s-dsp.pth")` reads the official file from the cache under its official name (no network
    needed once there); without it, offline, the error says where to put it."""
    from detr_toolkit.weights import hub

    monkeypatch.setenv("DETR_TOOLKIT_CACHE", str(tmp_path))
    monkeypatch.setitem(
        hub.OFFICIAL_WEIGHTS, "rtdetrv2-s-dsp.pth", "http://127.0.0.1:9/v0.1/rtdetrv2_r18vd_dsp_3x_coco.pth"
    )
    with pytest.raises(CheckpointError, match=f"put it at {tmp_path / 'weights' / 'rtdetrv2_r18vd_dsp_3x_coco.pth'}"):
        RTDETR("rtdetrv2-s-dsp.pth")
    (tmp_path / "weights").mkdir(exist_ok=True)
    peers.official_checkpoint(tmp_path / "weights", "rt_detr_v2_official_discrete", "rtdetrv2_r18vd_dsp_3x_coco.pth")
    assert RTDETR("rtdetrv2-s-dsp.pth").config["decoder"]["sampling"] == "discrete"


def test_official_dfine_checkpoint_computes_what_transformers_does(tmp_path):
    """D-FINE-N as Peterande/D-FINE releases it (`{"model": EMA state}`, packed attention, reg_scale and up twice):
    its shipped config is found by the tensors' shapes, with the file's class count; outputs equal transformers'."""
    import transformers

    _, kwargs = peers.PEER_CONFIGS["dfine-n"]
    torch.manual_seed(0)
    peer = transformers.DFineForObjectDetection(transformers.DFineConfig(**kwargs, num_labels=7)).eval()
    path = peers.official_dfine_checkpoint(tmp_path / "dfine_n_custom.pth", peer)
    ours = RTDETR(path)
    assert ours.config["backbone"]["stages"][2]["out"] == 512 and len(ours.names) == 7
    images = peers.photos(320)
    with torch.inference_mode():
        theirs, mine = peer(pixel_values=images), ours.model(images)
    assert (mine["logits"] - theirs.logits).abs().max() < 1e-4
    assert (mine["boxes"] - theirs.pred_boxes).abs().max() < 1e-4
