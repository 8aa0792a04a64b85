"""warmstart's own model: collaborative filtering bridged to text, blended by how much we know.

One module per idea: `config` (the settings), `model` (fit and score), `selection` (the searches
that choose the settings on held-out data), `blending` (the blends' arithmetic, and `ColdBlend`,
the weights a scoring call takes), `choices` (what a fit chose, as reported and saved), `growth` (item arrays that grow without
copying as items are added).
"""

from warmstart.models.hybrid.blending import ColdBlend, ProfileParts, popularity_fade
from warmstart.models.hybrid.choices import CFChoice, ColdUserChoice, WarmUserChoice
from warmstart.models.hybrid.config import WarmStartConfig
from warmstart.models.hybrid.model import WarmStartRecommender

__all__ = [
    "CFChoice",
    "ColdBlend",
    "ColdUserChoice",
    "ProfileParts",
    "WarmStartConfig",
    "WarmStartRecommender",
    "WarmUserChoice",
    "popularity_fade",
]
