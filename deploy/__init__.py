"""How a trained model leaves training, in two layers: `deploy.bundle`, what the registered
model carries (torch and numpy only, below `tune`), and `deploy.serving`, what runs it and the
platform's containers (above `tune`). Manifests: compose.yaml, k8s/. README, "Layout"."""
