# syntax=docker/dockerfile:1
# wooflow: one image for every role (`wooflow bridge|rules|workers|sink|scheduler|api|migrate`).
#   docker build -t wooflow .
# Runs as uid 10001 and never writes outside /tmp, so it works with a read-only root
# filesystem (deploy/k8s mounts an emptyDir on /tmp).

# --- builder: build the wheel and install it with its dependencies into a venv -------------
FROM python:3.11-slim AS builder
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
RUN python -m venv /opt/wooflow && /opt/wooflow/bin/pip install --upgrade pip wheel
# The whole context (see .dockerignore): pyproject.toml maps the top-level folders into
# the wooflow namespace, so a new role folder needs no change here.
COPY . .
RUN /opt/wooflow/bin/pip wheel --no-deps --wheel-dir /wheels . \
 && /opt/wooflow/bin/pip install /wheels/wooflow-*.whl \
 && /opt/wooflow/bin/python -m compileall -q /opt/wooflow/lib

# --- runtime: the venv only, no compilers, no source tree -----------------------------------
FROM python:3.11-slim
RUN groupadd --gid 10001 wooflow \
 && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /tmp --shell /usr/sbin/nologin wooflow
COPY --from=builder /opt/wooflow /opt/wooflow
ENV PATH=/opt/wooflow/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/tmp \
    WOOFLOW_STATE_DIR=/tmp/wooflow-state \
    WOOFLOW_CACHE_DIR=/tmp/wooflow-cache
USER 10001:10001
WORKDIR /tmp
# bridge, api, metrics of the Kafka roles
EXPOSE 8080 8000 9100
ENTRYPOINT ["wooflow"]
CMD ["--help"]
