"""Hyperparameter search over recurrent models with Ray Tune, tracked in MLflow (see DESIGN.md)."""
