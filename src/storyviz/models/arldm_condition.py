"""ARLDM's conditioning: one cross-attention context per frame, from the caption and the story so far.

For frame j of a story the context is one sequence (D = the UNet's cross_attention_dim):

    [ caption j tokens + "current" type ]  [ history slot 0 ] ... [ history slot L-2 ]      (S, D)

where history slot k = the joint image-and-caption embedding of frame k (image tokens from a small CNN over the
frame's latent, fused with caption k's tokens by one transformer layer) + a "history" type embedding + the
embedding of frame index k. A causal mask over frames keeps slot k visible to frame j only when k < j; masked
positions are set to zero and excluded by the UNet's `encoder_attention_mask`, so they cannot influence frame j.

    S = T + (L - 1) * (grid**2 + T)        T = caption tokens (max_text_tokens), L = frames of the story

Caption tokens are the packaged MiniLM's last hidden states (384-d, frozen), projected to D by trainable
linear layers (one for the current caption, one for history captions).
"""

from __future__ import annotations

import torch
from torch import nn


class ImageTokens(nn.Module):
    """A latent (B, C, h, w) -> grid**2 tokens (B, grid**2, D): a small CNN, average pooled to a grid."""

    def __init__(self, latent_channels: int, channels: int, grid: int, dim: int):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(latent_channels, channels, 3, padding=1),
            nn.SiLU(),
            nn.Conv2d(channels, channels, 3, padding=1),
            nn.SiLU(),
            nn.Conv2d(channels, channels, 3, stride=2, padding=1),
            nn.SiLU(),
            nn.AdaptiveAvgPool2d(grid),
        )
        self.proj = nn.Linear(channels, dim)
        self.position = nn.Parameter(torch.zeros(grid * grid, dim))
        nn.init.normal_(self.position, std=0.02)

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        features = self.net(latents).flatten(2).transpose(1, 2)  # (B, grid**2, channels)
        return self.proj(features) + self.position


class StoryCondition(nn.Module):
    """Builds the per-frame cross-attention contexts (B, L, S, D) and masks (B, L, S) of a batch of stories."""

    CURRENT, HISTORY = 0, 1

    def __init__(
        self,
        text_dim: int,
        dim: int,
        latent_channels: int,
        image_channels: int,
        grid: int,
        max_frames: int,
        heads: int,
    ):
        super().__init__()
        self.dim, self.grid, self.max_frames = dim, grid, max_frames
        self.current_text = nn.Sequential(nn.Linear(text_dim, dim), nn.LayerNorm(dim))
        self.history_text = nn.Sequential(nn.Linear(text_dim, dim), nn.LayerNorm(dim))
        self.image_tokens = ImageTokens(latent_channels, image_channels, grid, dim)
        self.fusion = nn.TransformerEncoderLayer(
            dim, heads, dim_feedforward=2 * dim, dropout=0.0, batch_first=True, norm_first=True
        )
        self.type_embedding = nn.Embedding(2, dim)
        self.frame_embedding = nn.Embedding(max_frames, dim)

    def history_slots(self, states: torch.Tensor, mask: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
        """Joint embeddings of frames: states (N, T, E), mask (N, T), latents (N, C, h, w) -> (N, grid**2 + T, D)."""
        image = self.image_tokens(latents)
        text = self.history_text(states)
        tokens = torch.cat([image, text], dim=1)
        padding = torch.cat([mask.new_ones(mask.shape[0], image.shape[1]), mask], dim=1) == 0
        return self.fusion(tokens, src_key_padding_mask=padding)

    def forward(
        self, states: torch.Tensor, mask: torch.Tensor, latents: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Contexts of every frame of B stories of L frames.

        states (B, L, T, E) caption token states; mask (B, L, T) 1 = token; latents (B, L, C, h, w) of the frames
        (ground truth in training, generated ones in sampling; frame L-1's is not read).
        Returns context (B, L, S, D) with masked positions zero, and mask (B, L, S) int64 (1 = attend).
        """
        batch, length, tokens, _ = states.shape
        if length > self.max_frames:
            raise ValueError(f"arldm: a story of {length} frames; this model reads at most {self.max_frames}")
        current = self.current_text(states) + self.type_embedding.weight[self.CURRENT]  # (B, L, T, D)
        parts, masks = [current], [mask]
        if length > 1:
            history = length - 1
            slots = self.history_slots(
                states[:, :history].flatten(0, 1), mask[:, :history].flatten(0, 1), latents[:, :history].flatten(0, 1)
            ).unflatten(0, (batch, history))  # (B, L-1, P, D)
            slots = slots + self.type_embedding.weight[self.HISTORY] + self.frame_embedding.weight[:history, None]
            slot_mask = torch.cat([mask.new_ones(batch, history, self.grid**2), mask[:, :history]], dim=2)
            # frame j sees slot k only when k < j: (L, L-1) causal visibility
            visible = torch.ones(length, history, dtype=torch.bool, device=states.device).tril(-1)
            slot_mask = slot_mask[:, None] * visible[None, :, :, None]  # (B, L, L-1, P)
            parts.append(slots[:, None].expand(batch, length, *slots.shape[1:]).flatten(2, 3))
            masks.append(slot_mask.flatten(2, 3))
        context = torch.cat(parts, dim=2)
        full_mask = torch.cat(masks, dim=2).long()
        return context * full_mask[..., None].to(context.dtype), full_mask

    def unconditional(self, states: torch.Tensor, mask: torch.Tensor, length: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The context of the empty caption with no history, shaped for L = `length` frames.

        states (T, E), mask (T) of the empty caption -> context (S, D), mask (S); history positions masked.
        """
        current = self.current_text(states) + self.type_embedding.weight[self.CURRENT]
        slots = (length - 1) * (self.grid**2 + states.shape[0])
        context = torch.cat([current * mask[:, None].to(current.dtype), current.new_zeros(slots, self.dim)])
        return context, torch.cat([mask.long(), mask.new_zeros(slots).long()])
