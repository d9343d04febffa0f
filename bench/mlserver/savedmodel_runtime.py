"""An MLServer runtime calling a TF SavedModel's serving_default, for bench/oip.py's comparison:
the same SavedModel pyserving serves, answered over MLServer's Open Inference Protocol (REST and
gRPC). Runs in MLServer's own venv (mlserver and tensorflow-cpu; bench/oip.py --mlserver-python).
"""
from __future__ import annotations

import tensorflow as tf
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse


class SavedModelRuntime(MLModel):
    async def load(self) -> bool:
        self._signature = tf.saved_model.load(self.settings.parameters.uri).signatures["serving_default"]
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        inputs = {item.name: tf.constant(NumpyCodec.decode_input(item)) for item in payload.inputs}
        outputs = self._signature(**inputs)
        return InferenceResponse(model_name=self.name, id=payload.id,
                                 outputs=[NumpyCodec.encode_output(name, value.numpy())
                                          for name, value in outputs.items()])
