"""The sprites story world: world.py (characters, settings), draw.py (drawing), stories.py (stories, captions)."""
