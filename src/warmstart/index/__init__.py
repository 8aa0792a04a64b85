"""Top-k retrieval: exact search now, behind an interface an ANN index can implement later."""

from warmstart.index.exact import ExactIndex, Index, topk

__all__ = ["ExactIndex", "Index", "topk"]
