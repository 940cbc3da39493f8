"""Models registered before the bundle moved to `deploy/bundle/` load `deploy.pyfunc` by name
(their model_code.py). A process that already imported this `deploy` (the model server)
resolves that name here: it is the bundle's pyfunc."""

from deploy.bundle.pyfunc import RecurrentModel

__all__ = ["RecurrentModel"]
