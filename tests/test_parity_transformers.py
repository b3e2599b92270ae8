"""Our detectors against transformers' RF-DETR, LW-DETR, RT-DETR, RT-DETRv2, D-FINE and DEIMv2 on the same
`save_pretrained` weights (folders written by transformers, read by us without it)."""

from __future__ import annotations

import peers
import pytest
import torch
from conftest import PHOTOS
from matching import match_detections

from detr_toolkit import RTDETR
from detr_toolkit.data.images import read_image
from detr_toolkit.data.sources import Frame
from detr_toolkit.engine.predictor import preprocess

KINDS = [
    "rf_detr",
    "lw_detr",
    "rt_detr",
    "rt_detr_v2",
    "rt_detr_v2_discrete",
    "d_fine",
    "d_fine_wide",
    "deimv2_lite",
    "deimv2_hgnet",
    "deimv2_dinov3",
    "deimv2_vit_tiny",
]


@pytest.fixture(scope="module", params=KINDS)
def peer(request, tmp_path_factory):
    """(kind, transformers model, its saved folder, input size)."""
    model, size = peers.transformers_model(request.param)
    folder = tmp_path_factory.mktemp("hf") / request.param
    model.save_pretrained(folder)
    return request.param, model, folder, size


def photo_batch(size: int) -> torch.Tensor:
    frames = [Frame(read_image(p), str(p)) for p in PHOTOS]
    return preprocess(frames, size, torch.device("cpu"), torch.float32)


@pytest.mark.slow
def test_raw_outputs_match(peer):
    """Same weights, same photos: logits and boxes agree to 1e-4 (float32 on both sides), or, for a peer whose own
    float32 rounding is larger (the perturbed tiny D-FINE: ~1.5e-4 from its float64 result), to twice that."""
    import copy

    kind, model, folder, size = peer
    ours = RTDETR(folder)
    images = photo_batch(size)
    with torch.inference_mode():
        theirs = model(pixel_values=peers.pixel_values(kind, images))
        exact = copy.deepcopy(model).double()(pixel_values=peers.pixel_values(kind, images).double())
        mine = ours.model(images)
        fused = ours._get_predictor(None, False).model.model(images.contiguous(memory_format=torch.channels_last))
    assert theirs.logits.std() > 0.5, "peer scores do not spread: the test would prove little"
    tolerance = max(1e-4, 2 * (theirs.logits.double() - exact.logits).abs().max().item())
    for outputs in (mine, fused):
        assert (outputs["logits"] - theirs.logits).abs().max() < tolerance
        assert (outputs["boxes"] - theirs.pred_boxes).abs().max() < 1e-4


@pytest.mark.slow
@pytest.mark.parametrize("conf", [0.0, 0.3])
def test_detections_match_post_processing(peer, conf):
    """Our predict() against the peer's `post_process_object_detection` on the same pixels."""
    kind, model, folder, size = peer
    ours = RTDETR(folder)
    assert ours.names == {i: f"class{i}" for i in range(5)}
    images = photo_batch(size)
    with torch.inference_mode():
        outputs = model(pixel_values=peers.pixel_values(kind, images))
    shapes = [read_image(p).shape[:2] for p in PHOTOS]
    processor = peers.image_processor(kind)
    expected = processor.post_process_object_detection(outputs, threshold=conf, target_sizes=shapes)
    for photo, wanted in zip(PHOTOS, expected):
        result = ours.predict(photo, imgsz=size, conf=conf, verbose=False)[0]
        theirs = torch.cat([wanted["boxes"], wanted["scores"][:, None], wanted["labels"][:, None].float()], 1)
        assert len(result) == len(theirs) > 0
        mine, paired = match_detections(result.boxes.data.numpy(), theirs.numpy())
        assert abs(mine[:, :4] - paired[:, :4]).max() < 0.05  # pixels
        assert abs(mine[:, 4] - paired[:, 4]).max() < 1e-4
        assert (mine[:, 5] == paired[:, 5]).all()


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["rt_detr", "rt_detr_v2", "d_fine", "deimv2_lite", "deimv2_dinov3"])
def test_non_square_input_matches_the_rt_detr_family(kind, tmp_path):
    """A 128x224 batch of both photos: anchors, the encoder's position embedding, deformable sampling and (DEIMv2)
    the ViT's rotary positions and the adapter all follow a non-square grid as transformers' do."""
    model, _ = peers.transformers_model(kind)
    model.save_pretrained(tmp_path / kind)
    images = torch.nn.functional.interpolate(peers.photos(256), size=(128, 224), mode="bilinear")
    with torch.inference_mode():
        theirs, mine = model(pixel_values=peers.pixel_values(kind, images)), RTDETR(tmp_path / kind).model(images)
    assert (mine["logits"] - theirs.logits).abs().max() < 1e-4
    assert (mine["boxes"] - theirs.pred_boxes).abs().max() < 1e-4


def test_non_square_input_matches_lw_detr(tmp_path):
    """LW-DETR's peer windows non-square token grids correctly (RF-DETR's swaps height and width), so the
    non-square check is made against it: a 128x256 input, 2x2 windows of 4x8 patches."""
    model, size = peers.transformers_model("lw_detr")
    model.save_pretrained(tmp_path)
    images = photo_batch(size)[:, :, : size // 2]
    with torch.inference_mode():
        theirs = model(pixel_values=peers.pixel_values("lw_detr", images))
        mine = RTDETR(tmp_path).model(images)
    assert (mine["logits"] - theirs.logits).abs().max() < 1e-4
    assert (mine["boxes"] - theirs.pred_boxes).abs().max() < 1e-4


def test_roboflow_pth_layout_loads(tmp_path):
    """rf-detr's own .pth (`{"model": state dict, "args": Namespace}`) holds the same tensors as transformers'
    saved RF-DETR; loaded through the restricted unpickler, it predicts what the peer does."""
    from safetensors.torch import load_file

    model, size = peers.transformers_model("rf_detr")
    model.save_pretrained(tmp_path / "hf")
    args = peers.roboflow_args("rf_detr", size, class_names=[f"class{i}" for i in range(5)])
    torch.save({"model": load_file(tmp_path / "hf" / "model.safetensors"), "args": args}, tmp_path / "rf.pth")
    ours = RTDETR(tmp_path / "rf.pth")
    assert ours.config["imgsz"] == size and ours.names[4] == "class4"
    images = photo_batch(size)
    with torch.inference_mode():
        theirs = model(pixel_values=peers.pixel_values("rf_detr", images))
        mine = ours.model(images)
    assert (mine["logits"] - theirs.logits).abs().max() < 1e-4
    assert (mine["boxes"] - theirs.pred_boxes).abs().max() < 1e-4
