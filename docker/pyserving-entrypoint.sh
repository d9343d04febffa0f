#!/bin/sh
# Entrypoint of the pyserving image, with the official image's contract
# (tensorflow/serving's tf_serving_entrypoint.sh): MODEL_NAME and MODEL_BASE_PATH
# pick the model, ports 8500 (gRPC) and 8501 (REST), and the container's arguments
# (Kubernetes `args:`, compose `command:`) are appended to the flags. A flag given
# again there wins, since the last occurrence of a flag counts (as in TF Serving);
# --model_config_file makes --model_name and --model_base_path unused.
#
# Unlike the official script this one execs the server: pyserving then IS the
# container's main process (PID 1), receives SIGTERM from `docker stop` or the
# kubelet and drains, instead of a shell that ignores it until SIGKILL.
set -e
exec tensorflow_model_server --port=8500 --rest_api_port=8501 \
  --model_name="${MODEL_NAME}" --model_base_path="${MODEL_BASE_PATH}/${MODEL_NAME}" "$@"
