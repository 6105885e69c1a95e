"""StoryDALL-E's source copy (storyviz's addition, not in the paper): a learned bonus, added to the image logits, for
the source frame's token at the position being predicted, from the hidden state and from whether the tokens already
drawn around that position equal the source's at theirs.

    logits[b, i, source[b, i]] += GAIN * beta(ln_f(h[b, i])) + TABLE_GAIN * table[pattern(b, i)]
    pattern(b, i): 3 bits, the tokens left of, above and above-right of i equal the source's at their positions
    beta: Linear(width, 1) and table: (8,), both zero-initialised

Why: on sprites, a character the model has never seen by name (a guest, or test_unseen's held-out looks) keeps its
screen slot through a story, and in a frame where it also keeps its pose the source frame holds exactly the tokens
to draw. Yet the story model drew such characters with the right look 13% of the time where copying the source
frame gives 91% (benchmarks/RESULTS.md, "Why unseen characters lose their looks"). The bonus lets the output
layer say "the source's token here" in one step, and by how much; it can also go negative (the story has moved on).
The neighbours' agreement is what tells a copyable token from a changed one: in sprites training stories, a token
whose left, upper and upper-right neighbours equal the source's equals it too 92% of the time, and 4% when neither
the left nor the upper one does. Read from the hidden state alone (no table), 1500 steps of fine-tuning left the
bonus at about +0.5 on copyable and changed tokens alike; a mark on the input embeddings of agreeing tokens, which
the transformer would have to learn to look up, had not changed the drawn looks after 500 steps.

`beta` and `table` start at zero (outputs unchanged at step 0) and learn from the first step: the loss's gradient
on the bonus is p(source token) - [target == source token], which is not zero. The gains multiply them, so that one
Adam step (about the learning rate per weight, whatever the gradient's size) moves the bonus that many times as far:
at gain 1 and lr 1e-4, 1000 steps of fine-tuning on sprites left beta's weight at a norm of 0.1 and the drawn looks
unchanged; the table's entries, one number each, moved 0.1 logits in 125 steps at GAIN, hence TABLE_GAIN (a few
logits within a few hundred steps at lr 1e-4).

The agreement of the tokens drawn so far is recorded, as they are embedded (`record`, from Dalle.embed_image), in a
(B, N) bool buffer that StoryDalle.block_inputs adds to the block keyword arguments (`source_agree`); one buffer
serves a whole generation, cached or not, since every position is written before a later one reads it. Neighbours
outside the grid count as disagreeing. Rows without a source frame (context_rows False: the first frame of story
visualization, and the guidance branch) get no bonus, and neither does a position past the source's last token.
"""

from __future__ import annotations

import torch
from torch import nn

GAIN = 10.0
TABLE_GAIN = 100.0


class SourceCopy(nn.Module):
    """The bonus for the source frame's token at each predicted position (see the module docstring)."""

    def __init__(self, width: int, grid: int):
        super().__init__()
        self.grid = grid
        self.beta = nn.Linear(width, 1)
        nn.init.zeros_(self.beta.weight)
        nn.init.zeros_(self.beta.bias)
        self.table = nn.Parameter(torch.zeros(8))

    def record(
        self,
        image: torch.Tensor,
        start: int,
        source_codes: torch.Tensor | None = None,
        source_agree: torch.Tensor | None = None,
        **extra,
    ) -> None:
        """image (B, N) codes at image positions start ... start+N-1: writes into `source_agree` (B, image_len)
        whether each equals the source's token at its position."""
        if source_codes is None or source_agree is None:
            return
        end = start + image.shape[1]
        source_agree[:, start:end] = image == source_codes[:, start:end]

    def patterns(self, source_agree: torch.Tensor, first: int, count: int) -> torch.Tensor:
        """(B, count) int64 in 0..7: bit 0 the left neighbour of positions first ... first+count-1 agrees with the
        source, bit 1 the one above, bit 2 the one above-right (outside the grid: 0)."""
        grid = self.grid
        positions = torch.arange(first, first + count, device=source_agree.device)
        column, row = positions % grid, positions // grid
        neighbours = (
            (positions - 1, column > 0),
            (positions - grid, row > 0),
            (positions - grid + 1, (row > 0) & (column < grid - 1)),
        )
        out = torch.zeros(source_agree.shape[0], count, dtype=torch.long, device=source_agree.device)
        for bit, (where, inside) in enumerate(neighbours):
            flags = source_agree[:, where.clamp(min=0)] & inside
            out |= flags.long() << bit
        return out

    def forward(
        self,
        normed: torch.Tensor,
        logits: torch.Tensor,
        first: int,
        source_codes: torch.Tensor | None = None,
        context_rows: torch.Tensor | None = None,
        source_agree: torch.Tensor | None = None,
        **extra,
    ) -> torch.Tensor:
        """normed (B, L, D) the final-norm hidden states that give logits (B, L, V) for image tokens first ...
        first+L-1; source_codes (B, N) the source frame's codes (None: no bonus); context_rows (B,) bool rows
        with a source frame (None: all); source_agree (B, N) the recorded agreement -> logits with the bonus."""
        if source_codes is None:
            return logits
        count = min(logits.shape[1], source_codes.shape[1] - first)
        if count <= 0:
            return logits
        bonus = GAIN * self.beta.forward(normed[:, :count])[..., 0]  # (B, count)
        if source_agree is not None:
            bonus = bonus + TABLE_GAIN * self.table[self.patterns(source_agree, first, count)]
        bonus = bonus.to(logits.dtype)
        if context_rows is not None:
            bonus = bonus * context_rows[:, None].to(bonus.dtype)
        index = source_codes[:, first : first + count, None]
        head = logits[:, :count].scatter_add(-1, index, bonus[..., None])
        return torch.cat([head, logits[:, count:]], dim=1) if count < logits.shape[1] else head
