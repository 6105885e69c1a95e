"""StoryDALL-E's source copy (storyviz's addition, not in the paper): a learned bonus, added to the image logits, for
the source frame's token at the position being predicted, and a mark on the input tokens that equal the source
frame's token at their position.

    logits[b, i, source[b, i]] += GAIN * beta(ln_f(h[b, i]))          beta: Linear(width, 1), zero-initialised
    embedding(image[b, j]) += GAIN * agree * [image[b, j] == source[b, j]]   agree: (width,), zero-initialised

Why: on sprites, a character the model has never seen by name (a guest, or test_unseen's held-out looks) keeps its
screen slot through a story, and in a frame where it also keeps its pose the source frame holds exactly the tokens
to draw. Yet the story model drew such characters with the right look 13% of the time where copying the source
frame gives 91% (benchmarks/RESULTS.md, "Why unseen characters lose their looks"). The bonus lets the output
layer say "the source's token here" in one step, and by how much, from everything the position knows
(the cross-attention and story token included); it can also go negative (the story has moved on).

`beta` starts at zero (outputs unchanged at step 0) and learns from the first step: the loss's gradient on it is
p(source token) - [target == source token], which is not zero. GAIN multiplies its output, so that one Adam step
(about the learning rate per weight, whatever the gradient's size) moves the bonus GAIN times as far: at gain 1 and
lr 1e-4, 1000 steps of fine-tuning on sprites left the weight's norm at 0.1 and the drawn looks unchanged; at gain
10, 1500 steps lifted setting accuracy and appearance a little but not unseen characters' looks (RESULTS).
The mark tells every later position where the frame drawn so far agrees with the source (the token to the left,
the row above): without it, the transformer would have to compare token embeddings across the cross-attention to
know whether "copy the source here" has been right around this position, which teacher forcing gave it little reason
to learn (at 1500 steps the bonus was about +0.5 everywhere, on copyable and changed tokens alike: `GAIN` x beta
read from the hidden states alone did not tell them apart).

Rows without a source frame (context_rows False: the first frame of story visualization, and the guidance branch)
get no bonus, and neither does a position past the source's last token.
"""

from __future__ import annotations

import torch
from torch import nn

GAIN = 10.0


class SourceCopy(nn.Module):
    """The bonus for the source frame's token at each predicted position (see the module docstring)."""

    def __init__(self, width: int):
        super().__init__()
        self.beta = nn.Linear(width, 1)
        nn.init.zeros_(self.beta.weight)
        nn.init.zeros_(self.beta.bias)
        self.agree = nn.Parameter(torch.zeros(width))

    def mark(
        self,
        image: torch.Tensor,
        start: int,
        source_codes: torch.Tensor | None = None,
        context_rows: torch.Tensor | None = None,
        **extra,
    ) -> torch.Tensor | None:
        """image (B, N) codes at image positions start ... start+N-1 -> (B, N, D) to add to their embeddings
        (GAIN x `agree` where the token equals the source's at the same position, in rows with a source), or None."""
        if source_codes is None:
            return None
        same = image == source_codes[:, start : start + image.shape[1]]
        if context_rows is not None:
            same = same & context_rows[:, None]
        return same[..., None].to(self.agree.dtype) * (GAIN * self.agree)

    def forward(
        self,
        normed: torch.Tensor,
        logits: torch.Tensor,
        first: int,
        source_codes: torch.Tensor | None = None,
        context_rows: torch.Tensor | None = None,
        **extra,
    ) -> torch.Tensor:
        """normed (B, L, D) the final-norm hidden states that give logits (B, L, V) for image tokens first ...
        first+L-1; source_codes (B, N) the source frame's codes (None: no bonus); context_rows (B,) bool rows
        with a source frame (None: all) -> logits with the bonus added."""
        if source_codes is None:
            return logits
        count = min(logits.shape[1], source_codes.shape[1] - first)
        if count <= 0:
            return logits
        beta = GAIN * self.beta.forward(normed[:, :count]).to(logits.dtype)  # (B, count, 1)
        if context_rows is not None:
            beta = beta * context_rows[:, None, None].to(beta.dtype)
        index = source_codes[:, first : first + count, None]
        head = logits[:, :count].scatter_add(-1, index, beta)
        return torch.cat([head, logits[:, count:]], dim=1) if count < logits.shape[1] else head
