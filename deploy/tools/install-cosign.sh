#!/usr/bin/env bash
# install-cosign.sh builds the pinned cosign CLI from the Go module proxy into a cache
# outside the work tree, keyed by version, and prints the binary's path.
#
# Tests use this CLI as the independent verifier of what the workers sign with cosign
# as a library (`cosign verify --key`, `cosign verify-attestation`). A cold build takes
# ~6 minutes; later calls return at once. Concurrent runs are safe: each builds in its
# own temporary directory and the result is renamed into place.
set -euo pipefail
version="${COSIGN_VERSION:-v2.6.5}"
cache="${CISS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/ciss}"
out="$cache/cosign/$version/cosign"
if [ -x "$out" ] && "$out" version >/dev/null 2>&1; then
  echo "$out"
  exit 0
fi
mkdir -p "$(dirname "$out")"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
{
  GOBIN="$work/bin" CGO_ENABLED=0 go install -trimpath \
    -ldflags "-s -w -X sigs.k8s.io/release-utils/version.gitVersion=$version" \
    "github.com/sigstore/cosign/v2/cmd/cosign@$version"
} >&2
mv "$work/bin/cosign" "$out.tmp.$$"
mv "$out.tmp.$$" "$out"
echo "$out"
