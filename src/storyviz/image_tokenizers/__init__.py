"""Image tokenizers (stage 1 of DALL-E-style models): images <-> grids of discrete codes.

- vqgan.py: `VQGAN` in the taming-transformers / minDALL-E layout (loads the released stage-1 weights).
- dvae.py: `DVAE`, the discrete VAE of DALL-E 1 and the minimal DALL-E (Gumbel-softmax relaxation).
- quantize.py: `VectorQuantizer` (straight-through, EMA codebook, dead-code restarts).
- discriminator.py: the PatchGAN discriminator used by the VQGAN training task.
- layers.py: the VQGAN's blocks with their published parameter names.

Both tokenizers offer `forward(images) -> (reconstruction, codes, losses)`, `encode(images) -> codes`,
`decode(codes) -> images`, `codebook_size`, `downsample_factor` and `grid_size()`.
"""

from storyviz.image_tokenizers.dvae import DVAE, DVAEConfig
from storyviz.image_tokenizers.quantize import VectorQuantizer, codebook_stats
from storyviz.image_tokenizers.vqgan import VQGAN, VQGANConfig

__all__ = ["DVAE", "DVAEConfig", "VQGAN", "VQGANConfig", "VectorQuantizer", "codebook_stats"]
