# syntax=docker/dockerfile:1.7
# The tuneops operator: kopf + kubernetes client only (`.[operator]`), no torch, so it stays small.
# Build from the repo root:  docker build -f docker/operator.Dockerfile -t tuneops-operator .
# Bases are pinned to exact versions; CI's image workflow resolves and records their digests.
ARG PYTHON_IMAGE=python:3.12.8-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY tuneops ./tuneops
RUN python -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-cache-dir ".[operator]" \
    && /opt/venv/bin/tuneops version

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="tuneops-operator" \
      org.opencontainers.image.description="GitOps fine-tuning and serving of LLMs on Kubernetes: the operator" \
      org.opencontainers.image.licenses="Apache-2.0"
# git (+ ssh) for the rollback write-back (tuneops/operator/gitops_writeback.py: commits a reverted activeVersion).
# Package versions follow the pinned base (security updates included).
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends git openssh-client \
    && rm -rf /var/lib/apt/lists/*
# A fixed numeric uid: the chart's runAsNonRoot needs a numeric USER to verify.
RUN groupadd --gid 10001 tuneops && useradd --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin tuneops
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
USER 10001:10001
EXPOSE 8080 9090
ENTRYPOINT ["tuneops"]
CMD ["operator", "--all-namespaces"]
