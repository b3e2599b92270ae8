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
from detr_toolkit.config import load_model_config
from detr_toolkit.errors import CheckpointError

CASES = {  # kind of peer -> file name (RT-DETRv2's discrete-sampling checkpoints say "dsp" in theirs)
    "rt_detr_official": "rtdetr_tiny_6x_coco.pth",
    "rt_detr_v2_official": "rtdetrv2_tiny_120e_coco.pth",
    "rt_detr_v2_official_discrete": "rtdetrv2_tiny_dsp_3x_coco.pth",
}


@pytest.mark.slow
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


@pytest.mark.slow
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


# What transformers' DEIMv2 computes differently from the official model (see weights/hf_deimv2.py): set on the
# official import, with transformers' extra tensors, it must compute what transformers' model does.
TRANSFORMERS_DEIMV2 = {"head_act": "relu", "query_pos_per_layer": True, "proposal_projection": True}


@pytest.mark.slow
@pytest.mark.parametrize("size", ["deimv2-atto", "deimv2-s", "deimv2-x"])
def test_official_deimv2_checkpoint_holds_transformers_weights(size, tmp_path):
    """A DEIMv2 model as the official solver saves it ({"model": state}; packed projections, the ViT-Tiny's or
    DINOv3's names, DINOv3's key-bias mask), made from transformers' model of that size with 7 classes: its shipped
    config is found by the shapes, with the file's class count; every tensor lands where our import of the
    transformers folder puts it, and with transformers' few differences switched on it computes what
    transformers' model computes."""
    import copy

    import transformers

    from detr_toolkit.nn import build_model

    _, kwargs = peers.PEER_CONFIGS[size]
    torch.manual_seed(0)
    peer = transformers.Deimv2ForObjectDetection(transformers.Deimv2Config(**kwargs, num_labels=7)).eval()
    kind = "deimv2_dinov3" if "dinov3_vit" in str(kwargs["backbone_config"]) else "deimv2_lite"  # (pixel convention)
    peers.make_realistic_(peers.PixelsIn(peer, kind), peers.photos(160))  # scores that spread, no near-ties
    with torch.no_grad():  # DINOv3 masks its key bias to zero (with rotary positions it would count)
        for name, param in peer.named_parameters():
            if name.endswith("attention.k_proj.bias"):
                param.zero_()
    path = peers.official_deimv2_checkpoint(tmp_path / f"{size}_custom.pth", peer)
    peer.save_pretrained(tmp_path / "hf")
    official, converted = RTDETR(path), RTDETR(tmp_path / "hf")
    assert official.config["decoder"]["hidden_dim"] == load_model_config(size)["decoder"]["hidden_dim"]
    assert len(official.names) == 7
    computed = ("num_batches_tracked", "anchors", "valid_mask")  # (anchors: for each config's eval size)
    mine, theirs = ({k: v for k, v in m.model.state_dict().items() if not k.endswith(computed)}
                    for m in (official, converted))  # fmt: skip
    shared = set(mine) & set(theirs)
    assert set(mine) - shared <= {k for k in mine if k.endswith("k_proj.bias")}  # transformers' ViT-Tiny has none
    assert all(torch.equal(mine[k], theirs[k]) for k in shared if not k.endswith("k_proj.bias"))
    config = copy.deepcopy(official.config)
    config["decoder"].update(TRANSFORMERS_DEIMV2)
    if config["backbone"]["type"] == "dinov3":  # and, in its ViT, taps normed, layer scales, the norms' epsilon
        config["backbone"].update({k: converted.config["backbone"][k] for k in ("tap_norm", "layer_scale", "norm_eps")})
    switched = build_model({k: v for k, v in config.items() if k != "names"}).eval()
    result = switched.load_state_dict({**theirs, **mine}, strict=False)  # the file's, and transformers' extras
    assert all(k.endswith(computed) for k in result.missing_keys) and not result.unexpected_keys, result
    images = peers.photos(160).double()  # exact maths: float32 rounding through a perturbed model can swap queries
    with torch.inference_mode():
        expected, outputs = peers.PixelsIn(peer.double(), kind)(images), switched.double()(images)
    assert (outputs["logits"] - expected.logits).abs().max() < 1e-4  # (our bin values are float32 constants)
    assert (outputs["boxes"] - expected.pred_boxes).abs().max() < 1e-4


