//go:build k8s

package k8s

import (
	"context"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
)

// HostPathClaim creates a read-only PersistentVolume over the host directory
// dir (the node is this host) and a claim bound to it in the default
// namespace, waits until they are bound and returns the claim's name. This is
// the test tier's stand-in for a production PVC holding worker data such as
// the Trivy DB.
func HostPathClaim(t testing.TB, c *Cluster, name, dir string) string {
	t.Helper()
	cfg, err := clientcmd.BuildConfigFromFlags("", c.Kubeconfig)
	if err != nil {
		t.Fatalf("k8s: %v", err)
	}
	kc, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatalf("k8s: %v", err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	size := resource.MustParse("1Gi")
	hostPathType := corev1.HostPathDirectory
	empty := ""
	_, err = kc.CoreV1().PersistentVolumes().Create(ctx, &corev1.PersistentVolume{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: corev1.PersistentVolumeSpec{
			Capacity:         corev1.ResourceList{corev1.ResourceStorage: size},
			AccessModes:      []corev1.PersistentVolumeAccessMode{corev1.ReadOnlyMany},
			StorageClassName: "",
			ClaimRef:         &corev1.ObjectReference{Namespace: corev1.NamespaceDefault, Name: name},
			PersistentVolumeSource: corev1.PersistentVolumeSource{
				HostPath: &corev1.HostPathVolumeSource{Path: dir, Type: &hostPathType},
			},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("k8s: %v", err)
	}
	_, err = kc.CoreV1().PersistentVolumeClaims(corev1.NamespaceDefault).Create(ctx, &corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: corev1.PersistentVolumeClaimSpec{
			AccessModes:      []corev1.PersistentVolumeAccessMode{corev1.ReadOnlyMany},
			StorageClassName: &empty,
			VolumeName:       name,
			Resources:        corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: size}},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("k8s: %v", err)
	}
	for {
		pvc, err := kc.CoreV1().PersistentVolumeClaims(corev1.NamespaceDefault).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			t.Fatalf("k8s: %v", err)
		}
		if pvc.Status.Phase == corev1.ClaimBound {
			return name
		}
		select {
		case <-ctx.Done():
			t.Fatalf("claim %s not bound: %s", name, pvc.Status.Phase)
		case <-time.After(200 * time.Millisecond):
		}
	}
}
