"""RT-DETR's decoder: IoU-aware query selection from encoder proposals, then deformable decoder layers
that refine the boxes layer by layer; class and box heads after each layer.

    encoder maps --input_proj--> tokens (B, S, D) --enc_output--> proposal scores/boxes per token
    top-k tokens by best class score -> queries (content) + reference boxes (anchor + predicted delta)
    for each layer: self-attention among queries, deformable cross-attention into the tokens, FFN;
                    box head predicts a delta in logit space -> refined reference boxes
"""

from __future__ import annotations

import torch
from torch import nn

from ..common import MLP, init_detection_heads, inverse_sigmoid
from ..conv import ConvNormAct
from .anchors import generate_anchors, level_shapes
from .denoising import denoising_queries
from .layer import DecoderLayer
from .queries import gather_tokens, top_k_indices


class RTDETRDecoder(nn.Module):
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
        num_queries: int = 300,
        num_layers: int = 6,
        num_heads: int = 8,
        num_points: int | list[int] = 4,
        offset_scale: float = 0.5,
        sampling: str = "bilinear",
        ffn_dim: int = 1024,
        act: str = "relu",
        dropout: float = 0.0,
        eval_idx: int = -1,
        num_denoising: int = 100,
        label_noise_ratio: float = 0.5,
        box_noise_scale: float = 1.0,
        anchor_size: float = 0.05,
        eval_size: int | None = 640,
        norm_eps: float = 1e-5,
    ):
        super().__init__()
        if not -num_layers <= eval_idx < num_layers:
            raise ValueError(
                f"eval_idx={eval_idx} must name one of the {num_layers} layers (-{num_layers}..{num_layers - 1})"
            )
        if eval_size and eval_size % max(in_strides):
            raise ValueError(f"eval_size={eval_size} must be a multiple of the largest stride {max(in_strides)}")
        self.num_queries = num_queries
        self.num_classes = num_classes
        self.eval_idx = eval_idx % num_layers
        self.anchor_size = anchor_size
        self.num_denoising = num_denoising
        self.label_noise_ratio = label_noise_ratio
        self.box_noise_scale = box_noise_scale
        self.input_proj = nn.ModuleList(ConvNormAct(c, hidden_dim, 1, act=None, norm_eps=norm_eps) for c in in_channels)
        sampling_options = {"offset_scale": offset_scale, "sampling": sampling}
        self.layers = nn.ModuleList(
            DecoderLayer(hidden_dim, num_heads, ffn_dim, len(in_channels), num_points, act, dropout, **sampling_options)
            for _ in range(num_layers)
        )
        self.denoising_class_embed = nn.Embedding(num_classes, hidden_dim)
        self.query_pos_head = MLP(4, 2 * hidden_dim, hidden_dim, num_layers=2)
        self.enc_output = nn.Sequential(nn.Linear(hidden_dim, hidden_dim), nn.LayerNorm(hidden_dim))
        self.enc_score_head = nn.Linear(hidden_dim, num_classes)
        self.enc_bbox_head = MLP(hidden_dim, hidden_dim, 4, num_layers=3)
        self.dec_score_head = nn.ModuleList(nn.Linear(hidden_dim, num_classes) for _ in range(num_layers))
        self.dec_bbox_head = nn.ModuleList(MLP(hidden_dim, hidden_dim, 4, num_layers=3) for _ in range(num_layers))
        # Anchors for `eval_size` inputs are precomputed state, as in upstream RT-DETR (eval_spatial_size);
        # imported checkpoints may carry their own (ultralytics stores them rounded to fp16).
        self.eval_shapes = level_shapes(eval_size, in_strides) if eval_size else []
        anchors, valid = generate_anchors(self.eval_shapes, anchor_size) if eval_size else (None, None)
        self.register_buffer("anchors", anchors)
        self.register_buffer("valid_mask", valid)
        self._anchor_cache: tuple[list, torch.Tensor, torch.Tensor] | None = None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """RT-DETR's init: class biases at prior 0.01, box deltas at zero, xavier for projections."""
        init_detection_heads([self.enc_score_head, *self.dec_score_head], [self.enc_bbox_head, *self.dec_bbox_head])
        nn.init.xavier_uniform_(self.enc_output[0].weight)
        for layer in self.query_pos_head.layers:
            nn.init.xavier_uniform_(layer.weight)
        for proj in self.input_proj:
            nn.init.xavier_uniform_(proj.conv.weight)

    def _anchors(self, shapes: list[tuple[int, int]], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """Anchors for these level shapes: the stored ones at eval size, else computed and cached."""
        if shapes == self.eval_shapes:
            return self.anchors, self.valid_mask
        cache = self._anchor_cache
        if cache is None or cache[0] != shapes or cache[1].device != device:
            anchors, valid = generate_anchors(shapes, self.anchor_size, device=device)
            self._anchor_cache = cache = (shapes, anchors, valid)
        return cache[1], cache[2]

    def flatten_features(self, features: list[torch.Tensor]) -> tuple[torch.Tensor, list[tuple[int, int]]]:
        """Project each level to hidden_dim and flatten: -> tokens (B, S, D), shapes [(h, w)]."""
        projected = [proj(f) for proj, f in zip(self.input_proj, features)]
        shapes = [tuple(p.shape[2:]) for p in projected]
        return torch.cat([p.flatten(2) for p in projected], dim=2).transpose(1, 2), shapes

    def select_queries(
        self, tokens: torch.Tensor, shapes: list[tuple[int, int]]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Score every token as a proposal and keep the `num_queries` best.

        Returns queries (B, K, D), reference box logits (B, K, 4), and the proposals' boxes (B, K, 4, sigmoid)
        and class logits (B, K, C) for the encoder's auxiliary loss.
        """
        anchors, valid = self._anchors(shapes, tokens.device)
        memory = self.enc_output(valid.to(tokens.dtype) * tokens)
        scores = self.enc_score_head(memory)
        index = top_k_indices(scores, self.num_queries)  # (B, K)
        queries = gather_tokens(memory, index)
        reference = self.enc_bbox_head(queries) + anchors[0, index]
        proposal_logits = gather_tokens(scores, index)
        return queries, reference, reference.sigmoid(), proposal_logits

    def forward(self, features: list[torch.Tensor], targets: list[dict] | None = None) -> dict[str, torch.Tensor]:
        """Inference: {"boxes", "logits"} of layer `eval_idx`. Training: every layer's outputs, see `forward_train`."""
        tokens, shapes = self.flatten_features(features)
        if self.training:
            return self.forward_train(tokens, shapes, targets)
        queries, reference, _, _ = self.select_queries(tokens, shapes)
        boxes = reference.sigmoid()
        # At inference the layers after eval_idx are never run: their output would be thrown away.
        for layer, bbox_head in zip(self.layers[: self.eval_idx + 1], self.dec_bbox_head):
            queries = layer(queries, boxes, self.query_pos_head(boxes), tokens, shapes)
            boxes = torch.sigmoid(bbox_head(queries) + inverse_sigmoid(boxes))
        return {"boxes": boxes, "logits": self.dec_score_head[self.eval_idx](queries)}

    def forward_train(
        self, tokens: torch.Tensor, shapes: list[tuple[int, int]], targets: list[dict] | None
    ) -> dict[str, torch.Tensor]:
        """-> "boxes" (L, B, Q, 4), "logits" (L, B, Q, C) per layer; "enc_boxes", "enc_logits" (B, Q, ...) of the
        proposals; with targets also "dn_boxes", "dn_logits" (L, B, D, ...) and "dn_meta" (see DetectionCriterion).

        Each layer's loss box is its delta applied to the previous layer's box *with* gradient (RT-DETR's
        "look forward twice"), while the next layer starts from the detached box.
        """
        dn = None
        if targets is not None:
            dn = denoising_queries(targets, self.denoising_class_embed.weight, self.num_queries, self.num_denoising,
                                   self.label_noise_ratio, self.box_noise_scale)  # fmt: skip
        queries, reference, enc_boxes, enc_logits = self.select_queries(tokens, shapes)
        queries, reference = queries.detach(), reference.detach()
        attn_mask = None
        if dn is not None:
            queries = torch.cat([dn.queries.to(queries.dtype), queries], 1)
            reference = torch.cat([dn.reference.to(reference.dtype), reference], 1)
            attn_mask = dn.attn_mask
        boxes = reference.sigmoid()
        all_boxes, all_logits, previous = [], [], None
        for layer, bbox_head, score_head in zip(self.layers, self.dec_bbox_head, self.dec_score_head):
            queries = layer(queries, boxes, self.query_pos_head(boxes), tokens, shapes, attn_mask)
            delta = bbox_head(queries)
            refined = torch.sigmoid(delta + inverse_sigmoid(boxes))
            all_boxes.append(refined if previous is None else torch.sigmoid(delta + inverse_sigmoid(previous)))
            all_logits.append(score_head(queries))
            previous, boxes = refined, refined.detach()
        all_boxes, all_logits = torch.stack(all_boxes), torch.stack(all_logits)
        outputs = {"enc_boxes": enc_boxes, "enc_logits": enc_logits}
        if dn is None:  # keep the denoising embedding in the graph, so DDP sees every parameter used
            all_boxes = all_boxes + 0 * self.denoising_class_embed.weight.sum()
        else:
            split = dn.queries.shape[1]
            outputs.update(dn_boxes=all_boxes[:, :, :split], dn_logits=all_logits[:, :, :split],
                           dn_meta={"positive": dn.positive, "target": dn.target})  # fmt: skip
            all_boxes, all_logits = all_boxes[:, :, split:], all_logits[:, :, split:]
        outputs.update(boxes=all_boxes, logits=all_logits)
        return outputs
