# syntax=docker/dockerfile:1.7
# docker build -f infra/docker/runtime-python.Dockerfile -t tessera/runtime-python:0.1.0 .   (from the repository root)
# The image every python replica pod runs: the stdlib-only runtime, Python for venv (pip)
# environments, and micromamba for conda environments (and for pip specs pinning another Python).
FROM python:3.12-slim-bookworm
ARG MICROMAMBA_VERSION=2.0.5-0
ARG TARGETARCH
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl bzip2 \
 && case "${TARGETARCH:-amd64}" in amd64) arch=linux-64 ;; arm64) arch=linux-aarch64 ;; *) echo "unsupported arch" >&2; exit 1 ;; esac \
 && curl -fsSL "https://github.com/mamba-org/micromamba-releases/releases/download/${MICROMAMBA_VERSION}/micromamba-${arch}" -o /usr/local/bin/micromamba \
 && chmod 0755 /usr/local/bin/micromamba \
 && apt-get purge -y curl && apt-get autoremove -y && rm -rf /var/lib/apt/lists/*
# micromamba keeps its package cache under the (writable, emptyDir) /tmp in pods.
ENV MAMBA_ROOT_PREFIX=/tmp/micromamba \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
COPY packages/runtime-python/ /opt/tessera/runtime-python/
COPY infra/docker/tessera-build-env infra/docker/tessera-runtime-python /usr/local/bin/
RUN groupadd --gid 10001 tessera && useradd --uid 10001 --gid 10001 --home-dir /tmp --no-create-home tessera \
 && mkdir -p /envs /code && chown 10001:10001 /envs
USER 10001:10001
EXPOSE 8000
ENTRYPOINT ["tessera-runtime-python"]
