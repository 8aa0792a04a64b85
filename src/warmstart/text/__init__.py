"""Text encoders and their on-disk embedding cache, for scoring items that have no interactions."""

from warmstart.text.cache import (
    CachedEncoder,
    FrozenEncoder,
    MemoryCachedEncoder,
    default_cache_dir,
    encoder_from_name,
)
from warmstart.text.encoders import (
    ENCODER_NAMES,
    HashingEncoder,
    MiniLMEncoder,
    MissingDependencyError,
    MultilingualEncoder,
    TextEncoder,
    get_encoder,
)

__all__ = [
    "ENCODER_NAMES",
    "CachedEncoder",
    "FrozenEncoder",
    "HashingEncoder",
    "MemoryCachedEncoder",
    "MiniLMEncoder",
    "MissingDependencyError",
    "MultilingualEncoder",
    "TextEncoder",
    "default_cache_dir",
    "encoder_from_name",
    "get_encoder",
]
