"""The job service's process loads no torch or Lightning (README, Layout)."""

from __future__ import annotations

from tests.support.imports import loaded_after


def test_job_service_process_imports_no_torch_or_lightning(tmp_path):
    loaded = loaded_after(
        "import os\n"
        f"os.environ['RNNTUNE_DATABASE_URL'] = 'sqlite:///{tmp_path / 'jobs.db'}'\n"
        "os.environ['RNNTUNE_DEV_MODE'] = 'true'\n"
        "from service.app import create_app\n"
        "app = create_app()\n"
        "app.openapi()\n"  # every route's models, the job spec's among them
    )
    assert "fastapi" in loaded
    assert not [m for m in loaded if m.split(".")[0] in ("torch", "pytorch_lightning")]
