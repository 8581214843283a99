#!/usr/bin/env bash
# install-trivy.sh builds the pinned Trivy CLI from the Go module proxy into a cache
# outside the work tree, keyed by version, and prints the binary's path.
#
# The module proxy refuses `go install github.com/aquasecurity/trivy/cmd/trivy@vX`
# (it asks for the version list), so the binary is built inside a throwaway wrapper
# module. Trivy needs GOEXPERIMENT=jsonv2 to compile. A cold build takes ~12 minutes;
# later calls return at once.
set -euo pipefail
version="${TRIVY_VERSION:-v0.69.0}"
cache="${CISS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/ciss}"
out="$cache/trivy/$version/trivy"
if [ -x "$out" ] && "$out" --version >/dev/null 2>&1; then
  echo "$out"
  exit 0
fi
mkdir -p "$(dirname "$out")"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cd "$work"
{
  go mod init ciss.dev/trivy-build
  go get "github.com/aquasecurity/trivy/cmd/trivy@$version"
  GOEXPERIMENT=jsonv2 CGO_ENABLED=0 go build -trimpath \
    -ldflags "-s -w -X github.com/aquasecurity/trivy/pkg/version/app.ver=${version#v}" \
    -o "$out.tmp" github.com/aquasecurity/trivy/cmd/trivy
} >&2
mv "$out.tmp" "$out"
echo "$out"
