"""What the RT-DETR family's decoders (RT-DETR, RT-DETRv2, D-FINE) share before and after their layers.

    encoder maps --input_proj--> tokens (B, S, D) --enc_output--> proposal scores/boxes per token
    top-k tokens by best class score -> queries (content) + reference boxes (anchor + predicted delta)
    training: contrastive denoising queries (noised copies of the objects) go in front of the queries, and with a
              one-to-many branch (H-DETR's hybrid matching) the next `one_to_many_queries` proposals behind them:
              [denoising | one-to-one | one-to-many], each part blind to the others' queries (see
              `hybrid_attention_mask`), so the one-to-one outputs are those of a model without the branch

A family's decoder subclasses `TwoStageDecoder` and adds its layers and heads.
"""

from __future__ import annotations

import torch
from torch import nn

from ..common import MLP, init_detection_heads
from ..conv import ConvNormAct
from .anchors import generate_anchors, level_shapes
from .denoising import DenoisingQueries, denoising_queries
from .queries import gather_tokens, top_k_indices

# Outputs with a query axis, and where it is: per layer (L, B, Q, ...) or per query (B, Q, ...) ("queries": the
# eval layer's hidden states, for a mask head).
QUERY_OUTPUTS = (("boxes", 2), ("logits", 2), ("corners", 2), ("pre_boxes", 1), ("pre_logits", 1), ("references", 1),
                 ("queries", 1))  # fmt: skip


def hybrid_attention_mask(denoising_mask: torch.Tensor | None, before: int, extra: int,
                          device: torch.device) -> torch.Tensor:  # fmt: skip
    """Self-attention mask (True: blocked) over `before` queries (denoising and one-to-one, with their own mask)
    followed by `extra` one-to-many queries, which see only each other and are seen by none of the others.
    -> (before + extra, before + extra) bool."""
    mask = torch.zeros(before + extra, before + extra, dtype=torch.bool, device=device)
    if denoising_mask is not None:
        mask[:before, :before] = denoising_mask
    mask[:before, before:] = True
    mask[before:, :before] = True
    return mask


