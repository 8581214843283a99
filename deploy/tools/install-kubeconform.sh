#!/usr/bin/env bash
# install-kubeconform.sh builds the pinned kubeconform from the Go module proxy and
# generates the Kubernetes JSON schemas it validates against, both into a cache
# keyed by version, and prints the binary's path. The schemas land next to it in
# schemas/<k8s version>-standalone-strict/ (kubeconform's own layout).
#
# kubeconform normally downloads its schemas; offline they are generated from the
# OpenAPI document that ships in the k8s.io/kubernetes module
# (api/openapi-spec/swagger.json) by test/cmd/ciss-k8s-schemas, the same way
# upstream's openapi2jsonschema does (refs inlined, strict: no unknown fields).
# Cold: ~1 minute; later calls return at once.
set -euo pipefail
version="${KUBECONFORM_VERSION:-v0.7.0}"
k8s="${KUBERNETES_VERSION:-v1.34.2}"
root="$(cd "$(dirname "$0")/../.." && pwd)"
cache="${CISS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/ciss}"
out="$cache/kubeconform/$version/kubeconform"
schemas="$cache/kubeconform/schemas/$k8s-standalone-strict"
if ! { [ -x "$out" ] && [ "$("$out" -v 2>/dev/null)" = "$version" ]; }; then
  mkdir -p "$(dirname "$out")"
  work="$(mktemp -d)"
  trap 'rm -rf "$work"' EXIT
  (
    cd "$work"
    go mod init ciss.dev/kubeconform-build
    go get "github.com/yannh/kubeconform/cmd/kubeconform@$version"
    CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=$version" -o "$out.tmp" github.com/yannh/kubeconform/cmd/kubeconform
  ) >&2
  mv "$out.tmp" "$out"
fi
if [ ! -f "$schemas/.complete" ]; then
  # Outside any module, so the workspace's go.work does not get in the way.
  dir=$(cd / && GOWORK=off GOFLAGS= go mod download -json "k8s.io/kubernetes@$k8s" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
  rm -rf "$schemas.tmp"
  (cd "$root" && go run ciss.dev/test/cmd/ciss-k8s-schemas -swagger "$dir/api/openapi-spec/swagger.json" -out "$schemas.tmp") >&2
  rm -rf "$schemas"
  mv "$schemas.tmp" "$schemas"
  touch "$schemas/.complete"
fi
echo "$out"
