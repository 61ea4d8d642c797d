"""Inference: the predictor of one artifact and batch prediction over a table or image folder."""
