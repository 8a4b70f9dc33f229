# GPU worker image: the project installed from uv.lock on a CUDA base.
# PyTorch's wheels carry their own CUDA 13 runtime; the host needs an NVIDIA driver >= 580 and the
# NVIDIA container toolkit.  Build from the repository root:
#   docker build -f docker/worker-gpu.Dockerfile -t indextts-train-gpu:latest --build-arg GIT_COMMIT=$(git rev-parse HEAD) .
ARG CUDA_IMAGE=nvidia/cuda:13.0.2-base-ubuntu24.04
FROM ${CUDA_IMAGE}

ARG GIT_COMMIT=unknown
ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONUNBUFFERED=1 \
    UV_PYTHON_INSTALL_DIR=/opt/python \
    UV_PROJECT_ENVIRONMENT=/opt/venv \
    UV_LINK_MODE=copy \
    UV_COMPILE_BYTECODE=1 \
    PATH=/opt/venv/bin:$PATH \
    GIT_COMMIT=${GIT_COMMIT} \
    PREFECT_LOGGING_EXTRA_LOGGERS=indextts_core,tasks \
    PREFECT_SERVER_ANALYTICS_ENABLED=false \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility

RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl git libsndfile1 espeak-ng \
 && rm -rf /var/lib/apt/lists/*

COPY --from=ghcr.io/astral-sh/uv:0.13.9 /uv /uvx /usr/local/bin/

WORKDIR /opt/indextts-train
# dependencies first (cached layer), then the project itself
COPY pyproject.toml uv.lock README.md ./
RUN uv python install 3.11 \
 && uv sync --locked --no-install-project --extra workers
COPY indextts_core ./indextts_core
COPY tasks ./tasks
COPY flows ./flows
COPY deployments ./deployments
COPY configs ./configs
RUN uv sync --locked --extra workers

# a process worker by default; the Docker/Kubernetes workers start containers of this image themselves
CMD ["prefect", "worker", "start", "--pool", "local-process"]
