"""The registered pyfunc as MLflow "model from code": loading it runs this file (our code, shipped
with the model), never an unpickled object; the weights come from the `model` artifact."""

from mlflow.models import set_model

from deploy.bundle.pyfunc import RecurrentModel

set_model(RecurrentModel())
