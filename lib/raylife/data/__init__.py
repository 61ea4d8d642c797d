"""Data: the shared contracts, the sources, streaming ingest and the dispatcher that prepares a run's data."""
