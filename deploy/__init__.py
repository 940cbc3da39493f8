"""Serving registered models (see DESIGN.md)."""
