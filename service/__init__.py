"""The `rnntune` CLI (and, later, the REST job service)."""
