# syntax=docker/dockerfile:1
# The coordinator: the Flower SuperLink behind its Fleet-only TLS gateway (`twinledger coordinator superlink`),
# the ServerApp (`twinledger coordinator run`) and the operator console (`twinledger console serve`); the
# operator's chain and CA commands run from it too (`twinledger chain deploy`, `study ...`, `coordinator ca ...`).
#
#   docker build -f deploy/docker/coordinator.Dockerfile -t twinledger-coordinator:0.1.0 .   (repository root)
#
# `twinledger chain deploy` deploys the compiled contracts the wheel ships (contracts/compiled.json, checked
# against the Solidity sources beside it): the image needs no Node.js, solc-js or compiler.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# --- build: the project's wheel and a virtual environment holding it ---------------------------------------------
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

# --- run ------------------------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE}
RUN groupadd --system --gid 10001 twinledger \
    && useradd --system --uid 10001 --gid twinledger --home-dir /var/lib/twinledger --shell /usr/sbin/nologin twinledger \
    && mkdir -p /var/lib/twinledger/coordinator /var/lib/twinledger/superlink /var/lib/twinledger/operator \
        /var/lib/twinledger/public /var/lib/twinledger/web-tls \
    && chown -R twinledger:twinledger /var/lib/twinledger \
    && chmod 700 /var/lib/twinledger/coordinator /var/lib/twinledger/superlink /var/lib/twinledger/operator
COPY --from=build /opt/twinledger /opt/twinledger
COPY --chmod=0755 deploy/docker/entrypoint.sh /usr/local/bin/twinledger-entrypoint
COPY --chmod=0755 deploy/docker/operator-init.sh /usr/local/bin/twinledger-operator-init
ENV PATH=/opt/twinledger/bin:$PATH \
    HOME=/var/lib/twinledger/coordinator \
    TWINLEDGER_HOME=/var/lib/twinledger/coordinator \
    TWINLEDGER_KEYS_MOUNT=/run/secrets/twinledger \
    TWINLEDGER_PROBE="tcp 127.0.0.1:9443" \
    PYTHONUNBUFFERED=1 \
    MPLCONFIGDIR=/tmp/matplotlib \
    FLWR_TELEMETRY_ENABLED=0 \
    FLWR_DISABLE_UPDATE_CHECK=1
USER 10001:10001
# The home is the working directory: relative defaults (.flwr, logs) land on its volume, not in the image.
WORKDIR /var/lib/twinledger/coordinator
# 9443: the Fleet gateway, the only port hospitals reach (TLS). The SuperLink's Control and Runtime APIs stay
# on the container's loopback (flwr 1.41 has no authentication on them).
EXPOSE 9443
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 CMD ["twinledger-probe"]
ENTRYPOINT ["twinledger-entrypoint"]
CMD ["twinledger", "coordinator", "--help"]
