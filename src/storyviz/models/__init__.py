"""Networks. Each returns logits or predicted noise; losses live in storyviz.training, sampling in storyviz.sampling."""
