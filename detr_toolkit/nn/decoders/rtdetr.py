"""RT-DETR's decoder: query selection from encoder proposals (see `two_stage`), then deformable decoder layers
that refine the boxes layer by layer; class and box heads after each layer.

    for each layer: self-attention among queries, deformable cross-attention into the tokens, FFN;
                    box head predicts a delta in logit space -> refined reference boxes
"""

from __future__ import annotations

import torch
from torch import nn

from ..common import MLP, init_detection_heads, inverse_sigmoid
from ..validation import Count, ImageSize, Queries, QueriesOrZero, SignedIndex
from .layer import DecoderLayer
from .two_stage import TwoStageDecoder


class RTDETRDecoder(TwoStageDecoder):
    """Query selection + deformable decoder + heads.

    Shapes: [(B, in_channels[i], H_i, W_i)] -> {"boxes": (B, Q, 4) cxcywh in 0..1, "logits": (B, Q, num_classes)},
    taken from decoder layer `eval_idx`.

    RT-DETRv2's options of the cross-attention: `num_points` per level (a list), `offset_scale`, and
    `sampling: discrete` (no GridSample in an exported graph); see `MSDeformableAttention`.
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
        num_points: Count | list[Count] = 4,
        offset_scale: float = 0.5,
        sampling: str = "bilinear",
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
    ):
        super().__init__(in_channels, in_strides, num_classes, hidden_dim, num_queries, num_layers, eval_idx,
                         num_denoising, label_noise_ratio, box_noise_scale, anchor_size, eval_size,
                         norm_eps)  # fmt: skip
        sampling_options = {"offset_scale": offset_scale, "sampling": sampling}
        self.layers = nn.ModuleList(
            DecoderLayer(hidden_dim, num_heads, ffn_dim, len(in_channels), num_points, act, dropout, **sampling_options)
            for _ in range(num_layers)
        )
        self.dec_score_head = nn.ModuleList(nn.Linear(hidden_dim, num_classes) for _ in range(num_layers))
        self.dec_bbox_head = nn.ModuleList(MLP(hidden_dim, hidden_dim, 4, num_layers=3) for _ in range(num_layers))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """RT-DETR's init: class biases at prior 0.01, box deltas at zero, xavier for projections."""
        self.reset_proposal_heads()
        init_detection_heads(self.dec_score_head, self.dec_bbox_head)

    def forward(self, features: list[torch.Tensor], targets: list[dict] | None = None) -> dict[str, torch.Tensor]:
        """Inference: {"boxes", "logits"} of layer `eval_idx` (and with `return_queries` its hidden states "queries"
        (B, Q, D), for a mask head). Training: every layer's outputs, see `forward_train`."""
        tokens, shapes = self.flatten_features(features)
        if self.training:
            return self.forward_train(tokens, shapes, targets)
        queries, reference, _, _ = self.select_queries(tokens, shapes)
        boxes = reference.sigmoid()
        # At inference the layers after eval_idx are never run: their output would be thrown away.
        for layer, bbox_head in zip(self.layers[: self.eval_idx + 1], self.dec_bbox_head):
            queries = layer(queries, boxes, self.query_pos_head(boxes), tokens, shapes)
            boxes = torch.sigmoid(bbox_head(queries) + inverse_sigmoid(boxes))
        outputs = {"boxes": boxes, "logits": self.dec_score_head[self.eval_idx](queries)}
        return {**outputs, "queries": queries} if self.return_queries else outputs

    def forward_train(
        self, tokens: torch.Tensor, shapes: list[tuple[int, int]], targets: list[dict] | None
    ) -> dict[str, torch.Tensor]:
        """-> "boxes" (L, B, Q, 4), "logits" (L, B, Q, C) per layer; "enc_boxes", "enc_logits" (B, Q, ...) of the
        proposals; with targets also "dn_boxes", "dn_logits" (L, B, D, ...) and "dn_meta" (see DetectionCriterion);
        with `return_queries` layer eval_idx's hidden states "queries" (B, Q, D).

        Each layer's loss box is its delta applied to the previous layer's box *with* gradient (RT-DETR's
        "look forward twice"), while the next layer starts from the detached box.
        """
        queries, reference, attn_mask, dn, outputs = self.training_queries(tokens, shapes, targets)
        boxes = reference.sigmoid()
        all_boxes, all_logits, previous = [], [], None
        for index, (layer, bbox_head, score_head) in enumerate(zip(self.layers, self.dec_bbox_head,
                                                                   self.dec_score_head)):  # fmt: skip
            queries = layer(queries, boxes, self.query_pos_head(boxes), tokens, shapes, attn_mask)
            if self.return_queries and index == self.eval_idx:
                outputs["queries"] = queries
            delta = bbox_head(queries)
            refined = torch.sigmoid(delta + inverse_sigmoid(boxes))
            all_boxes.append(refined if previous is None else torch.sigmoid(delta + inverse_sigmoid(previous)))
            all_logits.append(score_head(queries))
            previous, boxes = refined, refined.detach()
        outputs.update(boxes=torch.stack(all_boxes), logits=torch.stack(all_logits))
        return self.split_training_outputs(outputs, dn)
