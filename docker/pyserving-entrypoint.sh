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
#
# Workers (--pyserving_num_workers, pyserving's own flag): PYSERVING_NUM_WORKERS when set;
# otherwise `auto` (as many as the CPU limit) when the container has a CPU limit, else 1. A CPU
# limit is the operator's statement of how many cores the server may use; without one the
# host's core count is no budget (each worker holds its own copy of every model). An argument
# --pyserving_num_workers=N still wins (the last occurrence counts).
set -e
workers=1
if [ -r /sys/fs/cgroup/cpu.max ]; then
  [ "$(cut -d' ' -f1 /sys/fs/cgroup/cpu.max)" = max ] || workers=auto
elif [ -r /sys/fs/cgroup/cpu/cpu.cfs_quota_us ]; then
  [ "$(cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us)" -le 0 ] || workers=auto
fi
exec tensorflow_model_server --port=8500 --rest_api_port=8501 \
  --model_name="${MODEL_NAME}" --model_base_path="${MODEL_BASE_PATH}/${MODEL_NAME}" \
  --pyserving_num_workers="${PYSERVING_NUM_WORKERS:-$workers}" "$@"
