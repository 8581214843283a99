package lint

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"

	"github.com/stretchr/testify/require"
	pipelinev1 "github.com/tektoncd/pipeline/pkg/apis/pipeline/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	kyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"

	"ciss.dev/test/stack"
)

// render runs `helm template` on the chart with a values file from ci/.
func render(t *testing.T, values string) [][]byte {
	t.Helper()
	helm := os.Getenv("CISS_HELM")
	if helm == "" {
		t.Skip("CISS_HELM is not set: run `make helm-check` (it builds Helm with deploy/tools/install-helm.sh)")
	}
	root, err := stack.RepoRoot()
	require.NoError(t, err)
	chart := filepath.Join(root, "deploy", "helm", "ciss")
	out, err := exec.Command(helm, "template", "ciss", chart, "--namespace", "ciss", "-f", filepath.Join(chart, "ci", values)).Output()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		t.Fatalf("helm template: %v\n%s", err, ee.Stderr)
	}
	require.NoError(t, err)
	r := kyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(out)))
	var docs [][]byte
	for {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			return docs
		}
		require.NoError(t, err)
		if len(bytes.TrimSpace(bytes.TrimPrefix(bytes.TrimSpace(doc), []byte("---")))) > 0 {
			docs = append(docs, doc)
		}
	}
}

// restricted checks a pod template against the PodSecurity "restricted"
// profile (pod-security.kubernetes.io/enforce=restricted), rule by rule.
func restricted(t *testing.T, name string, spec corev1.PodSpec) {
	t.Helper()
	psc := spec.SecurityContext
	require.NotNil(t, psc, name)
	require.False(t, spec.HostNetwork || spec.HostPID || spec.HostIPC, "%s: host namespaces", name)
	require.NotNil(t, psc.SeccompProfile, "%s: seccompProfile", name)
	require.Contains(t, []corev1.SeccompProfileType{corev1.SeccompProfileTypeRuntimeDefault, corev1.SeccompProfileTypeLocalhost}, psc.SeccompProfile.Type, name)
	for _, v := range spec.Volumes {
		ok := v.ConfigMap != nil || v.Secret != nil || v.EmptyDir != nil || v.PersistentVolumeClaim != nil ||
			v.Projected != nil || v.DownwardAPI != nil || v.CSI != nil || v.Ephemeral != nil
		require.True(t, ok, "%s: volume %s is of a type restricted forbids", name, v.Name)
	}
	for _, c := range append(slices.Clone(spec.InitContainers), spec.Containers...) {
		sc := c.SecurityContext
		require.NotNil(t, sc, "%s/%s", name, c.Name)
		require.True(t, (sc.RunAsNonRoot != nil && *sc.RunAsNonRoot) || (psc.RunAsNonRoot != nil && *psc.RunAsNonRoot), "%s/%s: runAsNonRoot", name, c.Name)
		require.True(t, sc.RunAsUser == nil || *sc.RunAsUser != 0, "%s/%s: runAsUser 0", name, c.Name)
		require.True(t, psc.RunAsUser == nil || *psc.RunAsUser != 0, "%s: runAsUser 0", name)
		require.NotNil(t, sc.AllowPrivilegeEscalation, "%s/%s", name, c.Name)
		require.False(t, *sc.AllowPrivilegeEscalation, "%s/%s: allowPrivilegeEscalation", name, c.Name)
		require.True(t, sc.Privileged == nil || !*sc.Privileged, "%s/%s: privileged", name, c.Name)
		require.NotNil(t, sc.Capabilities, "%s/%s", name, c.Name)
		require.Contains(t, sc.Capabilities.Drop, corev1.Capability("ALL"), "%s/%s: drop ALL", name, c.Name)
		for _, add := range sc.Capabilities.Add {
			require.Equal(t, corev1.Capability("NET_BIND_SERVICE"), add, "%s/%s", name, c.Name)
		}
		for _, p := range c.Ports {
			require.Zero(t, p.HostPort, "%s/%s: hostPort", name, c.Name)
		}
		require.NotNil(t, c.ReadinessProbe, "%s/%s: readiness probe", name, c.Name)
		require.NotNil(t, c.Resources.Requests, "%s/%s: resource requests", name, c.Name)
	}
}

