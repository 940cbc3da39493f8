"""How a trained model leaves training: the serving bundle (`pyfunc`, `model_code`, `inputs`:
torch and numpy only, below `tune`), and what runs it (`serve`, the model server on Ray Serve;
`entrypoint`, `healthcheck`, `mlflow_users` for the container; above `tune`). README, "Layout".
"""
