#!/usr/bin/env bash
# Makes development keys and certificates for callgate (see certs/README.md):
#
#   dev-ca.pem, dev-ca.key            a development certificate authority
#   localhost.pem, localhost.key      a server certificate for localhost,
#                                     127.0.0.1 and ::1, signed by that CA
#   jwt-ed25519.key, jwt-ed25519.pub.pem
#                                     an Ed25519 key pair for auth.algorithm = "EdDSA"
#
# Usage: certs/make-dev-certs.sh [--force] [DIR]   (DIR defaults to this script's folder)
#
# An existing CA and Ed25519 key pair are kept (so a CA you already trust stays
# valid, and tokens signed with the key stay valid); the localhost certificate is
# issued afresh each run. --force replaces everything.
#
# For development only: the CA key sits unencrypted next to the certificates.
# Needs openssl (1.1.1 or later, or LibreSSL 3.7 or later).
set -euo pipefail

force=0
dir=""
for arg in "$@"; do
    case "$arg" in
        --force) force=1 ;;
        -h | --help)
            sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'
            exit 0
            ;;
        -*)
            echo "unknown option: $arg" >&2
            exit 2
            ;;
        *) dir="$arg" ;;
    esac
done
[ -n "$dir" ] || dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

command -v openssl >/dev/null || {
    echo "make-dev-certs.sh: openssl is not installed (Debian/Ubuntu: apt-get install openssl)" >&2
    exit 1
}

mkdir -p "$dir"
cd "$dir"
# Private keys are readable by their owner only.
umask 077

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

# --- development CA -------------------------------------------------------
if [ "$force" = 1 ] || [ ! -s dev-ca.pem ] || [ ! -s dev-ca.key ]; then
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out dev-ca.key
    cat >"$tmp/ca.cnf" <<'EOF'
[req]
distinguished_name = dn
prompt = no
x509_extensions = v3_ca
[dn]
CN = callgate development CA
O = callgate (development only)
[v3_ca]
basicConstraints = critical, CA:TRUE, pathlen:0
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
EOF
    openssl req -new -x509 -sha256 -days 3650 -key dev-ca.key -config "$tmp/ca.cnf" -out dev-ca.pem
    chmod 644 dev-ca.pem
    echo "made the development CA: $dir/dev-ca.pem (trust it in your browser or OS; see README.md)"
else
    echo "kept the development CA: $dir/dev-ca.pem"
fi

# --- localhost server certificate -------------------------------------------
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out localhost.key
cat >"$tmp/leaf.cnf" <<'EOF'
[req]
distinguished_name = dn
prompt = no
[dn]
CN = localhost
[v3_leaf]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = DNS:localhost, IP:127.0.0.1, IP:::1
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
EOF
openssl req -new -sha256 -key localhost.key -config "$tmp/leaf.cnf" -out "$tmp/localhost.csr"
# 397 days: the longest validity browsers accept for a server certificate.
openssl x509 -req -sha256 -days 397 -in "$tmp/localhost.csr" \
    -CA dev-ca.pem -CAkey dev-ca.key -set_serial "0x$(openssl rand -hex 16)" \
    -extfile "$tmp/leaf.cnf" -extensions v3_leaf -out localhost.pem 2>/dev/null
chmod 644 localhost.pem
openssl verify -CAfile dev-ca.pem localhost.pem >/dev/null
echo "made the localhost certificate: $dir/localhost.pem (key: $dir/localhost.key)"

# --- Ed25519 key pair for EdDSA tokens --------------------------------------
if [ "$force" = 1 ] || [ ! -s jwt-ed25519.key ] || [ ! -s jwt-ed25519.pub.pem ]; then
    openssl genpkey -algorithm ed25519 -out jwt-ed25519.key
    openssl pkey -in jwt-ed25519.key -pubout -out jwt-ed25519.pub.pem
    chmod 644 jwt-ed25519.pub.pem
    echo "made the Ed25519 token key pair: $dir/jwt-ed25519.key, $dir/jwt-ed25519.pub.pem"
else
    echo "kept the Ed25519 token key pair: $dir/jwt-ed25519.key"
fi

cat <<EOF

Serve HTTPS/WSS with:
  CALLGATE__SERVER__TLS__CERT_FILE=$dir/localhost.pem CALLGATE__SERVER__TLS__KEY_FILE=$dir/localhost.key
Sign tokens with Ed25519 with:
  CALLGATE__AUTH__ALGORITHM=EdDSA CALLGATE__AUTH__ED25519_PRIVATE_KEY_FILE=$dir/jwt-ed25519.key CALLGATE__AUTH__ED25519_PUBLIC_KEY_FILE=$dir/jwt-ed25519.pub.pem
Test: curl --cacert $dir/dev-ca.pem https://localhost:4000/healthz
EOF
