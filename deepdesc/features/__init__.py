"""Layer 3, features: image reading, DoG keypoints, normalised patches, ``describe()`` and the extractor."""
