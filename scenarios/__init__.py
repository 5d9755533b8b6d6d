"""Built-in scenario TOML files (data package)."""
