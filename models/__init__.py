"""PyTorch reference models of vp: the ground truth every engine is checked against."""
