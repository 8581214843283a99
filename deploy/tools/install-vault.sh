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
# Vault's go.mod replaces github.com/hashicorp/vault/sdk with its in-tree copy,
# which is not published: a wrapper module gets the required sdk v0.21.0 instead.
# v1.21.4 needs two things of it: TryRecordObservationWithRequest (in v0.21.0,
# not in v0.20.0) and the 1.21 signature of framework.Backend.ActivationFunc
# (v0.21.0 already has 1.22's extra string argument; only Vault's identity store
# sets and calls it). So the build uses a copy of sdk v0.21.0 with that one
# field's signature set back, checked below; nothing else is changed.
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
trap 'chmod -R u+w "$work" 2>/dev/null; rm -rf "$work" "$tmp"' EXIT
cd "$work"
{
  go mod init ciss.dev/vault-build
  go get "github.com/hashicorp/vault@$version"
  sdk="$(go list -m -f '{{.Dir}}' github.com/hashicorp/vault/sdk)"
  cp -r "$sdk" sdk
  chmod -R u+w sdk
  old='ActivationFunc func(context.Context, *logical.Request, string) error'
  new='ActivationFunc func(context.Context, *logical.Request) error'
  grep -qF "$old" sdk/framework/backend.go
  sed -i "s|ActivationFunc func(context.Context, \*logical.Request, string) error|$new|" sdk/framework/backend.go
  grep -qF "$new" sdk/framework/backend.go
  go mod edit -replace github.com/hashicorp/vault/sdk=./sdk
  CGO_ENABLED=0 go build -mod=mod -trimpath \
    -ldflags "-s -w -X github.com/hashicorp/vault/version.Version=${version#v} -X github.com/hashicorp/vault/version.VersionPrerelease=" \
    -o "$tmp" github.com/hashicorp/vault
} >&2
mv "$tmp" "$out"
echo "$out"
