package workers

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/tektoncd/pipeline/pkg/client/clientset/versioned"

	"ciss.dev/workers/internal/tekton"
)

// ClusterConfig configures the cluster backend: tools run as Tekton TaskRuns
// in one namespace of a Kubernetes cluster with Tekton Pipelines.
type ClusterConfig struct {
	// Kubeconfig is a kubeconfig file; empty means in-cluster config (the
	// pod's service account).
	Kubeconfig string
	// Namespace holds the TaskRuns. Required.
	Namespace string
	// Claims maps the data names manifests bind with `from:` (trivy-db) to
	// PersistentVolumeClaims in Namespace holding that data.
	Claims map[string]string
	// HelperImage runs the step that uploads reports: sh plus a
	// busybox-compatible wget. Required.
	HelperImage string
	// UploadAddr is where the worker listens for report uploads
	// (host:port; port 0 picks one). Required.
	UploadAddr string
	// UploadURL is that listener as pods reach it (http://host:port); default
	// http://UploadAddr.
	UploadURL string
	// MaxReportBytes bounds one uploaded report; default 64 MiB.
	MaxReportBytes int64
	// CollectAge: finished CISS TaskRuns older than this are deleted at
	// start-up (what a crashed worker left); default 10m.
	CollectAge time.Duration
	// Worker names this instance in TaskRun annotations.
	Worker string
	// Logger defaults to slog.Default().
	Logger *slog.Logger
}

// ClusterBackend runs Tasks as TaskRuns. Pass it in CatalogConfig.Cluster;
// Close it after the worker stopped.
type ClusterBackend struct {
	backend *tekton.Cluster
	claims  map[string]string
	srv     *http.Server
	ln      net.Listener
}

// OpenCluster connects to the cluster, starts the report upload listener and
// deletes finished TaskRuns left behind by earlier workers.
func OpenCluster(ctx context.Context, cfg ClusterConfig) (*ClusterBackend, error) {
	switch {
	case cfg.Namespace == "":
		return nil, errors.New("workers: cluster: Namespace is required")
	case cfg.HelperImage == "":
		return nil, errors.New("workers: cluster: HelperImage is required")
	case cfg.UploadAddr == "":
		return nil, errors.New("workers: cluster: UploadAddr is required")
	}
	log := cmp.Or(cfg.Logger, slog.Default())
	rc, err := tekton.RestConfig(cfg.Kubeconfig)
	if err != nil {
		return nil, fmt.Errorf("workers: cluster: %w", err)
	}
	client, err := versioned.NewForConfig(rc)
	if err != nil {
		return nil, fmt.Errorf("workers: cluster: %w", err)
	}
	ln, err := net.Listen("tcp", cfg.UploadAddr)
	if err != nil {
		return nil, fmt.Errorf("workers: cluster: upload listener: %w", err)
	}
	uploads := &tekton.Uploads{MaxBytes: cfg.MaxReportBytes}
	url := cmp.Or(cfg.UploadURL, "http://"+ln.Addr().String())
	b, err := tekton.NewCluster(tekton.ClusterConfig{
		Client: client, Namespace: cfg.Namespace, Claims: cfg.Claims, HelperImage: cfg.HelperImage,
		Uploads: uploads, UploadURL: url, Worker: cfg.Worker, Logger: log,
	})
	if err != nil {
		_ = ln.Close()
		return nil, fmt.Errorf("workers: cluster: %w", err)
	}
	cb := &ClusterBackend{backend: b, claims: cfg.Claims, ln: ln,
		srv: &http.Server{Handler: uploads, ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 5 * time.Minute}}
	go func() { _ = cb.srv.Serve(ln) }()
	n, err := b.Collect(ctx, cmp.Or(cfg.CollectAge, 10*time.Minute))
	if err != nil {
		_ = cb.Close()
		return nil, fmt.Errorf("workers: cluster: %w", err)
	}
	log.Info("cluster backend ready", "namespace", cfg.Namespace, "upload_url", url, "collected_taskruns", n)
	return cb, nil
}

// UploadAddr is the address the upload listener is bound to.
func (c *ClusterBackend) UploadAddr() string { return c.ln.Addr().String() }

// Close stops the upload listener.
func (c *ClusterBackend) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return c.srv.Shutdown(ctx)
}
