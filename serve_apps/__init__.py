"""Ray Serve applications: typed builders that Serve imports by path (no I/O at import)."""
