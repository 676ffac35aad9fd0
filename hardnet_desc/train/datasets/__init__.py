"""Training sets of patch pairs: from synthetic warps of single photos and from COLMAP tracks."""
