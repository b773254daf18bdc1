"""The ParameterGenerator and LayerAggregator of TFlow, compatible with the official checkpoint.

Condition (B, S, hidden) -> LoRA factors (A, B) for the seven projections of every receiver
layer. Module and parameter names are the official release's, so its state dict loads
one to one (the name table is therefore the identity; see checkpoint.py).

Shapes, with n = receiver layers, h = parameter tokens per layer, w = rank, a =
dim_accumulation: a parameter token is a (rank x token_dim) tile of one flattened factor;
the transformer works on n x (h*w/a) tokens of width d_model, attending (a) across layers,
(b) across the tokens of a layer, (c) from every token to the condition, with 2-D rotary
embeddings, then projects back to tiles. Padded condition positions are masked, which the
official batched path does not do: a question gets the same factors alone or in any batch.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from minitflow.errors import UserError
from minitflow.model.fused import fused_on_cuda

# The order the official tokenizer lays modules out in: every 2-D Linear of a decoder layer,
# sorted by name; all lora_A tensors first, then all lora_B tensors.
PG_MODULES = ("mlp.down_proj", "mlp.gate_proj", "mlp.up_proj", "self_attn.k_proj",
              "self_attn.o_proj", "self_attn.q_proj", "self_attn.v_proj")
PG_OUTPUT_SCALE = 0.01  # factors are multiplied by this before use (official constant)
# Parameter tokens per piece at inference (in_pieces): the generator's activations stay a few
# pieces' worth instead of growing with its 16,128 tokens per sender at Qwen3-4B's shape.
# Smaller pieces save memory and cost kernel launches on a GPU: tflow on one question at the
# 4B shape (bench/tflow_memory.py, CPU) rose 306 MiB above its weights with pieces of 1,024
# tokens and 2,389 MiB with whole stages; a generator call launches 1,386 kernels in pieces of
# 1,024, 739 of 2,048, 167 whole (bench/op_count.py).
PIECE_TOKENS = 1024


@dataclass(frozen=True)
class PGArch:
    """Generator dimensions; the defaults are the official constants for Qwen3-4B."""

    d_model: int = 1024
    head_dim: int = 128
    num_pg_layers: int = 2
    output_dim: int = 256
    token_dim: int = 256
    rank: int = 4
    alpha: int = 8
    dim_accumulation: int = 2
    num_base_model_layers: int = 36

    def __post_init__(self):
        if self.d_model % self.head_dim or self.d_model % self.dim_accumulation:
            raise UserError(f"PG arch: d_model {self.d_model} must divide by head_dim and dim_accumulation")
        if self.head_dim % 4:  # else a shape error at the generator's first call, after the backbone loaded
            raise UserError(f"PG arch: head_dim {self.head_dim} must be a multiple of 4 (its 2-D rotary embeddings "
                            "rotate pairs along two axes of head_dim / 2 each)")
        if self.rank % self.dim_accumulation:
            raise UserError(f"PG arch: rank {self.rank} must divide by dim_accumulation {self.dim_accumulation}")
        if self.output_dim != self.token_dim:
            raise UserError(f"PG arch: output_dim {self.output_dim} must equal token_dim {self.token_dim}")

    @property
    def lora_scale(self) -> float:
        return self.alpha / self.rank

    def to_dict(self) -> dict:
        return asdict(self)


def factor_shapes(shapes: dict[str, tuple[int, int]], rank: int) -> list[tuple[str, str, tuple[int, int]]]:
    """(module, 'A'|'B', shape) in token order, from {module: (in, out)}."""
    return ([(m, "A", (rank, shapes[m][0])) for m in PG_MODULES] +
            [(m, "B", (shapes[m][1], rank)) for m in PG_MODULES])


def rope_table(ids: torch.Tensor, axes: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """ids (N, len(axes)) -> (cos, sin), each (N, sum(axes)): one rotary block per axis, every
    angle written twice in a row (the pair it rotates) and sin signed (-sin, +sin), the form
    `apply_rope` multiplies by."""
    angles = []
    for i, dim in enumerate(axes):
        omega = 1.0 / (10000.0 ** (torch.arange(0, dim, 2, device=ids.device) / dim))
        angles.append(ids[:, i].float()[:, None] * omega[None, :])
    ang = torch.cat(angles, dim=-1)
    sin = ang.sin()
    return ang.cos().repeat_interleave(2, dim=-1), torch.stack([-sin, sin], dim=-1).flatten(-2)


def grid_ids(*lengths: int, device=None) -> torch.Tensor:
    grids = torch.meshgrid(*[torch.arange(n, device=device) for n in lengths], indexing="ij")
    return torch.stack([g.flatten() for g in grids], dim=-1)


@fused_on_cuda
def apply_rope(x: torch.Tensor, rot: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """x (..., N, [H,] hd), cos and sin (N, [1,] hd): rotate the pairs (x0, x1) = (x[2i], x[2i+1])
    by the table's angles: x·cos + (x1, x0)·(-sin, sin). Each output is the official 2x2-matrix
    form's two products summed (in swapped order for x1, which float addition does not see), so
    the results are bitwise equal, in 4 ops instead of 9 (one kernel on CUDA at inference: a
    generator call rotates q and k of every attention in every piece)."""
    cos, sin = rot
    pairs = x.unflatten(-1, (-1, 2))
    swapped = torch.stack((pairs[..., 1], pairs[..., 0]), dim=-1).flatten(-2)  # one copy, cheaper than a flip on CPU
    return (x * cos + swapped * sin).type_as(x)


def rotate_heads(y: torch.Tensor, rot: tuple[torch.Tensor, torch.Tensor], num_heads: int) -> torch.Tensor:
    """y (b, t, H*hd) -> rotated (b, H, t, hd): apply_rope on the contiguous (b, t, H, hd) view with
    the shared (t, hd) table broadcast over the heads, then transposed for attention (on CPU 0.7x
    the time of rotating the transposed view, bench/test_micro.py::test_generator_rope)."""
    heads = y.view(y.shape[0], y.shape[1], num_heads, -1)
    return apply_rope(heads, (rot[0][:, None], rot[1][:, None])).transpose(1, 2)


class MultiHeadAttention(nn.Module):
    def __init__(self, d_model: int, num_heads: int):
        super().__init__()
        self.num_heads, self.head_dim = num_heads, d_model // num_heads
        self.W_q, self.W_k = nn.Linear(d_model, d_model), nn.Linear(d_model, d_model)
        self.W_v, self.W_o = nn.Linear(d_model, d_model), nn.Linear(d_model, d_model)

    def forward(self, x: torch.Tensor, kv: torch.Tensor, q_rot: tuple[torch.Tensor, torch.Tensor],
                k_rot: tuple[torch.Tensor, torch.Tensor],
                mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.attend(x, self.keys_values(kv, k_rot), q_rot, mask)

    def keys_values(self, kv: torch.Tensor, k_rot: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """kv (b, s, d) -> rotated keys and values (b, H, s, hd): what every query piece attends to
        (computed once for all pieces when they attend to the same kv, the condition)."""
        v = self.W_v(kv).view(kv.shape[0], kv.shape[1], self.num_heads, self.head_dim).transpose(1, 2)
        return rotate_heads(self.W_k(kv), k_rot, self.num_heads), v

    def attend(self, x: torch.Tensor, keys_values: tuple[torch.Tensor, torch.Tensor],
               q_rot: tuple[torch.Tensor, torch.Tensor], mask: torch.Tensor | None = None) -> torch.Tensor:
        b, t, d = x.shape
        out = F.scaled_dot_product_attention(rotate_heads(self.W_q(x), q_rot, self.num_heads), *keys_values,
                                             attn_mask=mask)
        return self.W_o(out.transpose(1, 2).reshape(b, t, d))


class FeedForward(nn.Module):
    def __init__(self, d_model: int):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(d_model, 4 * d_model), nn.Linear(4 * d_model, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.silu(self.fc1(x)))


def in_pieces(x: torch.Tensor, dim: int, size: int, f, out_dim: int | None = None) -> torch.Tensor:
    """f(piece, start) over pieces of `size` along `dim`, written in turn into one new result
    along `out_dim` (default `dim`; f keeps a piece's length there). f must treat the pieces
    independently (attention within a piece's batch, token-wise ops). One piece is exactly
    f(x, 0); several keep one piece's activations alive at a time (at Qwen3-4B's shape a sender
    row has 16,128 parameter tokens, whose feed-forward alone is 132 MB in bf16)."""
    if size >= x.shape[dim]:
        return f(x, 0)
    out_dim = dim if out_dim is None else out_dim
    out = None
    for start in range(0, x.shape[dim], size):
        y = f(x.narrow(dim, start, min(size, x.shape[dim] - start)), start)
        if out is None:
            out = y.new_empty(y.shape[:out_dim] + (x.shape[dim],) + y.shape[out_dim + 1:])
        out.narrow(out_dim, start, y.shape[out_dim]).copy_(y)
    return out


def residual_in_pieces(x: torch.Tensor, dim: int, size: int, *steps) -> torch.Tensor:
    """x + step(x) for each step in turn, over pieces of `size` along `dim` that every step
    treats independently. One piece is exactly `x = x + step(x, 0)` per step (out of place:
    training's autograd needs x); several add into each piece of x in place (inference only,
    see TransformerModel.forward), so only one piece's activations exist beside x."""
    if size >= x.shape[dim]:
        for step in steps:
            x = x + step(x, 0)
        return x
    for start in range(0, x.shape[dim], size):
        xs = x.narrow(dim, start, min(size, x.shape[dim] - start))
        for step in steps:
            xs.add_(step(xs, start))
    return x


class Block(nn.Module):
    def __init__(self, d_model: int, num_heads: int):
        super().__init__()
        self.self_attn_n = MultiHeadAttention(d_model, num_heads)
        self.self_attn_hw = MultiHeadAttention(d_model, num_heads)
        self.self_attn_cross = MultiHeadAttention(d_model, num_heads)
        self.feed_forward = FeedForward(d_model)
        self.norm1, self.norm2 = nn.RMSNorm(d_model, eps=1e-6), nn.RMSNorm(d_model, eps=1e-6)
        self.norm3, self.norm4 = nn.RMSNorm(d_model, eps=1e-6), nn.RMSNorm(d_model, eps=1e-6)

    def forward(self, x: torch.Tensor, cond: torch.Tensor, rots: dict[str, tuple[torch.Tensor, torch.Tensor]],
                cond_mask: torch.Tensor | None, piece: int) -> torch.Tensor:
        """x (B, n, hw, c); each sublayer runs on pieces of about `piece` tokens along a dimension
        it treats independently and, when there are several, adds into x in place
        (residual_in_pieces; inference only, see TransformerModel.forward)."""
        b, n, hw, c = x.shape

        def across_layers(xs, _):  # xs (b, n, k, c): attention over the n layers of each token
            k = xs.shape[2]
            y = self.norm1(xs).transpose(1, 2).reshape(b * k, n, c)
            return self.self_attn_n(y, y, rots["n"], rots["n"]).view(b, k, n, c).transpose(1, 2)

        def within_layer(xs, _):  # xs (b, k, hw, c): attention over each layer's tokens
            k = xs.shape[1]
            y = self.norm2(xs).reshape(b * k, hw, c)
            return self.self_attn_hw(y, y, rots["hw"], rots["hw"]).view(b, k, hw, c)

        cond_kv = self.self_attn_cross.keys_values(cond, rots["cond"])  # the same for every piece

        def to_condition(xs, start):  # xs (b, k, c): attention from each token to the condition
            q_rot = tuple(t[start:start + xs.shape[1]] for t in rots["all"])
            return self.self_attn_cross.attend(self.norm3(xs), cond_kv, q_rot, cond_mask)

        x = residual_in_pieces(x, 2, max(1, piece // n), across_layers)
        x = residual_in_pieces(x, 1, max(1, piece // hw), within_layer)
        flat = x.reshape(b, n * hw, c)  # x itself where pieces wrote x in place (then it is contiguous)
        x = residual_in_pieces(flat, 1, piece, to_condition, lambda xs, _: self.feed_forward(self.norm4(xs)))
        return x.view(b, n, hw, c)


class TransformerModel(nn.Module):
    def __init__(self, arch: PGArch, tokens_a: int, tokens_b: int):
        super().__init__()
        a, d = arch.dim_accumulation, arch.d_model
        self.arch, self.tokens_a, self.tokens_b = arch, tokens_a, tokens_b
        self.h, self.w = tokens_a + tokens_b, arch.rank // a
        self.n = arch.num_base_model_layers
        self.norm_input = nn.RMSNorm(d, eps=1e-6)
        self.norm_tokens = nn.RMSNorm(d, eps=1e-6)
        self.norm_final = nn.RMSNorm(d, eps=1e-6)
        self.hw_pos = nn.Embedding(self.h * arch.rank, d // a)
        self.layer_pos = nn.Embedding(self.n, d // a)
        self.blocks = nn.ModuleList(Block(d, d // arch.head_dim) for _ in range(arch.num_pg_layers))
        self.proj_out_A = nn.Linear(d // a, arch.output_dim)
        self.proj_out_B = nn.Linear(d // a, arch.output_dim)
        self.cond_proj = nn.Linear(d, d)  # present in the official state dict, unused (use_cond_proj=False)
        nn.init.zeros_(self.cond_proj.weight)  # zero, as in the official code: after its random
        nn.init.zeros_(self.cond_proj.bias)    # init, so the later weights draw the same stream
        self.cond_token_proj = nn.Linear(d, d, bias=False)
        self.cond_token_query = nn.Parameter(torch.randn(self.n * self.h * self.w, d) * 0.002)

    def rotations(self, cond_len: int, device) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """Each attention's (cos, sin), (N, head_dim), shared by the heads (at Qwen3-4B's shape
        "all" has 16,128 rows: one table per head would be 8x larger)."""
        hd = self.arch.head_dim
        diag = torch.arange(cond_len, device=device)[:, None].expand(cond_len, 2) + max(self.h, self.w)
        return {"hw": rope_table(grid_ids(self.h, self.w, device=device), [hd // 2, hd // 2]),
                "n": rope_table(grid_ids(self.n, device=device), [hd]),
                "all": rope_table(grid_ids(self.n, self.h * self.w, device=device), [hd // 2, hd // 2]),
                "cond": rope_table(diag, [hd // 2, hd // 2])}

    def position_tokens(self, start: int = 0, layers: int | None = None) -> torch.Tensor:
        """Learned positions of `layers` layers from `start` (default all), regrouped to
        (layers, h*w, a*d/a) without batch."""
        a = self.arch.dim_accumulation
        layer_pos = self.layer_pos.weight[start:None if layers is None else start + layers]
        pos = self.hw_pos.weight[None, :, :] + layer_pos[:, None, :]   # (layers, h*rank, d/a)
        return pos.reshape(layer_pos.shape[0], self.h * self.w, a * pos.shape[-1])

    def forward(self, cond: torch.Tensor, cond_mask: torch.Tensor | None, piece: int | None = None) -> torch.Tensor:
        """cond (B, S, d_model), cond_mask (B, S) bool -> tiles (B, n, h, rank, output_dim).
        `piece`: parameter tokens per piece in every stage (in_pieces, residual_in_pieces;
        inference only: the pieces add into activations autograd would need); None: all at once."""
        if piece is not None and torch.is_grad_enabled():
            raise ValueError("the generator runs in pieces only without gradients")
        b, hw = cond.shape[0], self.h * self.w
        piece = piece or self.n * hw  # None: every stage in one piece
        layers = max(1, piece // hw)  # layers per piece where a stage works by layer
        cond = self.norm_input(cond)
        kv = self.cond_token_proj(cond)

        def gather(query, start):  # query (k, hw, d): each parameter token attends over the condition
            k = query.shape[0]
            scores = torch.matmul(query.reshape(k * hw, -1), kv.transpose(1, 2)) / (self.arch.d_model ** 0.5)
            if cond_mask is not None:
                scores = scores.masked_fill(~cond_mask[:, None, :], float("-inf"))
            tokens = torch.matmul(scores.softmax(-1), kv).view(b, k, hw, -1)
            return self.norm_tokens(tokens + self.position_tokens(start, k))

        def project(xs, _):  # xs (b, k, hw, d): k layers' tokens back to tiles
            xs = self.norm_final(xs)
            xs = xs.view(b, xs.shape[1], self.h, self.w, self.arch.dim_accumulation, -1).flatten(3, 4)
            xa, xb = xs.split([self.tokens_a, self.tokens_b], dim=2)
            return torch.cat([self.proj_out_A(xa), self.proj_out_B(xb)], dim=2)

        x = in_pieces(self.cond_token_query.view(self.n, hw, -1), 0, layers, gather, out_dim=1)
        rots = self.rotations(cond.shape[1], cond.device)
        attn_mask = None if cond_mask is None else cond_mask[:, None, None, :]
        for block in self.blocks:
            x = block(x, cond, rots, attn_mask, piece)
        return in_pieces(x, 1, layers, project)


class ParameterGenerator(nn.Module):
    """Condition -> {(layer, module): (A (B, rank, in), B (B, out, rank))}, raw (before 0.01)."""

    def __init__(self, arch: PGArch, input_dim: int, shapes: dict[str, tuple[int, int]]):
        super().__init__()
        self.arch, self.shapes = arch, shapes
        area = arch.rank * arch.token_dim
        self.layout = [(m, kind, shape, math.ceil(shape[0] * shape[1] / area))
                       for m, kind, shape in factor_shapes(shapes, arch.rank)]
        tokens_a = sum(t for _, kind, _, t in self.layout if kind == "A")
        tokens_b = sum(t for _, kind, _, t in self.layout if kind == "B")
        self.hidden_in = nn.Linear(input_dim, arch.d_model)
        self.model = TransformerModel(arch, tokens_a, tokens_b)

    def forward(self, cond: torch.Tensor, cond_mask: torch.Tensor | None = None, piece: int | None = None,
                scale: float = 1.0) -> dict:
        """`piece`: see TransformerModel.forward (inference passes PIECE_TOKENS, training None).
        `scale` multiplies every factor (PG_OUTPUT_SCALE for use; 1.0: raw), in one kernel
        before the split instead of one per factor (504 at Qwen3-4B's shape)."""
        tiles = self.model(self.hidden_in(cond), cond_mask, piece)   # (B, n, h, rank, token_dim)
        if scale != 1.0:
            tiles = tiles * scale
        b, n = tiles.shape[:2]
        flat = tiles.reshape(b, n, tiles.shape[2], -1)                # one row of numbers per token
        out, start = {}, 0
        for module, kind, shape, count in self.layout:
            numel = shape[0] * shape[1]
            vals = flat[:, :, start:start + count].reshape(b, n, -1)[:, :, :numel].reshape(b, n, *shape)
            start += count
            for layer in range(n):
                out.setdefault((layer, module), {})[kind] = vals[:, layer]
        return {key: (ab["A"], ab["B"]) for key, ab in out.items()}


class LayerAggregator(nn.Module):
    """Softmax-weighted sum over the L+1 hidden states, with a learned temperature."""

    def __init__(self, num_layers: int):
        super().__init__()
        self.layer_weights = nn.Parameter(torch.zeros(num_layers))
        self.log_temperature = nn.Parameter(torch.tensor(0.0))

    def weights(self) -> torch.Tensor:
        """(L+1,) softmax weights of the hidden states, for a capture that sums as layers run."""
        return torch.softmax(self.layer_weights / self.log_temperature.exp().clamp(min=0.01), dim=0)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        """hidden (B, L+1, S, H) -> (B, S, H)."""
        return (self.weights()[None, :, None, None] * hidden).sum(dim=1)
