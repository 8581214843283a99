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
# which on the 1.21 release branch carries backports and is not published: no sdk
# tag builds v1.21.4 (v0.20.0 lacks TryRecordObservationWithRequest, v0.24.0 lacks
# the PKI certificate counters; v0.21.0, which v1.21.4 requires, has 1.22's
# framework.Backend.ActivationFunc signature and the pre-fix
# keysutil.LockManager.RestorePolicy). So the build uses a copy of sdk v0.21.0
# with exactly those two backports applied: ActivationFunc's 1.21 signature (set
# and called only by Vault's identity store) and helper/keysutil/lock_manager.go
# from sdk v0.24.0 (RestorePolicy returns the restored name and checks the backup).
# Each patch is verified; nothing else is changed.
set -euo pipefail
version="${VAULT_VERSION:-v1.21.4}"
sdk_version="v0.21.0"
backport_sdk="v0.24.0"
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
  go get "github.com/hashicorp/vault@$version" "github.com/hashicorp/vault/sdk@$sdk_version"
  sdk="$(go list -m -f '{{.Dir}}' github.com/hashicorp/vault/sdk)"
  newer="$(go mod download -json "github.com/hashicorp/vault/sdk@$backport_sdk" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
  cp -r "$sdk" sdk
  chmod -R u+w sdk
  old='ActivationFunc func(context.Context, *logical.Request, string) error'
  new='ActivationFunc func(context.Context, *logical.Request) error'
  grep -qF "$old" sdk/framework/backend.go
  sed -i "s|ActivationFunc func(context.Context, \*logical.Request, string) error|$new|" sdk/framework/backend.go
  grep -qF "$new" sdk/framework/backend.go
  cp "$newer/helper/keysutil/lock_manager.go" sdk/helper/keysutil/lock_manager.go
  grep -qF 'force bool) (string, error)' sdk/helper/keysutil/lock_manager.go
  go mod edit -replace github.com/hashicorp/vault/sdk=./sdk
  CGO_ENABLED=0 go build -mod=mod -trimpath \
    -ldflags "-s -w -X github.com/hashicorp/vault/version.Version=${version#v} -X github.com/hashicorp/vault/version.VersionPrerelease=" \
    -o "$tmp" github.com/hashicorp/vault
} >&2
mv "$tmp" "$out"
echo "$out"
