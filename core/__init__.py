"""v2m: turn the rhythm of a video into music that fits it."""

__version__ = "0.1.0"
