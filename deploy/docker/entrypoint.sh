#!/bin/sh
# Entrypoint of the TwinLedger images: put the keys given as secrets into the component's home, then run the
# command. Keys are never baked into an image: they arrive at run time in $TWINLEDGER_KEYS_MOUNT (a Kubernetes
# Secret or a compose secret mounted there). They are copied, not linked, because the node refuses a key file
# that others may read (mode 0600 only) and mounted secrets are group-readable and owned by root. Without a
# mount the home is left alone (the init commands make the keys in it).
set -eu
home="${TWINLEDGER_HOME:?TWINLEDGER_HOME must name the home directory}"
mounted="${TWINLEDGER_KEYS_MOUNT:-/run/secrets/twinledger}"
umask 077
if [ -d "${mounted}" ]; then
  mkdir -p "${home}/keys"
  chmod 700 "${home}" "${home}/keys"
  for file in "${mounted}"/*; do
    [ -f "${file}" ] || continue
    name=$(basename "${file}")
    # Only key and token files; anything else in the directory (..data links of a Kubernetes Secret) is skipped.
    case "${name}" in
      *.key|*.token|*.json|supernode_auth|supernode_auth.pub) ;;
      *) continue ;;
    esac
    target="${home}/keys/${name}"
    # The containers of one pod start with the same mount: the first copies, the others find the same bytes.
    # A copy lands under a temporary name and is renamed, so no process ever reads half a key.
    if [ -f "${target}" ] && cmp -s "${file}" "${target}"; then
      continue
    fi
    install -m 600 "${file}" "${target}.tmp.$$"
    mv -f "${target}.tmp.$$" "${target}"
  done
fi
exec "$@"
