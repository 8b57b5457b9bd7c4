# syntax=docker/dockerfile:1
# lkps container image: `lkps serve` on port 8000 as UID 10001 (the Helm chart's runAsUser).
#
#   docker build -t registry.example.com/platform/lkps:0.1.0 .
#
# Two stages: the builder installs exactly what uv.lock pins into /app/.venv; the runtime stage copies
# only that virtualenv onto a clean python:3.11-slim (no uv, no compilers, no package-manager caches).
# Both stages use the same base image, so the venv's interpreter symlink resolves unchanged.

# uv release, kept equal to UV_VERSION in scripts/bootstrap.
ARG UV_VERSION=0.13.9

FROM ghcr.io/astral-sh/uv:${UV_VERSION} AS uv

# ---------------------------------------------------------------------------------------------------
FROM python:3.11-slim AS builder

COPY --from=uv /uv /usr/local/bin/uv

# Byte-compile at build time (the runtime filesystem is read-only); copy rather than hard-link out of
# the cache mount; never download an interpreter: use the image's python3.11.
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PYTHON=python3.11 \
    UV_PROJECT_ENVIRONMENT=/app/.venv

WORKDIR /src

# Dependencies first, from the lock file and the two pyproject.toml files alone (the server and the client
# distribution in client/, a workspace member), so source edits reuse this layer.
RUN --mount=type=cache,target=/root/.cache/uv \
    --mount=type=bind,source=uv.lock,target=uv.lock \
    --mount=type=bind,source=pyproject.toml,target=pyproject.toml \
    --mount=type=bind,source=client/pyproject.toml,target=client/pyproject.toml \
    uv sync --frozen --no-dev --no-install-workspace

# Then the server and the client (which owns the `lkps` script), installed as regular (non-editable)
# packages so /src is not needed later.
COPY pyproject.toml uv.lock README.md ./
COPY client ./client
COPY config ./config
COPY authz ./authz
COPY gateway ./gateway
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-editable

# ---------------------------------------------------------------------------------------------------
FROM python:3.11-slim AS runtime

LABEL org.opencontainers.image.title="lkps" \
      org.opencontainers.image.description="LiveKit Platform Service: an Entra ID to LiveKit token gateway"

# A fixed, non-root identity matching the chart's securityContext (runAsUser/runAsGroup 10001).
RUN groupadd --system --gid 10001 lkps \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin lkps

# Root-owned and read-only for the service user.
COPY --from=builder /app/.venv /app/.venv

ENV PATH="/app/.venv/bin:${PATH}" \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

WORKDIR /app
USER 10001:10001
EXPOSE 8000

# No HEALTHCHECK: Kubernetes probes /api/health/live and /api/health/ready, and the image has no curl.
ENTRYPOINT ["lkps"]
CMD ["serve"]
