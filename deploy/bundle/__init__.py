"""What a registered model carries and runs with (torch and numpy only, below `tune`): the
pyfunc (`pyfunc`), its model-from-code entry (`model_code`), request parsing (`inputs`) and the
serving requirements (`requirements`). tune/registry.py packs exactly this package."""
