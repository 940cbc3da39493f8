"""What runs a registered model and the platform's containers (above `tune`): the model server
on Ray Serve (`serve`), the image's entrypoint and healthcheck, MLflow's read-only users."""
