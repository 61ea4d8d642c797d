"""Serving: the HTTP API of a model, its service, Serve configs, local Serve and the bare baseline."""
