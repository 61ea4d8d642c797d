"""Ray job entrypoints: thin wrappers over raylife.cli (parse args -> config -> one lib call)."""
