#!/usr/bin/env bash
# install-vault.sh builds the pinned Vault server from the Go module proxy into a cache
# outside the work tree, keyed by version, and prints the binary's path.
#
# There is no Vault package in Debian or npm, and `go install` needs the module's
# version list, which the proxy may refuse, so the binary is built inside a throwaway
# wrapper module (see /work/shared/NOTES.md). Concurrent runs are safe: each builds into
# its own temporary file and the last rename wins; the result is the same binary.
# Tests use `vault server -dev` on loopback (test/vaultdev).
set -euo pipefail
version="${VAULT_VERSION:-v1.21.4}"
cache="${CISS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/ciss}"
out="$cache/vault/$version/vault"
if [ -x "$out" ] && "$out" version >/dev/null 2>&1; then
  echo "$out"
  exit 0
fi
mkdir -p "$(dirname "$out")"
work="$(mktemp -d)"
tmp="$out.tmp.$$"
trap 'rm -rf "$work" "$tmp"' EXIT
cd "$work"
{
  go mod init ciss.dev/vault-build
  go get "github.com/hashicorp/vault@$version"
  CGO_ENABLED=0 go build -trimpath \
    -ldflags "-s -w -X github.com/hashicorp/vault/version.Version=${version#v} -X github.com/hashicorp/vault/version.VersionPrerelease=" \
    -o "$tmp" github.com/hashicorp/vault
} >&2
mv "$tmp" "$out"
echo "$out"
