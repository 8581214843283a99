#!/usr/bin/env bash
# install-gosec.sh builds the pinned gosec CLI (Go SAST) from the Go module proxy into a
# cache outside the work tree, keyed by version, and prints the binary's path.
#
# The sast job type runs it as a step of the deploy/tekton/sast.yaml Task. A cold build
# takes ~2 minutes (module download included); later calls return at once. Concurrent runs are safe: each
# builds in its own temporary directory and the result is renamed into place.
set -euo pipefail
version="${GOSEC_VERSION:-v2.22.8}"
cache="${CISS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/ciss}"
out="$cache/gosec/$version/gosec"
if [ -x "$out" ] && "$out" -version >/dev/null 2>&1; then
  echo "$out"
  exit 0
fi
mkdir -p "$(dirname "$out")"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
{
  GOBIN="$work/bin" CGO_ENABLED=0 go install -trimpath \
    -ldflags "-s -w -X main.Version=$version" \
    "github.com/securego/gosec/v2/cmd/gosec@$version"
} >&2
mv "$work/bin/gosec" "$out.tmp.$$"
mv "$out.tmp.$$" "$out"
echo "$out"
