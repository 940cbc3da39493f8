"""The pyfunc's load and predict path needs torch, not the training stack (README, Layout)."""

from __future__ import annotations

from tests.support.imports import loaded_after

TRAINING_STACK = ("pytorch_lightning", "lightning_fabric", "torchmetrics", "ray", "optuna")


def test_pyfunc_loads_and_predicts_without_lightning_or_ray(tmp_path):
    loaded = loaded_after(
        f"""
from types import SimpleNamespace
import numpy as np
from deploy.bundle.pyfunc import RecurrentModel, save_bundle
from lightning_modules.config import TrainSpec
from lightning_modules.data_info import DataInfo
from lightning_modules.models import build_network

spec = TrainSpec.model_validate({{"data": {{"name": "digits"}}, "model": {{"hidden_size": 8}}}})
info = DataInfo(input_size=8, out_features=10, seq_len=8)
path = save_bundle(build_network(spec.model, spec.task, info), spec, info, "{tmp_path}/m.pt")
model = RecurrentModel()
model.load_context(SimpleNamespace(artifacts={{"model": str(path)}}))
out = model.predict(None, np.zeros((3, 8, 8), dtype=np.float32))
assert len(out) == 3 and "label" in out.columns, out
"""
    )
    assert "deploy.bundle.pyfunc" in loaded and "torch" in loaded
    assert not [m for m in loaded if m.split(".")[0] in TRAINING_STACK]


def test_models_registered_before_the_bundle_moved_still_find_their_pyfunc():
    """Their model_code.py says `from deploy.pyfunc import RecurrentModel`; in the model server's
    process `deploy` is already this package, so the old name must lead to the bundle."""
    loaded = loaded_after(
        "import deploy.serving.healthcheck\n"
        "from deploy.pyfunc import RecurrentModel\n"
        "from deploy.bundle.pyfunc import RecurrentModel as Current\n"
        "assert RecurrentModel is Current\n"
    )
    assert "deploy.pyfunc" in loaded
