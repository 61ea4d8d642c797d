"""Tracking: MLflow runs of training and sweeps, and the store's mirror in the MLflow Model Registry."""
