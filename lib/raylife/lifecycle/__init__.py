"""Lifecycle: the artifact, the model store, the promotion gate, history, promotion, train-then-store, evaluation."""
