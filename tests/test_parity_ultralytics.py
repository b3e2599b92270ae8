"""Our implementation against ultralytics on the same checkpoints: raw decoder outputs and final Results."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from conftest import PHOTOS
from matching import match_detections, max_row_error

from detr_toolkit import RTDETR
from detr_toolkit.data.images import read_image
from detr_toolkit.data.sources import Frame
from detr_toolkit.engine.predictor import preprocess
from detr_toolkit.nn import fuse_model

pytestmark = pytest.mark.slow  # every test here takes seconds (see the README's test commands)


def ultralytics_model(path):
    from ultralytics import RTDETR as PeerRTDETR

    return PeerRTDETR(str(path))


def decoder_rows(outputs: dict[str, torch.Tensor] | tuple, image: int) -> torch.Tensor:
    """(Q, 4 + C) rows of boxes and logits of one image, from our outputs or the peer's (y, raw) tuple."""
    if isinstance(outputs, dict):
        return torch.cat([outputs["boxes"], outputs["logits"]], -1)[image]
    boxes, logits = outputs[1][0][-1], outputs[1][1][-1]
    return torch.cat([boxes, logits], -1)[image]


@pytest.mark.parametrize("checkpoint", ["ultralytics_l", "ultralytics_x", "ultralytics_l3"])
def test_raw_decoder_outputs_match(checkpoint, request):
    """Same maths: in float64 ours equals ultralytics to 1e-9, fused or not. Same runtime: in float32
    (both fused, as their predictors run) within max(1e-4, twice ultralytics' own float32 rounding)."""
    path = request.getfixturevalue(checkpoint)
    peer = ultralytics_model(path)
    peer.predict(str(PHOTOS[0]), verbose=False)  # sets up the peer's predictor (and fuses its model)
    peer_fused = peer.predictor.model.model
    peer_plain = ultralytics_model(path).model.float().eval()
    ours = RTDETR(path)
    ours_fused = ours._get_predictor(None, False).model.model
    images = []
    for photo in PHOTOS:
        image = read_image(photo)
        their_input = peer.predictor.preprocess([image])
        our_input = preprocess([Frame(image, str(photo))], 640, torch.device("cpu"), torch.float32)
        assert torch.equal(our_input, their_input), "preprocessing differs"
        images.append(our_input)
    images = torch.cat(images)
    with torch.inference_mode():
        exact = peer_plain.double()(images.double())
        plain64 = copy.deepcopy(ours.model).double()
        for model in (plain64, fuse_model(copy.deepcopy(plain64))):
            outputs = model(images.double())
            for i in range(len(PHOTOS)):
                assert max_row_error(decoder_rows(outputs, i), decoder_rows(exact, i)) < 1e-9
        theirs = peer_fused(images)
        mine = ours_fused(images.contiguous(memory_format=torch.channels_last))
        for i in range(len(PHOTOS)):
            rounding = max_row_error(decoder_rows(theirs, i).double(), decoder_rows(exact, i))
            assert max_row_error(decoder_rows(mine, i), decoder_rows(theirs, i)) < max(1e-4, 2 * rounding)


@pytest.mark.parametrize("conf", [0.0, 0.25])
@pytest.mark.parametrize("checkpoint", ["ultralytics_l", "ultralytics_x", "ultralytics_l3"])
def test_results_match(checkpoint, conf, request):
    path = request.getfixturevalue(checkpoint)
    peer, ours = ultralytics_model(path), RTDETR(path)
    assert ours.names == peer.names
    total = 0
    for photo in PHOTOS:
        theirs = peer.predict(str(photo), conf=conf, verbose=False)[0]
        # on the peer's thread count: sums split over other counts round otherwise (~1e-4 in a random net's scores)
        mine = ours.predict(str(photo), conf=conf, verbose=False, threads=torch.get_num_threads())[0]
        assert mine.orig_shape == theirs.orig_shape
        assert len(mine) == len(theirs)
        total += len(mine)
        a, b = match_detections(mine.boxes.data.numpy(), theirs.boxes.data.numpy())
        assert np.abs(a[:, :4] - b[:, :4]).max(initial=0) < 0.05  # pixels
        assert np.abs(a[:, 4] - b[:, 4]).max(initial=0) < 1e-4
        assert (a[:, 5] == b[:, 5]).all()
    assert total > 0, "the peer checkpoint should produce detections"
