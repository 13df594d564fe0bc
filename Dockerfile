# syntax=docker/dockerfile:1
#
# galacto container images (multi-stage; BuildKit builds only the stages a target needs).
#
#   docker build -t galacto:0.1.0 .                        # `serve` (the default: last stage)
#   docker run -p 8000:8000 -e GALACTO_API_KEYS=<key> \
#       -e GALACTO_ALLOWED_HOSTS=localhost,galacto.example.org galacto:0.1.0   # = galacto serve
#   docker run --no-healthcheck -p 11112:11112 -e GALACTO_GATEWAY_ALLOWED_CALLERS=PACS@10.0.0.5 \
#       -v galacto-spool:/var/lib/galacto/spool galacto:0.1.0 gateway run
# The HTTP service needs a key (GALACTO_AUTH=true below; without GALACTO_API_KEYS it refuses to
# start) and answers only loopback names and those of GALACTO_ALLOWED_HOSTS; the gateway
# listens on 0.0.0.0 only with an allow-list (AE@host) or GALACTO_GATEWAY_ALLOW_ANY=true.
#
#   docker build --target train -t galacto-train:0.1.0 .  # `train` extra, torch CPU build
#   docker run --rm -v "$PWD/data:/workspace/data" -v "$PWD/runs:/workspace/runs" \
#       galacto-train:0.1.0 train --config configs/galacto-small.yaml --run-dir runs/small
#
# GPU training: torch comes from TORCH_INDEX_URL (default: the CPU wheels). For a CUDA build
# pass the PyTorch index of a CUDA version the host driver supports, then run with the NVIDIA
# Container Toolkit; the CUDA runtime comes inside the torch wheels:
#   docker build --target train --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128 \
#       -t galacto-train:0.1.0-cu128 .
#   docker run --gpus all --shm-size 8g ... galacto-train:0.1.0-cu128 train --config configs/galacto-large.yaml ...
#   docker run --gpus all --entrypoint torchrun ... galacto-train:0.1.0-cu128 \
#       --nproc_per_node 4 -m serving.cli train --config configs/galacto-large.yaml ...
#
# Configuration is by GALACTO_* / GALACTO_GATEWAY_* environment variables only (README:
# "HTTP service" and "DICOM gateway"). The torch version is pinned in pyproject.toml, not here.

# For reproducible production builds pin the digest: python:3.11-slim-bookworm@sha256:...
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---------------------------------------------------------------------------------------------
# base: the Python runtime every stage shares (no compilers); /opt/venv first on PATH
# ---------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS base
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH
RUN groupadd --system --gid 10001 galacto \
    && useradd --system --uid 10001 --gid galacto --create-home --home-dir /home/galacto \
        --shell /usr/sbin/nologin galacto

# ---------------------------------------------------------------------------------------------
# builder: compilers for any dependency without a wheel for this platform, and the sources
# ---------------------------------------------------------------------------------------------
FROM base AS builder
# Debian security updates replace package versions, so exact pins would break rebuilds; this
# stage is thrown away (nothing from it but wheels and virtual environments reaches an image).
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md ./
COPY serving ./serving
COPY training ./training

# ---------------------------------------------------------------------------------------------
# venv-serve: wheels of galacto and of the `serve` extra only, installed into /opt/venv
# ---------------------------------------------------------------------------------------------
FROM builder AS venv-serve
RUN --mount=type=cache,target=/root/.cache/pip \
    pip wheel --wheel-dir /wheels '.[serve]' \
    && python -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-index --find-links /wheels 'galacto[serve]'

# ---------------------------------------------------------------------------------------------
# venv-train: the `train` extra (serve + torch, MONAI, ONNX, ...) into /opt/venv
# ---------------------------------------------------------------------------------------------
FROM builder AS venv-train
# Where torch comes from: the CPU wheels by default; a CUDA index for GPU hosts (see the top).
# pip takes torch==<pin from pyproject>+cpu (or +cuXXX) from this index: it sorts above PyPI's.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
RUN --mount=type=cache,target=/root/.cache/pip \
    python -m venv /opt/venv \
    && /opt/venv/bin/pip install --extra-index-url "${TORCH_INDEX_URL}" '.[train]'

# ---------------------------------------------------------------------------------------------
# train: for researchers. `docker run galacto-train ... train|export|evaluate|synth ...`;
# mount data/ and runs/ under /workspace (the working directory, writable by the user).
# ---------------------------------------------------------------------------------------------
FROM base AS train
COPY --from=venv-train /opt/venv /opt/venv
WORKDIR /workspace
COPY --chown=10001:10001 configs ./configs
COPY --chown=10001:10001 models ./models
RUN chown 10001:10001 /workspace
ENV HOME=/home/galacto \
    MPLCONFIGDIR=/tmp/matplotlib
USER 10001:10001
ENTRYPOINT ["galacto"]
CMD ["--help"]

# ---------------------------------------------------------------------------------------------
# serve (default): the HTTP service and the DICOM gateway. No torch, no MONAI, no compilers:
# only the Python runtime, the serve virtual environment and the bundled models.
# ---------------------------------------------------------------------------------------------
FROM base AS serve
COPY --from=venv-serve /opt/venv /opt/venv
# The default model is the one ./models/DEFAULT names (galacto-small/0.9.0).
WORKDIR /opt/galacto
COPY models ./models
RUN mkdir -p /var/lib/galacto/spool /var/lib/galacto/results \
    && chown -R 10001:10001 /var/lib/galacto
ENV GALACTO_HOST=0.0.0.0 \
    GALACTO_PORT=8000 \
    GALACTO_AUTH=true \
    GALACTO_RESULTS_DIR=/var/lib/galacto/results \
    GALACTO_GATEWAY_HOST=0.0.0.0 \
    GALACTO_GATEWAY_PORT=11112 \
    GALACTO_GATEWAY_SPOOL_DIR=/var/lib/galacto/spool
VOLUME ["/var/lib/galacto/spool", "/var/lib/galacto/results"]
# 8000: HTTP (galacto serve); 11112: DICOM (galacto gateway run, or serve --gateway)
EXPOSE 8000 11112
USER 10001:10001
# Ready = model loaded and warmed up. The gateway alone (`gateway run`) has no HTTP port:
# run it with `--no-healthcheck`, or run `serve --gateway` (GALACTO_GATEWAY_ENABLED=true).
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('GALACTO_PORT', '8000') + '/readyz', timeout=4)"]
ENTRYPOINT ["galacto"]
CMD ["serve"]
