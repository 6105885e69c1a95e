"""Story data: storyviz's on-disk format (store), the built-in sprites world and digits, published-set readers.

from storyviz.data import open_dataset
data = open_dataset("data/sprites")
story = data.split("train")[0]      # {"frames": (L, H, W, 3) uint8, "captions": [...], "labels": {...}, ...}
frame = data.split("train").frames()[0]
"""

from storyviz.data.store import DataError, FrameSplit, StoryData, StorySplit, open_dataset, write_meta, write_split

__all__ = ["DataError", "FrameSplit", "StoryData", "StorySplit", "open_dataset", "write_meta", "write_split"]
