# The pyserving image: the kit's drop-in tensorflow_model_server on slim Python,
# with the official tensorflow/serving image's contract (MODEL_NAME,
# MODEL_BASE_PATH, ports 8500 and 8501, container arguments appended to the
# server's flags) but running as a non-root user and receiving SIGTERM.
#
# Build from the repository root (docker/pyserving.Dockerfile.dockerignore sends
# only pyproject.toml, pyserving/ and this image's files):
#   docker build -f docker/pyserving.Dockerfile -t kit-pyserving:0.1.0 .
# or simply: inv image --target=pyserving   (see docker/README.md)

# One exact tag for both stages (no floating 3.11-slim): the same interpreter
# builds the venv and runs it, so the venv can be copied as it is.
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
# The requirements alone first, so that editing pyserving/ reuses this layer
# (TensorFlow is most of the image). Every package is pinned in the file and
# installed with --no-deps: nothing unpinned is resolved.
COPY docker/pyserving-requirements.txt /tmp/pyserving-requirements.txt
RUN python -m venv /opt/pyserving \
 && /opt/pyserving/bin/pip install --no-cache-dir --no-deps -r /tmp/pyserving-requirements.txt
COPY pyproject.toml /src/pyproject.toml
COPY pyserving /src/pyserving
# The project without its dependencies (all installed above, dev tools never).
RUN /opt/pyserving/bin/pip install --no-cache-dir --no-deps /src \
 && /opt/pyserving/bin/python -c "import tensorflow, tensorflow_serving.apis, aiohttp, orjson, grpc_health, prometheus_client, pyserving.app" \
 && /opt/pyserving/bin/tensorflow_model_server --version

FROM ${PYTHON_IMAGE}
# A numeric uid/gid, so Kubernetes' runAsNonRoot can check it without a passwd lookup.
RUN groupadd --gid 1000 pyserving \
 && useradd --uid 1000 --gid 1000 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin pyserving
COPY --from=build /opt/pyserving /opt/pyserving
COPY --chmod=0755 docker/pyserving-entrypoint.sh /usr/local/bin/pyserving-entrypoint.sh
ENV PATH=/opt/pyserving/bin:${PATH} \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    MODEL_NAME=model \
    MODEL_BASE_PATH=/models
LABEL org.opencontainers.image.title="pyserving" \
      org.opencontainers.image.description="The reproduction kit's drop-in tensorflow_model_server (Python), with tensorflow/serving's image contract"
EXPOSE 8500 8501
USER 1000:1000
# Exec form: no shell between the container and the script, which execs the server.
ENTRYPOINT ["/usr/local/bin/pyserving-entrypoint.sh"]
