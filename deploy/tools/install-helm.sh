#!/usr/bin/env bash
# install-helm.sh builds the pinned Helm CLI from the Go module proxy into a cache
# outside the work tree, keyed by version, and prints the binary's path.
#
# Like install-trivy.sh it builds inside a throwaway wrapper module (no release
# download is reachable from CI). Warm module cache: ~1 minute; cold: ~3 minutes.
set -euo pipefail
version="${HELM_VERSION:-v3.19.2}"
cache="${CISS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/ciss}"
out="$cache/helm/$version/helm"
if [ -x "$out" ] && "$out" version --short >/dev/null 2>&1; then
  echo "$out"
  exit 0
fi
mkdir -p "$(dirname "$out")"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cd "$work"
{
  go mod init ciss.dev/helm-build
  go get "helm.sh/helm/v3/cmd/helm@$version"
  # The default Kubernetes version of lint and template is the client-go one
  # Helm is built with (v0.34 → 1.34), as upstream's Makefile sets it.
  k8s=$(go list -m -f '{{.Version}}' k8s.io/client-go | sed -E 's/^v0\.([0-9]+)\..*/\1/')
  CGO_ENABLED=0 go build -trimpath \
    -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=$version \
      -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=$k8s \
      -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=$k8s" \
    -o "$out.tmp" helm.sh/helm/v3/cmd/helm
} >&2
mv "$out.tmp" "$out"
echo "$out"
