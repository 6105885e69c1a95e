"""Importers of published checkpoints into storyviz model folders (read with `weights_only=True`)."""