// TestChartRendersRestricted renders the chart with each CI values file and
// checks, beyond kubeconform's schema validation (make helm-check): every
// workload decodes strictly into the real k8s.io/api types and meets the
// PodSecurity restricted profile, the worker's RBAC is a namespaced Role,
// the Tekton Tasks validate, and the gateway Service is plain TCP.
func TestChartRendersRestricted(t *testing.T) {
	t.Parallel()
	for _, values := range []string{"default-values.yaml", "full-values.yaml"} {
		t.Run(values, func(t *testing.T) {
			kinds := map[string]int{}
			for _, doc := range render(t, values) {
				var meta struct {
					Kind     string `json:"kind"`
					Metadata struct {
						Name string `json:"name"`
					} `json:"metadata"`
				}
				require.NoError(t, yaml.Unmarshal(doc, &meta))
				kinds[meta.Kind]++
				name := meta.Kind + "/" + meta.Metadata.Name
				switch meta.Kind {
				case "Deployment":
					var d appsv1.Deployment
					require.NoError(t, yaml.UnmarshalStrict(doc, &d), name)
					restricted(t, name, d.Spec.Template.Spec)
				case "StatefulSet":
					var s appsv1.StatefulSet
					require.NoError(t, yaml.UnmarshalStrict(doc, &s), name)
					restricted(t, name, s.Spec.Template.Spec)
				case "ClusterRole", "ClusterRoleBinding":
					t.Fatalf("%s: the chart must not grant cluster-wide permissions", name)
				case "Role":
					var r rbacv1.Role
					require.NoError(t, yaml.UnmarshalStrict(doc, &r), name)
					for _, rule := range r.Rules {
						require.NotContains(t, rule.Verbs, "*", name)
						require.NotContains(t, rule.Resources, "*", name)
					}
				case "Service":
					var s corev1.Service
					require.NoError(t, yaml.UnmarshalStrict(doc, &s), name)
					for _, p := range s.Spec.Ports {
						require.Contains(t, []corev1.Protocol{"", corev1.ProtocolTCP}, p.Protocol, name) // "" defaults to TCP
					}
				case "Task":
					var task pipelinev1.Task
					require.NoError(t, yaml.UnmarshalStrict(doc, &task), name)
					task.SetDefaults(context.Background())
					if ferr := task.Validate(context.Background()); ferr != nil {
						t.Fatalf("%s: %v", name, ferr)
					}
					sc := task.Spec.StepTemplate.SecurityContext
					require.NotNil(t, sc, "%s: steps need a restricted securityContext", name)
					require.True(t, *sc.RunAsNonRoot, name)
					require.False(t, *sc.AllowPrivilegeEscalation, name)
					require.Contains(t, sc.Capabilities.Drop, corev1.Capability("ALL"), name)
					require.Equal(t, corev1.SeccompProfileTypeRuntimeDefault, sc.SeccompProfile.Type, name)
				}
			}
			require.Equal(t, 3, kinds["Deployment"], "gateway, dispatcher, worker")
			require.NotZero(t, kinds["NetworkPolicy"])
			if values == "full-values.yaml" {
				require.Equal(t, 5, kinds["Task"], "the catalog's image-scan, sbom, sast and their version Tasks")
				require.Equal(t, 1, kinds["Role"])
				require.Equal(t, 1, kinds["ServiceMonitor"])
				require.Zero(t, kinds["StatefulSet"], "external NATS: no bundled StatefulSet")
			} else {
				require.Equal(t, 1, kinds["StatefulSet"], "the bundled NATS")
				require.Zero(t, kinds["Task"])
			}
		})
	}
}
