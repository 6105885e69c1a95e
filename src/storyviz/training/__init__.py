"""Training: one loop for every model (storyviz.training.loop) driven by a per-model Task."""
