#!/bin/sh
# One-shot setup of a single-host consortium (deploy/compose.yaml), run by the operator's services before the
# others start, in two steps:
#   twinledger-operator-init certificates   the consortium CA, then the TLS certificates of the coordinator
#                                           (SuperLink, Fleet gateway), of the chain's TLS proxy and of the web
#                                           apps' proxies
#   twinledger-operator-init contracts      the contracts on the chain, reached over TLS (once)
# Safe to run again: the CA and the deployment are made once, the leaf certificates are re-issued on every run
# (30-day validity: `docker compose up` rotates them).
set -eu
operator="${TWINLEDGER_OPERATOR_DIR:-/var/lib/twinledger/operator}"   # CA key and operator key: the operator's only
public="${TWINLEDGER_PUBLIC_DIR:-/var/lib/twinledger/public}"         # deployment.json and ca/ca.pem: every party
superlink_tls="${TWINLEDGER_SUPERLINK_TLS_DIR:-/var/lib/twinledger/superlink/tls}"
web_tls="${TWINLEDGER_WEB_TLS_DIR:-/var/lib/twinledger/web-tls}"
gateway_name="${TWINLEDGER_GATEWAY_NAME:-coordinator}"
web_hosts="${TWINLEDGER_WEB_HOSTS:-}"                                   # e.g. "chain operator hospital-a"
umask 077

certificates() {
  if [ ! -f "${operator}/ca/ca.key" ]; then
    twinledger coordinator ca init --ca-dir "${operator}/ca"
  fi
  mkdir -p "${public}/ca"
  umask 022
  cp "${operator}/ca/ca.pem" "${public}/ca/ca.pem"
  umask 077
  # The SuperLink itself is dialled on the coordinator's loopback only; hospitals dial the gateway by name.
  twinledger coordinator ca issue-server superlink --ca-dir "${operator}/ca" --out "${superlink_tls}" \
    --dns localhost --ip 127.0.0.1
  twinledger coordinator ca issue-server fleet-gateway --ca-dir "${operator}/ca" --out "${superlink_tls}" \
    --dns "${gateway_name}" --dns localhost --ip 127.0.0.1
  for host in ${web_hosts}; do
    twinledger coordinator ca issue-server web --ca-dir "${operator}/ca" --out "${web_tls}/${host}" \
      --dns "${host}" --dns localhost --ip 127.0.0.1
  done
  echo "certificates issued by the CA ${public}/ca/ca.pem"
}

contracts() {
  if [ -f "${public}/deployment.json" ]; then
    echo "contracts already deployed: ${public}/deployment.json"
    return
  fi
  # The chain's TLS proxy may still be starting.
  address="${TWINLEDGER_RPC_URL#https://}"
  address="${address%%/*}"
  tries=0
  until twinledger-probe tcp "${address}" 2>/dev/null; do
    tries=$((tries + 1))
    if [ "${tries}" -ge 30 ]; then
      echo "the chain at ${TWINLEDGER_RPC_URL} does not answer" >&2
      exit 1
    fi
    sleep 2
  done
  umask 022
  # --plaintext-key: the one-host consortium's development operator key (docs/operations.md, Keys as secrets).
  twinledger chain deploy --operator-key "${operator}/operator.key" --fund-from-dev-account --plaintext-key \
    --out "${public}/deployment.json"
  echo "consortium deployed: ${public}/deployment.json"
}

case "${1:-}" in
  certificates) certificates ;;
  contracts) contracts ;;
  *)
    echo "usage: twinledger-operator-init certificates|contracts" >&2
    exit 2
    ;;
esac
