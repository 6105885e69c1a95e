"""Vector quantization (VQ-VAE) with a straight-through estimator, optional EMA codebook and dead-code restarts.

For encoder outputs z_e and their nearest codebook vectors e the two loss terms are

    codebook   = ||sg[z_e] - e||^2            (moves the codebook; absent with EMA updates)
    commitment = beta * ||z_e - sg[e]||^2     (keeps the encoder close to its codes)

(taming-transformers' default `legacy=True` puts beta on the codebook term instead; storyviz does not.)
The forward value of the quantized tensor is exactly e; its gradient flows to z_e unchanged (straight-through).

With `use_ema` the codebook is not learned by gradient but as an exponential moving average of the encoder
outputs assigned to each code (decay, Laplace smoothing with `epsilon`); the two EMA statistics are buffers
(`cluster_size`, `embed_avg`) and so appear in the state dict. With `dead_code_steps > 0`, a code that no
encoder output chose for that many training steps is re-initialised from a random encoder output of the
current batch. Under torch.distributed, counts and sums are all-reduced and restarts come from rank 0, so
every process keeps the same codebook.
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn


def codebook_stats(codes: torch.Tensor, codebook_size: int) -> dict[str, float]:
    """codes (...) int64 -> {"perplexity": exp(entropy of the code histogram), "usage": share of the codes used}."""
    counts = torch.bincount(codes.reshape(-1), minlength=codebook_size).float()
    probs = counts / counts.sum().clamp(min=1)
    entropy = -(probs * torch.log(probs.clamp(min=1e-12))).sum()
    return {"perplexity": math.exp(float(entropy)), "usage": float((counts > 0).float().mean())}


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    if _distributed():
        dist.all_reduce(tensor)
    return tensor


class VectorQuantizer(nn.Module):
    """z (B, D, H, W) -> (quantized (B, D, H, W), indices (B, H, W) int64, losses {"codebook", "commitment"}).

    The codebook is `embedding.weight` (n_embed, embed_dim), the published minDALL-E name.
    """

    def __init__(
        self,
        n_embed: int,
        embed_dim: int,
        beta: float = 0.25,
        use_ema: bool = False,
        ema_decay: float = 0.99,
        ema_epsilon: float = 1e-5,
        dead_code_steps: int = 0,
    ):
        super().__init__()
        self.n_embed = n_embed
        self.embed_dim = embed_dim
        self.beta = beta
        self.use_ema = use_ema
        self.ema_decay = ema_decay
        self.ema_epsilon = ema_epsilon
        self.dead_code_steps = dead_code_steps
        self.embedding = nn.Embedding(n_embed, embed_dim)
        nn.init.uniform_(self.embedding.weight, -1.0 / n_embed, 1.0 / n_embed)
        if use_ema:
            self.embedding.weight.requires_grad_(False)
            # cluster_size starts at 1 so that embed_avg / cluster_size is the initial codebook
            self.register_buffer("cluster_size", torch.ones(n_embed))
            self.register_buffer("embed_avg", self.embedding.weight.detach().clone())
        # training statistics, not weights: kept out of the state dict so the published layout is unchanged
        self.register_buffer("steps_unused", torch.zeros(n_embed, dtype=torch.long), persistent=False)

    @property
    def codebook(self) -> torch.Tensor:
        """(n_embed, embed_dim)"""
        return self.embedding.weight

    def nearest(self, flat: torch.Tensor) -> torch.Tensor:
        """flat (N, D) -> indices (N,) of the nearest codebook vectors (squared Euclidean distance)."""
        codebook = self.embedding.weight
        flat = flat.to(codebook.dtype)  # distances at the codebook's precision, also under autocast
        with torch.autocast(flat.device.type, enabled=False):
            distances = flat.pow(2).sum(1, keepdim=True) - 2 * flat @ codebook.t() + codebook.pow(2).sum(1)[None]
        return distances.argmin(dim=1)

    def lookup(self, indices: torch.Tensor) -> torch.Tensor:
        """indices (B, H, W) -> codebook vectors (B, D, H, W)."""
        if indices.dtype not in (torch.int64, torch.int32):
            raise ValueError(f"codes: expected an integer tensor, got {indices.dtype}")
        if indices.numel() and (indices.min() < 0 or indices.max() >= self.n_embed):
            raise ValueError(
                f"codes: values must lie in [0, {self.n_embed - 1}], found [{int(indices.min())}, {int(indices.max())}]"
            )
        return self.embedding(indices).permute(0, 3, 1, 2).contiguous()

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """z (B, D, H, W) -> (quantized (B, D, H, W), indices (B, H, W), losses)."""
        if z.dim() != 4 or z.shape[1] != self.embed_dim:
            raise ValueError(f"quantizer input: expected (B, {self.embed_dim}, H, W), got {tuple(z.shape)}")
        batch, _, height, width = z.shape
        flat = z.permute(0, 2, 3, 1).reshape(-1, self.embed_dim)
        with torch.no_grad():
            indices = self.nearest(flat)
        if self.training and self.use_ema:
            self._ema_update(flat.detach().to(self.embed_avg.dtype), indices)
        codes = self.embedding(indices)  # (N, D), after any EMA update
        if self.training and self.dead_code_steps > 0:
            self._restart_dead_codes(flat.detach(), indices)

        commitment = self.beta * F.mse_loss(flat, codes.detach())
        codebook = F.mse_loss(flat.detach(), codes) if not self.use_ema else flat.new_zeros(())
        # value exactly e, gradient to z_e unchanged: e + (z - sg[z])
        quantized_flat = codes + (flat - flat.detach())
        quantized = quantized_flat.reshape(batch, height, width, self.embed_dim).permute(0, 3, 1, 2).contiguous()
        indices = indices.reshape(batch, height, width)
        return quantized, indices, {"codebook": codebook, "commitment": commitment}

    @torch.no_grad()
    def _ema_update(self, flat: torch.Tensor, indices: torch.Tensor) -> None:
        """One EMA step: N_k <- d N_k + (1-d) n_k; m_k <- d m_k + (1-d) sum z; e_k = m_k / smoothed(N_k)."""
        one_hot = F.one_hot(indices, self.n_embed).type(flat.dtype)  # (N, K)
        counts = _all_reduce_sum(one_hot.sum(0))
        sums = _all_reduce_sum(one_hot.t() @ flat)  # (K, D)
        decay = self.ema_decay
        self.cluster_size.mul_(decay).add_(counts, alpha=1 - decay)
        self.embed_avg.mul_(decay).add_(sums, alpha=1 - decay)
        total = self.cluster_size.sum()
        smoothed = (self.cluster_size + self.ema_epsilon) / (total + self.n_embed * self.ema_epsilon) * total
        self.embedding.weight.copy_(self.embed_avg / smoothed.unsqueeze(1))

    @torch.no_grad()
    def _restart_dead_codes(self, flat: torch.Tensor, indices: torch.Tensor) -> None:
        used = torch.zeros(self.n_embed, device=flat.device)
        used[indices] = 1.0
        used = _all_reduce_sum(used) > 0
        self.steps_unused.add_(1).masked_fill_(used, 0)
        dead = self.steps_unused >= self.dead_code_steps
        count = int(dead.sum())
        if count == 0:
            return
        choice = torch.randint(0, flat.shape[0], (count,), device=flat.device)
        replacement = flat[choice].to(self.embedding.weight.dtype)
        if _distributed():
            dist.broadcast(replacement, src=0)
        self.embedding.weight[dead] = replacement
        if self.use_ema:
            self.embed_avg[dead] = replacement
            self.cluster_size[dead] = 1.0
        self.steps_unused[dead] = 0
