# syntax=docker/dockerfile:1.7
# The tuneops runtime: training pods (`python -m tuneops.runtime.train`, `torchrun`) and the built-in server
# (`tuneops serve`), on a CUDA base for GPUs (it also runs on CPU-only nodes).
# Build from the repo root:  docker build -f docker/runtime.Dockerfile -t tuneops-runtime .
ARG CUDA_IMAGE=nvidia/cuda:12.6.3-cudnn-runtime-ubuntu24.04

FROM ${CUDA_IMAGE} AS build
ARG EXTRAS=train,serve
ENV DEBIAN_FRONTEND=noninteractive PIP_DISABLE_PIP_VERSION_CHECK=1
# Ubuntu 24.04's python3 is 3.12. Package versions follow the pinned base (security updates included).
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md ./
COPY tuneops ./tuneops
# torch wheels from PyPI bundle their CUDA libraries (nvidia-* packages).
RUN python3 -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-cache-dir ".[${EXTRAS}]" \
    && /opt/venv/bin/tuneops version \
    && /opt/venv/bin/python -c "import tuneops.runtime"

FROM ${CUDA_IMAGE}
LABEL org.opencontainers.image.title="tuneops-runtime" \
      org.opencontainers.image.description="tuneops training + built-in inference server (CUDA)" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV DEBIAN_FRONTEND=noninteractive
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --gid 10001 tuneops \
    && useradd --uid 10001 --gid 10001 --create-home --home-dir /home/tuneops --shell /usr/sbin/nologin tuneops
COPY --from=build /opt/venv /opt/venv
# Pods never download weights at run time (contracts: HF_HUB_OFFLINE=1); caches go to a writable volume.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HF_HUB_OFFLINE=1 \
    HF_HOME=/home/tuneops/.cache/huggingface \
    TUNEOPS_HOME=/home/tuneops/.tuneops
USER 10001:10001
WORKDIR /home/tuneops
EXPOSE 8080
# The operator sets the command per pod (python -m tuneops.runtime.train, torchrun, tuneops serve).
ENTRYPOINT []
CMD ["tuneops", "--help"]
