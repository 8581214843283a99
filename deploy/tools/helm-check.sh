#!/usr/bin/env bash
# helm-check.sh checks the Helm chart deploy/helm/ciss for every values file in
# its ci/ directory:
#   1. helm lint --strict                          (Helm, pinned, built by install-helm.sh)
#   2. helm template, then kubeconform -strict      (against the Kubernetes $KUBERNETES_VERSION
#      OpenAPI schemas, generated offline by install-kubeconform.sh; unknown fields are errors)
#   3. go test ciss.dev/test/lint                   (strict decode into k8s.io/api types,
#      PodSecurity restricted, namespaced RBAC, Tekton Tasks validated with tektoncd/pipeline)
# Custom resources have no Kubernetes schema: Tasks are checked by step 3,
# the ServiceMonitor only by helm lint (prometheus-operator's CRD is not vendored).
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"
export KUBERNETES_VERSION="${KUBERNETES_VERSION:-v1.34.2}"
t0=$(date +%s)
helm="$(deploy/tools/install-helm.sh)"
kubeconform="$(deploy/tools/install-kubeconform.sh)"
schemas="$(dirname "$(dirname "$kubeconform")")/schemas"
echo "helm-check: tools ready in $(( $(date +%s) - t0 ))s ($("$helm" version --short), kubeconform $("$kubeconform" -v), Kubernetes $KUBERNETES_VERSION schemas)"
chart=deploy/helm/ciss
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
for values in "$chart"/ci/*.yaml; do
  name="$(basename "$values" .yaml)"
  "$helm" lint --strict --quiet "$chart" -f "$values" --kube-version "$KUBERNETES_VERSION"
  "$helm" template ciss "$chart" --namespace ciss -f "$values" --kube-version "$KUBERNETES_VERSION" > "$work/$name.yaml"
  echo -n "helm-check: $name: "
  "$kubeconform" -strict -summary -kubernetes-version "${KUBERNETES_VERSION#v}" \
    -schema-location "$schemas/{{ .NormalizedKubernetesVersion }}-standalone{{ .StrictSuffix }}/{{ .ResourceKind }}{{ .KindSuffix }}.json" \
    -skip Task,ServiceMonitor "$work/$name.yaml"
done
CISS_HELM="$helm" go test -count=1 ciss.dev/test/lint/...
echo "helm-check: ok in $(( $(date +%s) - t0 ))s"
