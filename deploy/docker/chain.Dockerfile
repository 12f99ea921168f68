# syntax=docker/dockerfile:1
# The development chain: anvil from the npm lockfile (@foundry-rs/anvil-linux-amd64) run by the launcher,
# `twinledger chain start`, its state on a volume. For a single-host consortium or a test network only: anvil
# serves unlocked accounts and state-rewriting methods (anvil_setBalance, evm_revert, ...), so never expose it
# beyond the consortium's private network.
#
# anvil listens on the container's loopback only: a TLS proxy in its network namespace serves it (compose:
# chain-tls).
#
#   docker build -f deploy/docker/chain.Dockerfile -t twinledger-chain:0.1.0 .      (from the repository root)
ARG PYTHON_IMAGE=python:3.11-slim-bookworm
ARG NODE_IMAGE=node:20-bookworm-slim

# --- npm: the anvil binary from the lockfile ----------------------------------------------------------------------
FROM ${NODE_IMAGE} AS npm
WORKDIR /src
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund && npm cache clean --force

# --- build: the project's wheel (the launcher) in a virtual environment ---------------------------------------------
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

# --- run -------------------------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE}
RUN groupadd --system --gid 10001 twinledger \
    && useradd --system --uid 10001 --gid twinledger --home-dir /var/lib/anvil --shell /usr/sbin/nologin twinledger \
    && mkdir -p /var/lib/anvil \
    && chown twinledger:twinledger /var/lib/anvil
COPY --from=build /opt/twinledger /opt/twinledger
# On the PATH, where the launcher looks for it (contracts/devchain/anvil.py anvil_binary).
COPY --from=npm /src/node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil /usr/local/bin/anvil
ENV PATH=/opt/twinledger/bin:$PATH \
    HOME=/var/lib/anvil \
    PYTHONUNBUFFERED=1 \
    MPLCONFIGDIR=/tmp/matplotlib
USER 10001:10001
WORKDIR /var/lib/anvil
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=5 CMD ["twinledger-probe", "tcp", "127.0.0.1:8545"]
# The launcher, not bare anvil: anvil dumps its state in place (every --state-interval-s seconds and on exit), so
# a kill mid-dump would cut state.json short; the launcher's keeper copies each complete dump to
# state.json.kept and puts it back on the next start (docs/operations.md, "The development chain after a crash").
# It stops anvil cleanly on SIGTERM (docker stop); anvil's own log is anvil.log on the volume. The historical states stay in memory only (a dump of them
# grows with the square of the chain's length): a round pinned before a restart is run again.
CMD ["twinledger", "chain", "start", "--host", "127.0.0.1", "--port", "8545", \
     "--state", "/var/lib/anvil/state.json", "--state-interval-s", "1", "--log", "/var/lib/anvil/anvil.log"]
