# syntax=docker/dockerfile:1
# The development chain: anvil from the npm lockfile (@foundry-rs/anvil-linux-amd64), its state on a volume.
# For a single-host consortium or a test network only: anvil serves unlocked accounts and state-rewriting
# methods (anvil_setBalance, evm_revert, ...), so never expose it beyond the consortium's private network.
#
#   docker build -f deploy/docker/chain.Dockerfile -t twinledger-chain:0.1.0 .      (from the repository root)
ARG NODE_IMAGE=node:20-bookworm-slim

FROM ${NODE_IMAGE} AS npm
WORKDIR /src
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund && npm cache clean --force

FROM ${NODE_IMAGE}
RUN groupadd --system --gid 10001 twinledger \
    && useradd --system --uid 10001 --gid twinledger --home-dir /var/lib/anvil --shell /usr/sbin/nologin twinledger \
    && mkdir -p /var/lib/anvil \
    && chown twinledger:twinledger /var/lib/anvil
COPY --from=npm /src/node_modules/@foundry-rs/anvil-linux-amd64 /opt/anvil
USER 10001:10001
WORKDIR /var/lib/anvil
EXPOSE 8545
# eth_blockNumber over JSON-RPC with Node's own fetch (no curl in the image).
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=5 CMD ["node", "-e", "fetch('http://127.0.0.1:8545',{method:'POST',headers:{'content-type':'application/json'},body:JSON.stringify({jsonrpc:'2.0',id:1,method:'eth_blockNumber',params:[]})}).then(r=>r.json()).then(j=>process.exit(j.result?0:1),()=>process.exit(1))"]
# --state loads and dumps the chain (every 30 s and on exit); --preserve-historical-states keeps the old states
# that nodes read consent at (a round pins a block). Without them a restart loses every contract and consent.
ENTRYPOINT ["/opt/anvil/bin/anvil"]
CMD ["--host", "0.0.0.0", "--port", "8545", "--chain-id", "31337", "--accounts", "2", \
     "--state", "/var/lib/anvil/state.json", "--state-interval", "30", "--preserve-historical-states"]
