"""D-FINE's decoder (Peng et al., 2024): RT-DETR's query selection, layers with a gateway after the cross-attention
(which samples the encoder tokens without projecting them), and fine-grained distribution refinement:

    layer 0 also predicts an initial box (pre_bbox_head, a delta in logit space from the selected reference)
    every layer adds logits to four edge distributions (over `reg_max + 1` bins, see `distribution`): the box is
    the initial box moved by the distributions' expectations; the next layer starts from it
    class logits + the location-quality estimate of that layer's distributions
"""

from __future__ import annotations

import torch
from torch import nn

from ..common import MLP, init_detection_heads, inverse_sigmoid
from ..validation import Count, ImageSize, Queries, QueriesOrZero, SignedIndex
from .distribution import LocationQuality, distances_to_boxes, expected_distances, weighting_function
from .layer import DecoderLayer
from .two_stage import TwoStageDecoder

QUERY_POS_CLAMP = 10.0  # D-FINE bounds the query position embeddings


class DFineDecoder(TwoStageDecoder):
    """Shapes: [(B, in_channels[i], H_i, W_i)] -> {"boxes": (B, Q, 4) cxcywh in 0..1, "logits": (B, Q, num_classes)},
    taken from decoder layer `eval_idx`.

    Args beyond RT-DETR's decoder: reg_max (bins per edge - 1), reg_scale and up (the bin values' curvature and
    range), lqe_top_k / lqe_hidden_dim / lqe_layers (the location-quality estimator).
    DEIMv2's decoder is this one with other parts: `norm: rms`, `ffn: swiglu`, `gateway: false` for its smallest
    sizes, `share_bbox_head` (one box head for every layer), a 3-layer query position head (`query_pos_layers`,
    `query_pos_width`, `query_pos_act`), computed once from the selected boxes (`query_pos_per_layer: false`, where
    D-FINE recomputes it from every layer's boxes); `head_act`: the activation inside the box and quality heads;
    `proposal_projection`: see `TwoStageDecoder`.
    """

    def __init__(
        self,
        in_channels: list[int],
        in_strides: list[int],
        num_classes: int,
        hidden_dim: int = 256,
        num_queries: Queries = 300,
        num_layers: Count = 6,
        num_heads: Count = 8,
        num_points: Count | list[Count] = (3, 6, 3),
        offset_scale: float = 0.5,
        ffn_dim: int = 1024,
        act: str = "relu",
        dropout: float = 0.0,
        eval_idx: SignedIndex = -1,
        num_denoising: QueriesOrZero = 100,
        label_noise_ratio: float = 0.5,
        box_noise_scale: float = 1.0,
        anchor_size: float = 0.05,
        eval_size: ImageSize | None = 640,
        norm_eps: float = 1e-5,
        reg_max: int = 32,
        reg_scale: float = 4.0,
        up: float = 0.5,
        lqe_top_k: Count = 4,
        lqe_hidden_dim: int = 64,
        lqe_layers: Count = 2,
        norm: str = "layer",
        ffn: str = "mlp",
        gateway: bool = True,
        share_bbox_head: bool = False,
        query_pos_layers: Count = 2,
        query_pos_width: int | None = None,
        query_pos_act: str = "relu",
        head_act: str = "relu",
        query_pos_per_layer: bool = True,
        proposal_projection: bool = True,
    ):
        super().__init__(in_channels, in_strides, num_classes, hidden_dim, num_queries, num_layers, eval_idx,
                         num_denoising, label_noise_ratio, box_noise_scale, anchor_size, eval_size, norm_eps,
                         project_inputs=False, query_pos_layers=query_pos_layers, query_pos_width=query_pos_width,
                         query_pos_act=query_pos_act, head_act=head_act,
                         proposal_projection=proposal_projection)  # fmt: skip
        self.query_pos_per_layer = query_pos_per_layer
        if reg_max < 4 or reg_max % 2:
            raise ValueError(f"reg_max={reg_max} must be an even number of at least 4")
        num_points = list(num_points) if not isinstance(num_points, int) else num_points
        self.reg_scale = reg_scale
        dfine_layer = {"offset_scale": offset_scale, "project_values": False, "gateway": gateway, "norm": norm,
                       "ffn": ffn}  # fmt: skip
        self.layers = nn.ModuleList(
            DecoderLayer(hidden_dim, num_heads, ffn_dim, len(in_channels), num_points, act, dropout, **dfine_layer)
            for _ in range(num_layers)
        )
        self.pre_bbox_head = MLP(hidden_dim, hidden_dim, 4, 3, head_act)
        self.dec_score_head = nn.ModuleList(nn.Linear(hidden_dim, num_classes) for _ in range(num_layers))
        self.dec_bbox_head = nn.ModuleList(  # one, used by every layer, when shared
            MLP(hidden_dim, hidden_dim, 4 * (reg_max + 1), 3, head_act)
            for _ in range(1 if share_bbox_head else num_layers)
        )
        self.lqe_layers = nn.ModuleList(
            LocationQuality(lqe_top_k, lqe_hidden_dim, lqe_layers, head_act) for _ in range(num_layers)
        )
        bins = weighting_function(reg_max, up, reg_scale).float()  # (float64 buffers cannot go to every device)
        self.register_buffer("bin_values", bins, persistent=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Class biases at prior 0.01; box deltas, edge distributions and quality corrections start at zero."""
        self.reset_proposal_heads()
        init_detection_heads(self.dec_score_head, [self.pre_bbox_head, *self.dec_bbox_head])
        for lqe in self.lqe_layers:
            nn.init.zeros_(lqe.reg_conf.layers[-1].weight)
            nn.init.zeros_(lqe.reg_conf.layers[-1].bias)

    def refine(self, queries: torch.Tensor, reference: torch.Tensor, tokens: torch.Tensor,
               shapes: list[tuple[int, int]], layers: int, attn_mask: torch.Tensor | None = None) -> dict:  # fmt: skip
        """Run the first `layers` layers from reference box logits (B, Q, 4).

        Returns per layer run: "boxes" (L, B, Q, 4), "corners" (L, B, Q, 4 * (R + 1)) (the distributions' logits),
        "hidden" (L, B, Q, D); and "initial" (B, Q, 4), layer 0's box that the distances are measured from,
        "pre_boxes" (B, Q, 4) the same with gradient.
        """
        boxes = reference.sigmoid()
        corners = previous = 0
        all_boxes, all_corners, all_hidden = [], [], []
        bbox_heads = self.dec_bbox_head if len(self.dec_bbox_head) > 1 else [self.dec_bbox_head[0]] * layers
        for i, (layer, bbox_head) in enumerate(zip(self.layers[:layers], bbox_heads)):
            if i == 0 or self.query_pos_per_layer:
                query_pos = self.query_pos_head(boxes).clamp(-QUERY_POS_CLAMP, QUERY_POS_CLAMP)
            queries = layer(queries, boxes, query_pos, tokens, shapes, attn_mask)
            if i == 0:
                pre_boxes = torch.sigmoid(self.pre_bbox_head(queries) + inverse_sigmoid(boxes))
                initial = pre_boxes.detach()
            corners = bbox_head(queries + previous) + corners
            refined = distances_to_boxes(initial, expected_distances(corners, self.bin_values), self.reg_scale)
            all_boxes.append(refined)
            all_corners.append(corners)
            all_hidden.append(queries)
            boxes, previous = refined.detach(), queries.detach()
        return {"boxes": torch.stack(all_boxes), "corners": torch.stack(all_corners), "hidden": torch.stack(all_hidden),
                "initial": initial, "pre_boxes": pre_boxes}  # fmt: skip

    def forward(self, features: list[torch.Tensor], targets: list[dict] | None = None) -> dict[str, torch.Tensor]:
        """Inference: {"boxes", "logits"} of layer `eval_idx` (and with `return_queries` its hidden states "queries"
        (B, Q, D), for a mask head). Training: every layer's outputs, see `forward_train`."""
        tokens, shapes = self.flatten_features(features)
        if self.training:
            return self.forward_train(tokens, shapes, targets)
        queries, reference, _, _ = self.select_queries(tokens, shapes)
        refined = self.refine(queries, reference, tokens, shapes, self.eval_idx + 1)
        logits = self.dec_score_head[self.eval_idx](refined["hidden"][-1])
        outputs = {"boxes": refined["boxes"][-1],
                   "logits": self.lqe_layers[self.eval_idx](logits, refined["corners"][-1])}  # fmt: skip
        return {**outputs, "queries": refined["hidden"][-1]} if self.return_queries else outputs

    def forward_train(
        self, tokens: torch.Tensor, shapes: list[tuple[int, int]], targets: list[dict] | None
    ) -> dict[str, torch.Tensor]:
        """-> per layer "boxes" (L, B, Q, 4), "logits" (L, B, Q, C) and "corners" (L, B, Q, 4 * (R + 1)); layer 0's
        initial boxes as an extra set "pre_boxes" (B, Q, 4) / "pre_logits" (B, Q, C) (no quality estimate); the
        "references" (B, Q, 4) the edge distances start from and the "bin_values"/"reg_scale" that place them
        (for D-FINE's losses); "enc_boxes"/"enc_logits" of the proposals; with targets the denoising part as
        "dn_..." (see `split_training_outputs`); with `return_queries` layer eval_idx's hidden states "queries"
        (B, Q, D)."""
        queries, reference, attn_mask, dn, outputs = self.training_queries(tokens, shapes, targets)
        refined = self.refine(queries, reference, tokens, shapes, len(self.layers), attn_mask)
        logits = [lqe(head(h), c) for lqe, head, h, c in
                  zip(self.lqe_layers, self.dec_score_head, refined["hidden"], refined["corners"])]  # fmt: skip
        outputs.update(
            boxes=refined["boxes"], logits=torch.stack(logits), corners=refined["corners"],
            pre_boxes=refined["pre_boxes"], pre_logits=self.dec_score_head[0](refined["hidden"][0]),
            references=refined["initial"], bin_values=self.bin_values, reg_scale=self.reg_scale,
        )  # fmt: skip
        if self.return_queries:
            outputs["queries"] = refined["hidden"][self.eval_idx]
        return self.split_training_outputs(outputs, dn)
