# syntax=docker/dockerfile:1
# A hospital's node: the Flower SuperNode (`twinledger node start`), the patient portal (`twinledger portal serve`)
# and the hospital IT console (`twinledger node console`): one image, three commands (docs/operations.md).
#
#   docker build -f deploy/docker/node.Dockerfile -t twinledger-node:0.1.0 .      (from the repository root)
#
# No key, token or home is in the image: keys arrive at run time as secrets (entrypoint.sh), the home is a volume.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# --- build: the project's wheel and a virtual environment holding it -------------------------------------------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY node ./node
COPY coordinator ./coordinator
COPY contracts ./contracts
COPY federation ./federation
COPY deploy ./deploy
COPY benchmarks ./benchmarks
# torch first and pinned: any range that admits a newer release pulls a CUDA build of several GB.
RUN python -m venv /opt/twinledger \
    && /opt/twinledger/bin/pip install --no-cache-dir torch==2.13.0 \
    && /opt/twinledger/bin/pip wheel --no-cache-dir --no-deps --wheel-dir /wheels . \
    && /opt/twinledger/bin/pip install --no-cache-dir /wheels/twinledger-*.whl

# --- run: the virtual environment, a non-root user, no compiler, no secrets ------------------------------------
FROM ${PYTHON_IMAGE}
RUN groupadd --system --gid 10001 twinledger \
    && useradd --system --uid 10001 --gid twinledger --home-dir /var/lib/twinledger --shell /usr/sbin/nologin twinledger \
    && mkdir -p /var/lib/twinledger/node \
    && chown -R twinledger:twinledger /var/lib/twinledger \
    && chmod 700 /var/lib/twinledger/node
COPY --from=build /opt/twinledger /opt/twinledger
COPY --chmod=0755 deploy/docker/entrypoint.sh /usr/local/bin/twinledger-entrypoint
ENV PATH=/opt/twinledger/bin:$PATH \
    HOME=/var/lib/twinledger/node \
    TWINLEDGER_HOME=/var/lib/twinledger/node \
    TWINLEDGER_KEYS_MOUNT=/run/secrets/twinledger \
    TWINLEDGER_PROBE="tcp 127.0.0.1:9101" \
    PYTHONUNBUFFERED=1 \
    MPLCONFIGDIR=/tmp/matplotlib \
    FLWR_TELEMETRY_ENABLED=0 \
    FLWR_DISABLE_UPDATE_CHECK=1
USER 10001:10001
# The home is the working directory: relative defaults (.flwr, logs) land on its volume, not in the image.
WORKDIR /var/lib/twinledger/node
# The SuperNode only dials out; the portal (8800) and the console (8900) listen on the container's loopback
# behind a TLS proxy (deploy/docker/tls-proxy), so the probe runs inside the container. Each service sets
# TWINLEDGER_PROBE to its own port.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 CMD ["twinledger-probe"]
ENTRYPOINT ["twinledger-entrypoint"]
CMD ["twinledger", "node", "--help"]
