#!/usr/bin/env bash
# install-vault.sh builds the pinned Vault server from the Go module proxy into a cache
# outside the work tree, keyed by version, and prints the binary's path.
#
# There is no Vault package in Debian or npm, and `go install` needs the module's
# version list, which the proxy may refuse, so the binary is built inside a throwaway
# wrapper module (see /work/shared/NOTES.md). Concurrent runs are safe: each builds into
# its own temporary file and the last rename wins; the result is the same binary.
# Tests use `vault server -dev` on loopback (test/vaultdev).
#
# Vault's own go.mod replaces its sdk with the in-tree copy, which a wrapper
# module cannot see; it requires sdk v0.21.0, whose framework.ActivationFunc
# already has the 1.22 signature, so v1.21.4 does not compile against it. sdk
# v0.20.0 matches the 1.21 branch: pin it with a replace (VAULT_SDK_VERSION).
set -euo pipefail
version="${VAULT_VERSION:-v1.21.4}"
sdk_version="${VAULT_SDK_VERSION:-v0.20.0}"
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
  go mod edit -replace "github.com/hashicorp/vault/sdk=github.com/hashicorp/vault/sdk@$sdk_version"
  CGO_ENABLED=0 go build -mod=mod -trimpath \
    -ldflags "-s -w -X github.com/hashicorp/vault/version.Version=${version#v} -X github.com/hashicorp/vault/version.VersionPrerelease=" \
    -o "$tmp" github.com/hashicorp/vault
} >&2
mv "$tmp" "$out"
echo "$out"
