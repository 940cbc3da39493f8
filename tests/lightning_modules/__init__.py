"""Tests of `lightning_modules`."""
