"""Bridges to outside systems, one module each: kornia, scikit-image, ONNX, hloc feature files,
worker processes and Ray, COLMAP (pycolmap)."""
