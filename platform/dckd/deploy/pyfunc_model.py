"""The pyfunc model MLflow loads for a registered student (MLflow's models-from-code).

MLflow copies this file into each logged student and runs it on load; it ends with
``mlflow.models.set_model``. ``load_context`` rebuilds the network from the artifacts ``spec.json``
and ``weights.pt`` (weights-only ``torch.load``), so loading never unpickles; ``predict`` restores
each image tile by tile as ``dckd restore`` does. Request and response formats:
:mod:`dckd.deploy.serving`. Kept thin on purpose: the logic lives in the installed dckd.
"""

from __future__ import annotations

from typing import Any

import mlflow
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.pyfunc import PythonModel, PythonModelContext


class StudentRestorer(PythonModel):
    """Images (PNG/JPEG bytes, base64 text or uint8 arrays) in, restored PNG images out."""

    def load_context(self, context: PythonModelContext) -> None:
        from dckd.deploy.serving import SPEC_ARTIFACT, WEIGHTS_ARTIFACT, load_restorer
        from dckd.errors import DckdError

        try:
            self.model = load_restorer(context.artifacts[SPEC_ARTIFACT], context.artifacts[WEIGHTS_ARTIFACT])
        except (DckdError, KeyError) as exc:
            raise MlflowException(f"the logged student cannot be loaded: {exc}") from exc

    # MLflow turns every input into a DataFrame by the signature's ``image`` column before predict (a
    # dict of lists too); a DataFrame hint also keeps MLflow from second-guessing the signature.
    def predict(self, context: PythonModelContext, model_input: pd.DataFrame,
                params: dict[str, Any] | None = None) -> pd.DataFrame:
        from dckd.deploy.serving import restore_all
        from dckd.errors import DataError

        try:
            return restore_all(self.model, model_input, params)
        except DataError as exc:  # the client's input: HTTP 400 with this one line
            raise MlflowException.invalid_parameter_value(str(exc)) from exc


mlflow.models.set_model(StudentRestorer())
