"""warmstart: cold-start recommendation with pretrained language models."""

__version__ = "0.1.0"
