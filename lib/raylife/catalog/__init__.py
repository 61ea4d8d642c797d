"""The model catalogue: each model's declaration (specs) and the torch architectures they name."""
