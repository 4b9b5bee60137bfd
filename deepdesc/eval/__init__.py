"""Layer 7, evaluation: metrics and benchmark protocols (patches, homographies, relative pose)."""
