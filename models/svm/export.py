"""Export a trained LinearSVM + its transformer as one servable version.

Layout of `<export_path_base>/<model_version>/`:
    saved_model.pb, variables/            -- signature serving_default:
                                             x [None, n_features] float32 ->
                                             predictClass [None] int64, scores [None, num_class] float32
    assets.extra/transformer.json         -- vocabulary, idf, settings, class names
"""
import logging

import tensorflow as tf

from pyserving.runtime import warmup
from pyserving.version_dir import publish_version

logger = logging.getLogger(__name__)

SIGNATURE_NAME = "serving_default"


def export_model(model, transformer, export_path_base, model_version):
    """Write the version atomically; return its final path."""
    if transformer.n_features != model.n_features:
        raise ValueError("transformer has %d features, model %d"
                         % (transformer.n_features, model.n_features))
    if len(transformer.classes) != model.num_class:
        raise ValueError("transformer has %d classes, model %d"
                         % (len(transformer.classes), model.num_class))

    def write(staging):
        tf.saved_model.save(model, staging,
                            signatures={SIGNATURE_NAME: model.serve.get_concrete_function()})
        transformer.save_to_version_dir(staging)
        # Warmup requests (TF Serving's format): the first real request is not the slow one.
        sample = transformer.transform([transformer.classes[0]]).astype("float32")
        warmup.write_requests(staging, [warmup.predict_log(SIGNATURE_NAME, {"x": sample})])

    final = publish_version(export_path_base, model_version, write, staging_prefix=".tmp-export-")
    logger.info("Exported model version %s to %s", model_version, final)
    return final
