"""Hyperparameter search over recurrent models: the job spec, Ray Tune trials, MLflow tracking
and the model registry; `python -m tune` is the command a cluster runs.

Imports `lightning_modules` and the serving bundle (`deploy.bundle.pyfunc`); private Ray and MLflow
internals only through `tune.compat` (README, "Layout").
"""
