# syntax=docker/dockerfile:1
# The operator image: `make docker-build` (IMG=substratus:dev). Runs `substratus run`, configured by
# SUBSTRATUS_* environment variables (manifests/manager/config.env), as uid 65532 on a read-only
# root filesystem: nothing is written outside /tmp (an emptyDir in the Deployment).

# --- builder: a wheel of the package, from pyproject.toml and src/ only -------------------------
FROM python:3.11-slim AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip wheel --no-deps --wheel-dir /wheels .

# --- runtime --------------------------------------------------------------------------------------
FROM python:3.11-slim AS runtime
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HOME=/tmp \
    XDG_CACHE_HOME=/tmp/.cache
# Installing as root into site-packages; the dependencies come from the package index.
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    pip install /wheels/*.whl \
    && groupadd --gid 65532 substratus \
    && useradd --uid 65532 --gid 65532 --no-create-home --home-dir /tmp --shell /usr/sbin/nologin substratus
USER 65532:65532
WORKDIR /tmp
# metrics, health probes, local cloud uploads
EXPOSE 8080 8081 8082
ENTRYPOINT ["substratus", "run"]
