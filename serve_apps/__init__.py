"""Ray Serve applications (see the Serve issue)."""
