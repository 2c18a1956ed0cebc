"""keras-solo."""
