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

from .attention import MultiHeadAttention
from .common import MLP, activation, init_detection_heads, inverse_sigmoid
from .conv import ConvNormAct
from .deformable_attention import MSDeformableAttention
from .denoising import denoising_queries


def anchor_boxes(
    shapes: list[tuple[int, int]], base_size: float = 0.05, eps: float = 0.01, device: torch.device | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """One anchor box per pixel of every level: its centre, with side `base_size * 2**level`.

    Returns boxes (1, S, 4) cxcywh in 0..1 and valid (1, S, 1), False for boxes within `eps` of the border.
    """
    anchors = []
    for level, (h, w) in enumerate(shapes):
        ys, xs = torch.meshgrid(
            torch.arange(h, dtype=torch.float32, device=device),
            torch.arange(w, dtype=torch.float32, device=device),
            indexing="ij",
        )
        centres = torch.stack([(xs + 0.5) / w, (ys + 0.5) / h], dim=-1)
        sizes = torch.full_like(centres, base_size * 2.0**level)
        anchors.append(torch.cat([centres, sizes], dim=-1).view(1, h * w, 4))
    anchors = torch.cat(anchors, dim=1)
    return anchors, ((anchors > eps) & (anchors < 1 - eps)).all(-1, keepdim=True)


def generate_anchors(
    shapes: list[tuple[int, int]], base_size: float = 0.05, eps: float = 0.01, device: torch.device | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """`anchor_boxes` in logit space, as RT-DETR refines them: (1, S, 4) logits (inf where invalid), valid (1, S, 1)."""
    anchors, valid = anchor_boxes(shapes, base_size, eps, device)
    return torch.log(anchors / (1 - anchors)).masked_fill(~valid, float("inf")), valid


def level_shapes(image_size: int, strides: list[int] | tuple[int, ...]) -> list[tuple[int, int]]:
    """(h, w) of each feature level for a square input of `image_size` pixels (ceil division, as convs pad)."""
    return [(-(-image_size // s), -(-image_size // s)) for s in strides]


class DecoderLayer(nn.Module):
    """Self-attention over queries, deformable cross-attention into the encoder tokens, FFN (post-norm).

    Shapes: queries (B, Q, D), reference boxes (B, Q, 4), query_pos (B, Q, D), tokens (B, S, D) -> (B, Q, D).
    `cross_heads` defaults to `num_heads` (RT-DETR); LW-DETR and RF-DETR use 8 self- and 16 cross-attention heads.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        ffn_dim: int,
        num_levels: int,
        num_points: int,
        act: str,
        dropout: float,
        cross_heads: int | None = None,
    ):
        super().__init__()
        self.self_attn = MultiHeadAttention(dim, num_heads, dropout)
        self.norm1 = nn.LayerNorm(dim)
        self.cross_attn = MSDeformableAttention(dim, cross_heads or num_heads, num_levels, num_points)
        self.norm2 = nn.LayerNorm(dim)
        self.linear1 = nn.Linear(dim, ffn_dim)
        self.act = activation(act)
        self.linear2 = nn.Linear(ffn_dim, dim)
        self.norm3 = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)

    def forward(
        self,
        queries: torch.Tensor,
        reference_boxes: torch.Tensor,
        query_pos: torch.Tensor,
        tokens: torch.Tensor,
        shapes: list[tuple[int, int]],
        attn_mask: torch.Tensor | None = None,
        groups: int = 1,
    ) -> torch.Tensor:
        """`groups` > 1: the queries are that many independent groups (Group DETR), attending only within their own."""
        q = k = queries + query_pos
        if groups == 1:
            attended = self.self_attn(q, k, queries, attn_mask)
        else:  # groups go to the batch axis: (B, G * Q, D) -> (B * G, Q, D) and back
            q, k, v = (t.unflatten(1, (groups, -1)).flatten(0, 1) for t in (q, k, queries))
            attended = self.self_attn(q, k, v, attn_mask).unflatten(0, (-1, groups)).flatten(1, 2)
        queries = self.norm1(queries + self.dropout(attended))
        attended = self.cross_attn(queries + query_pos, reference_boxes, tokens, shapes)
        queries = self.norm2(queries + self.dropout(attended))
        ffn = self.linear2(self.dropout(self.act(self.linear1(queries))))
        return self.norm3(queries + self.dropout(ffn))


class RTDETRDecoder(nn.Module):
    """Query selection + deformable decoder + heads.

    Shapes: [(B, in_channels[i], H_i, W_i)] -> {"boxes": (B, Q, 4) cxcywh in 0..1, "logits": (B, Q, num_classes)},
    taken from decoder layer `eval_idx`.
    """

    def __init__(
        self,
        in_channels: list[int],
        num_classes: int,
        hidden_dim: int = 256,
        num_queries: int = 300,
        num_layers: int = 6,
        num_heads: int = 8,
        num_points: int = 4,
        ffn_dim: int = 1024,
        act: str = "relu",
        dropout: float = 0.0,
        eval_idx: int = -1,
        num_denoising: int = 100,
        label_noise_ratio: float = 0.5,
        box_noise_scale: float = 1.0,
        anchor_size: float = 0.05,
        feat_strides: tuple[int, ...] = (8, 16, 32),
        eval_size: int | None = 640,
        norm_eps: float = 1e-5,
    ):
        super().__init__()
        if len(feat_strides) != len(in_channels):
            raise ValueError(f"feat_strides {list(feat_strides)} must give one stride per level ({len(in_channels)})")
        if not -num_layers <= eval_idx < num_layers:
            raise ValueError(
                f"eval_idx={eval_idx} must name one of the {num_layers} layers (-{num_layers}..{num_layers - 1})"
            )
        if eval_size and eval_size % max(feat_strides):
            raise ValueError(f"eval_size={eval_size} must be a multiple of the largest stride {max(feat_strides)}")
        self.num_queries = num_queries
        self.num_classes = num_classes
        self.eval_idx = eval_idx % num_layers
        self.anchor_size = anchor_size
        self.num_denoising = num_denoising
        self.label_noise_ratio = label_noise_ratio
        self.box_noise_scale = box_noise_scale
        self.input_proj = nn.ModuleList(ConvNormAct(c, hidden_dim, 1, act=None, norm_eps=norm_eps) for c in in_channels)
        self.layers = nn.ModuleList(
            DecoderLayer(hidden_dim, num_heads, ffn_dim, len(in_channels), num_points, act, dropout)
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
        self.eval_shapes = level_shapes(eval_size, feat_strides) if eval_size else []
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
        k = min(self.num_queries, memory.shape[1])
        index = scores.max(-1).values.topk(k, dim=1).indices  # (B, K)
        queries = memory.gather(1, index[..., None].expand(-1, -1, memory.shape[-1]))
        reference = self.enc_bbox_head(queries) + anchors[0, index]
        proposal_logits = scores.gather(1, index[..., None].expand(-1, -1, scores.shape[-1]))
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
