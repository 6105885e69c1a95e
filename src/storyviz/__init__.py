"""storyviz: story visualization and continuation in one package.

storyviz never downloads anything: the Hugging Face libraries it uses are put in offline mode here,
before any of them is imported, so that a hub name fails loudly instead of returning a broken object.
"""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

__version__ = "0.1.0"
