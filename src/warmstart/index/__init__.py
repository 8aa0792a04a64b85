"""Top-k retrieval: exact search, and an incremental index that switches to usearch HNSW at scale."""

from warmstart.index.ann import VectorIndex
from warmstart.index.exact import ExactIndex, Index, topk

__all__ = ["ExactIndex", "Index", "VectorIndex", "topk"]