@pytest.mark.slow
def test_named_deimv2_weights_are_the_official_hub_safetensors(tmp_path, monkeypatch):
    """`RTDETR("deimv2-atto.safetensors")`: the official HuggingFace repository's `model.safetensors` (the official
    model's state dict, no config), cached under the repository's name; read as DEIMv2-Atto, offline."""
    import transformers
    from safetensors.torch import save_file

    from detr_toolkit.weights import hub

    monkeypatch.setenv("DETR_TOOLKIT_CACHE", str(tmp_path))
    url = "http://127.0.0.1:9/Intellindust/DEIMv2_HGNetv2_ATTO_COCO/resolve/main/model.safetensors"
    monkeypatch.setitem(hub.OFFICIAL_WEIGHTS, "deimv2-atto.safetensors", url)
    cached = tmp_path / "weights" / "DEIMv2_HGNetv2_ATTO_COCO.safetensors"
    with pytest.raises(CheckpointError, match=f"put it at {cached}"):
        RTDETR("deimv2-atto.safetensors")
    _, kwargs = peers.PEER_CONFIGS["deimv2-atto"]
    peer = transformers.Deimv2ForObjectDetection(transformers.Deimv2Config(**kwargs, num_labels=80)).eval()
    state = torch.load(peers.official_deimv2_checkpoint(tmp_path / "atto.pth", peer), weights_only=True)["model"]
    cached.parent.mkdir(exist_ok=True)
    for shared in (
        "decoder.decoder.reg_scale",
        "decoder.decoder.up",
        "decoder.dec_bbox_head.0",
        "decoder.dec_bbox_head.1",
    ):
        state = {k: v for k, v in state.items() if not k.startswith(shared)}  # safetensors keeps one name of each
    save_file({k: v.contiguous() for k, v in state.items()}, cached)
    model = RTDETR("deimv2-atto.safetensors")
    assert model.config["imgsz"] == 320 and model.config["decoder"]["share_bbox_head"] and len(model.names) == 80
    save_file({f"model.{k}": v.contiguous() for k, v in state.items()}, tmp_path / "wrapped.safetensors")
    assert RTDETR(tmp_path / "wrapped.safetensors").config["imgsz"] == 320  # a hub wrapper's names, unwrapped


def test_an_official_deimv2_file_that_fits_no_size_says_where_it_differs(tmp_path):
    """A DEIMv2 file missing one tensor: the error names the closest shipped size and the tensor; one without its
    bin settings names them."""
    import transformers

    _, kwargs = peers.PEER_CONFIGS["deimv2-atto"]
    peer = transformers.Deimv2ForObjectDetection(transformers.Deimv2Config(**kwargs, num_labels=80)).eval()
    state = torch.load(peers.official_deimv2_checkpoint(tmp_path / "atto.pth", peer), weights_only=True)["model"]
    torch.save({"model": {k: v for k, v in state.items() if k != "decoder.pre_bbox_head.layers.0.bias"}},
               tmp_path / "cut.pth")  # fmt: skip
    with pytest.raises(CheckpointError, match=r"cut.pth: .*closest deimv2-atto, 1 tensor\(s\) differ: missing "
                                              r"decoder.pre_bbox_head.layers.0.bias$"):  # fmt: skip
        RTDETR(tmp_path / "cut.pth")
    torch.save({"model": {k: v for k, v in state.items() if not k.endswith("reg_scale")}}, tmp_path / "bins.pth")
    with pytest.raises(CheckpointError, match=r"bins.pth: an official DEIMv2 checkpoint without decoder.reg_scale"):
        RTDETR(tmp_path / "bins.pth")
