"""Pure functions on next-token logits (B, V): temperature, top-k, top-p, classifier-free guidance.

Filters return new tensors with removed entries set to -inf; they never modify their input.
"""

from __future__ import annotations

import torch


def apply_temperature(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """logits (B, V) / temperature (> 0)."""
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature} (use top_k=1 for greedy decoding)")
    return logits if temperature == 1.0 else logits / temperature


CHUNK = 8  # top_k_values: chunk length


def top_k_values(logits: torch.Tensor, k: int, sorted: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """torch.topk over the last dimension of logits (B, V), 0 < k <= V: (values (B, k), ids (B, k)).

    For a large vocabulary it looks at the maximum of every chunk of CHUNK entries first, then only inside the k
    chunks with the largest maxima: every logit above the k-th largest chunk maximum lies in one of those chunks,
    and at least k logits reach that maximum, so the values are exactly torch.topk's (among logits tied with the
    k-th, another id may be picked). With 16384 entries and k 256 it made whole generations 1.09x (batch 1) and
    1.06x (batch 16) faster than torch.topk did (benchmarks/RESULTS.md)."""
    batch, vocabulary = logits.shape
    if vocabulary % CHUNK or vocabulary < 4 * CHUNK * k:
        return torch.topk(logits, k, dim=-1, sorted=sorted)
    maxima = logits.reshape(batch, vocabulary // CHUNK, CHUNK).amax(dim=-1)
    chunks = torch.topk(maxima, k, dim=-1, sorted=False).indices
    ids = (chunks[:, :, None] * CHUNK + torch.arange(CHUNK, device=logits.device)).view(batch, k * CHUNK)
    values, inner = torch.topk(logits.gather(1, ids), k, dim=-1, sorted=sorted)
    return values, ids.gather(1, inner)


def top_k_filter(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Keeps the k largest logits of each row (ties with the k-th are kept); k <= 0 or k >= V keeps all."""
    if k <= 0 or k >= logits.shape[-1]:
        return logits
    kth = torch.topk(logits, k, dim=-1).values[..., -1:]
    return logits.masked_fill(logits < kth, float("-inf"))


def top_p_filter(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Nucleus filter: keeps the smallest set of most likely tokens whose probability reaches p (at least one).
    p >= 1 keeps all."""
    if not 0 < p <= 1:
        raise ValueError(f"top_p must be in (0, 1], got {p}")
    if p >= 1:
        return logits
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
    sorted_remove = _nucleus_remove(sorted_logits, p)
    remove = torch.zeros_like(sorted_remove).scatter(-1, order, sorted_remove)
    return logits.masked_fill(remove, float("-inf"))


def _nucleus_remove(sorted_logits: torch.Tensor, p: float) -> torch.Tensor:
    """For logits sorted in descending order: True where a token lies beyond the nucleus of mass p."""
    cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
    before = cumulative - sorted_logits.softmax(dim=-1)  # probability mass of the more likely tokens
    return before >= p


def guidance(conditional: torch.Tensor, unconditional: torch.Tensor, scale: float) -> torch.Tensor:
    """Classifier-free guidance ("super-conditioning"): uncond + scale * (cond - uncond); scale 1 = cond."""
    if scale == 1.0:
        return conditional
    return unconditional + scale * (conditional - unconditional)


def two_scale_guidance(
    conditional: torch.Tensor, source_only: torch.Tensor, unconditional: torch.Tensor, scale: float, source_scale: float
) -> torch.Tensor:
    """Guidance with separate scales for the source frame and the caption (InstructPix2Pix's):
    uncond + source_scale * (source_only - uncond) + scale * (cond - source_only). Equal scales give `guidance`."""
    return unconditional + source_scale * (source_only - unconditional) + scale * (conditional - source_only)


def filtered_distribution(
    logits: torch.Tensor, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """The sampling distribution after temperature, top-k and top-p, over the surviving candidates only.

    logits (B, V) -> (probabilities (B, K), token ids (B, K)) with K = top_k (or V when top_k is off);
    filtered-out candidates have probability 0. The candidates are in descending order when top_p < 1, else in
    no particular order. Working on the top-k values only makes each step cheap (a softmax over K, not V).
    """
    logits = apply_temperature(logits.float(), temperature)
    nucleus = top_p < 1.0
    if nucleus and top_p <= 0:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")
    if 0 < top_k < logits.shape[-1]:
        values, ids = top_k_values(logits, top_k, sorted=nucleus)
    elif nucleus:
        values, ids = torch.sort(logits, dim=-1, descending=True)
    else:
        values, ids = logits, torch.arange(logits.shape[-1], device=logits.device).expand_as(logits)
    if nucleus:
        values = values.masked_fill(_nucleus_remove(values, top_p), float("-inf"))
    return values.softmax(dim=-1), ids
