"""Suite files and the replication claims, shipped as package data (read with importlib.resources)."""
