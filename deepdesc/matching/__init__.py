"""Layer 4, matching: nearest-neighbour descriptor matching and robust geometric verification."""

from .nearest_neighbor import match_descriptors
from .verify import estimate_fundamental, estimate_homography, matched_points

__all__ = ["estimate_fundamental", "estimate_homography", "match_descriptors", "matched_points"]
