"""Print the project's dependencies (and extras) from pyproject.toml, one per line, without torch;
and the registered model's own requirements (`serving_requirements`).

The Docker build installs torch from its own index first, then these pinned by constraints.txt,
then the source: so the dependency layer is rebuilt only when pyproject.toml changes.
"""

from __future__ import annotations

import argparse
import re
import tomllib
from pathlib import Path


def requirements(pyproject: Path, extras: list[str]) -> list[str]:
    project = tomllib.loads(pyproject.read_text())["project"]
    deps = list(project["dependencies"])
    for extra in extras:
        deps += project["optional-dependencies"][extra]
    return [d for d in deps if re.split(r"[\[<>=!~ ;]", d, maxsplit=1)[0] != "torch"]


# What the serving bundle imports (deploy/bundle/pyfunc.py and the lightning_modules it loads).
# MLflow as `mlflow-skinny`: the pyfunc flavor and the scoring server (FastAPI, uvicorn) without
# the tracking server's packages (scikit-learn, scipy, pyarrow, matplotlib, Flask, docker, ...).
SERVING_PACKAGES = ("mlflow-skinny", "torch", "numpy", "pandas", "pydantic", "pyyaml")


def serving_requirements() -> list[str]:
    """The registered pyfunc's requirements.txt: each package it imports, pinned to this
    environment's version; torch without its local build tag (`2.13.0`, not `2.13.0+cpu`), so
    `mlflow models serve --env-manager virtualenv|uv` installs the index's build. Not rnntune
    itself: the bundle carries its own code (`code_paths`)."""
    from importlib.metadata import version

    return [f"{name}=={version(name).split('+')[0]}" for name in SERVING_PACKAGES]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--extra", action="append", default=[])
    parser.add_argument("--pyproject", default="pyproject.toml")
    args = parser.parse_args()
    print("\n".join(requirements(Path(args.pyproject), args.extra)))


if __name__ == "__main__":
    main()
