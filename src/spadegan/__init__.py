"""Semantic image synthesis with spatially-adaptive normalization (SPADE, Park et al., CVPR 2019)."""

__version__ = "0.1.0"