class TwoStageDecoder(nn.Module):
    """Input projections, proposal heads, anchors and denoising of an RT-DETR-style decoder.

    `project_inputs=False` keeps maps that already have hidden_dim channels as they are (D-FINE); others are
    projected by a 1x1 conv and batch norm. Anchors for `eval_size` inputs are precomputed state, as in upstream
    RT-DETR (eval_spatial_size); imported checkpoints may carry their own (ultralytics stores them rounded to fp16).
    The query position head maps a box through `query_pos_layers` linear layers (`query_pos_width` wide, twice
    hidden_dim by default, `query_pos_act` between); `head_act` is the activation inside the box heads' MLPs.
    `proposal_projection`: tokens pass a linear layer and a LayerNorm before the proposal heads (RT-DETR, D-FINE;
    DEIMv2 scores the tokens as they are).
    """

    def __init__(
        self,
        in_channels: list[int],
        in_strides: list[int],
        num_classes: int,
        hidden_dim: int,
        num_queries: int,
        num_layers: int,
        eval_idx: int,
        num_denoising: int,
        label_noise_ratio: float,
        box_noise_scale: float,
        anchor_size: float,
        eval_size: int | None,
        norm_eps: float,
        project_inputs: bool = True,
        query_pos_layers: int = 2,
        query_pos_width: int | None = None,
        query_pos_act: str = "relu",
        head_act: str = "relu",
        proposal_projection: bool = True,
    ):
        super().__init__()
        if not -num_layers <= eval_idx < num_layers:
            raise ValueError(
                f"eval_idx={eval_idx} must name one of the {num_layers} layers (-{num_layers}..{num_layers - 1})"
            )
        if eval_size and eval_size % max(in_strides):
            raise ValueError(f"eval_size={eval_size} must be a multiple of the largest stride {max(in_strides)}")
        self.num_queries = num_queries
        self.hidden_dim = hidden_dim
        self.return_queries = False  # set by the detector for its mask head: outputs "queries" too
        self.num_classes = num_classes
        self.eval_idx = eval_idx % num_layers
        self.anchor_size = anchor_size
        self.num_denoising = num_denoising
        self.label_noise_ratio = label_noise_ratio
        self.box_noise_scale = box_noise_scale
        self.one_to_many_queries = 0  # training only, set by the trainer: no weights, nothing at inference
        self.input_proj = nn.ModuleList(
            nn.Identity() if c == hidden_dim and not project_inputs else
            ConvNormAct(c, hidden_dim, 1, act=None, norm_eps=norm_eps) for c in in_channels
        )  # fmt: skip
        self.denoising_class_embed = nn.Embedding(num_classes, hidden_dim)
        self.query_pos_head = MLP(4, query_pos_width or 2 * hidden_dim, hidden_dim, query_pos_layers, query_pos_act)
        self.enc_output = (nn.Sequential(nn.Linear(hidden_dim, hidden_dim), nn.LayerNorm(hidden_dim))
                           if proposal_projection else nn.Identity())  # fmt: skip
        self.enc_score_head = nn.Linear(hidden_dim, num_classes)
        self.enc_bbox_head = MLP(hidden_dim, hidden_dim, 4, 3, head_act)
        self.eval_shapes = level_shapes(eval_size, in_strides) if eval_size else []
        anchors, valid = generate_anchors(self.eval_shapes, anchor_size) if eval_size else (None, None)
        self.register_buffer("anchors", anchors)
        self.register_buffer("valid_mask", valid)
        self._anchor_cache: tuple[list, torch.Tensor, torch.Tensor] | None = None

    def reset_proposal_heads(self) -> None:
        """RT-DETR's init of the shared parts: class bias at prior 0.01, box deltas at zero, xavier projections."""
        init_detection_heads([self.enc_score_head], [self.enc_bbox_head])
        if isinstance(self.enc_output, nn.Sequential):
            nn.init.xavier_uniform_(self.enc_output[0].weight)
        for layer in self.query_pos_head.layers:
            nn.init.xavier_uniform_(layer.weight)
        for proj in self.input_proj:
            if isinstance(proj, ConvNormAct):
                nn.init.xavier_uniform_(proj.conv.weight)

    def free_input_size(self) -> None:
        """Compute anchors from the feature shapes on every call (an exported graph of any input size), rather
        than take the ones stored for eval_size."""
        self.eval_shapes = []
        self._anchor_cache = None

    def _anchors(self, shapes: list[tuple[int, int]], device: torch.device,
                 dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
        """Anchors for these level shapes: the stored ones at eval size, else computed (in `dtype`) and cached."""
        if shapes == self.eval_shapes:
            return self.anchors, self.valid_mask
        cache = self._anchor_cache
        if cache is None or cache[0] != shapes or cache[1].device != device or cache[1].dtype != dtype:
            anchors, valid = generate_anchors(shapes, self.anchor_size, device=device, dtype=dtype)
            self._anchor_cache = cache = (shapes, anchors, valid)
        return cache[1], cache[2]

    def flatten_features(self, features: list[torch.Tensor]) -> tuple[torch.Tensor, list[tuple[int, int]]]:
        """Project each level to hidden_dim and flatten: -> tokens (B, S, D), shapes [(h, w)]."""
        projected = [proj(f) for proj, f in zip(self.input_proj, features)]
        shapes = [tuple(p.shape[2:]) for p in projected]
        return torch.cat([p.flatten(2) for p in projected], dim=2).transpose(1, 2), shapes

    def select_queries(
        self, tokens: torch.Tensor, shapes: list[tuple[int, int]], count: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Score every token as a proposal and keep the `count` (default `num_queries`) best, best first.

        Returns queries (B, K, D), reference box logits (B, K, 4), and the proposals' boxes (B, K, 4, sigmoid)
        and class logits (B, K, C) for the encoder's auxiliary loss.
        """
        anchors, valid = self._anchors(shapes, tokens.device, torch.float64 if tokens.dtype == torch.float64 else
                                       torch.float32)  # fmt: skip
        memory = self.enc_output(valid.to(tokens.dtype) * tokens)
        scores = self.enc_score_head(memory)
        index = top_k_indices(scores, count or self.num_queries)  # (B, K)
        queries = gather_tokens(memory, index)
        reference = self.enc_bbox_head(queries) + anchors[0, index]
        proposal_logits = gather_tokens(scores, index)
        return queries, reference, reference.sigmoid(), proposal_logits

    def training_queries(
        self, tokens: torch.Tensor, shapes: list[tuple[int, int]], targets: list[dict] | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, DenoisingQueries | None, dict[str, torch.Tensor]]:
        """Training's queries: denoising ones (with targets) in front of the selected ones, then the one-to-many
        ones (M), all detached.

        Returns queries (B, D + K + M, D), reference box logits (B, D + K + M, 4), the self-attention mask (None
        without denoising or one-to-many queries), the denoising groups, and the proposals' outputs
        {"enc_boxes", "enc_logits"} (B, K + M, ...).
        """
        selected = min(self.num_queries, tokens.shape[1])
        queries, reference, enc_boxes, enc_logits = self.select_queries(
            tokens, shapes, selected + self.one_to_many_queries
        )
        extra = queries.shape[1] - selected
        dn = None
        if targets is not None:
            dn = denoising_queries(targets, self.denoising_class_embed.weight, selected, self.num_denoising,
                                   self.label_noise_ratio, self.box_noise_scale)  # fmt: skip
        queries, reference = queries.detach(), reference.detach()
        attn_mask = None
        if dn is not None:
            queries = torch.cat([dn.queries.to(queries.dtype), queries], 1)
            reference = torch.cat([dn.reference.to(reference.dtype), reference], 1)
            attn_mask = dn.attn_mask
        if extra:
            attn_mask = hybrid_attention_mask(attn_mask, queries.shape[1] - extra, extra, queries.device)
        return queries, reference, attn_mask, dn, {"enc_boxes": enc_boxes, "enc_logits": enc_logits}

    def split_training_outputs(self, outputs: dict, dn: DenoisingQueries | None) -> dict:
        """Outputs over all queries (QUERY_OUTPUTS, over D + K + M queries; "enc_*" over K + M) -> the denoising part
        as "dn_<name>" and "dn_meta" (see DetectionCriterion), the one-to-many part as a dict of the same names
        under "one_to_many", the one-to-one part under the original names."""
        extra = outputs["enc_boxes"].shape[1] - min(self.num_queries, outputs["enc_boxes"].shape[1])
        if extra:
            branch = {name: value for name, value in outputs.items() if name in ("bin_values", "reg_scale")}
            for name, dim in (*QUERY_OUTPUTS, ("enc_boxes", 1), ("enc_logits", 1)):
                if name in outputs:
                    outputs[name], branch[name] = outputs[name].split([outputs[name].shape[dim] - extra, extra], dim)
            outputs["one_to_many"] = branch
        if dn is None:  # keep the denoising embedding in the graph, so DDP sees every parameter used
            outputs["boxes"] = outputs["boxes"] + 0 * self.denoising_class_embed.weight.sum()
            return outputs
        split = dn.queries.shape[1]
        for name, dim in QUERY_OUTPUTS:
            if name in outputs:
                outputs[f"dn_{name}"], outputs[name] = outputs[name].split(
                    [split, outputs[name].shape[dim] - split], dim
                )
        outputs["dn_meta"] = {"positive": dn.positive, "target": dn.target}
        return outputs
