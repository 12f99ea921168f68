#!/bin/sh
# Entrypoint of the TwinLedger images: put the keys given as secrets into the component's home, then run the
# command. Keys are never baked into an image: they arrive at run time in $TWINLEDGER_KEYS_MOUNT (a Kubernetes
# Secret or a compose secret mounted there). They are copied, not linked, because the node refuses a key file
# that others may read (mode 0600 only) and mounted secrets are group-readable and owned by root.
set -eu
home="${TWINLEDGER_HOME:?TWINLEDGER_HOME must name the home directory}"
secrets="${TWINLEDGER_KEYS_MOUNT:-/run/secrets/twinledger}"
umask 077
mkdir -p "$home/keys"
chmod 700 "$home" "$home/keys"
if [ -d "$secrets" ]; then
  for file in "$secrets"/*; do
    [ -f "$file" ] || continue
    name=$(basename "$file")
    # Only key and token files; anything else in the directory (..data links of a Kubernetes Secret) is skipped.
    case "$name" in
      *.key|*.token|*.json|supernode_auth|supernode_auth.pub) ;;
      *) continue ;;
    esac
    install -m 600 "$file" "$home/keys/$name"
  done
fi
exec "$@"
