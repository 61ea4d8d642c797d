"""raylife: the PyTorch ML lifecycle on Ray (prepare -> train -> tune -> promote -> evaluate -> predict)."""

__version__ = "0.1.0"
