package workers

import (
	"context"
	"errors"
	"fmt"

	"ciss.dev/workers/internal/runner"
	"ciss.dev/workers/internal/trivy"
)

// TrivyConfig configures the Trivy image scanner.
type TrivyConfig struct {
	// Binary is the trivy executable; the step image trivy.DefaultImage is mapped to it.
	Binary string
	// CacheDir holds the provisioned vulnerability DB (CacheDir/db/). Required.
	CacheDir string
	// Insecure allows registries with unverifiable TLS.
	Insecure bool
}

// NewTrivy returns the Trivy image-scan tool, run by the local runner.
func NewTrivy(cfg TrivyConfig) (Tool, error) {
	if cfg.Binary == "" {
		return nil, errors.New("workers: TrivyConfig.Binary is required")
	}
	t, err := trivy.New(trivy.Config{
		Runner:   &runner.Local{Images: map[string]string{"aquasec/trivy:*": cfg.Binary}},
		CacheDir: cfg.CacheDir,
		Insecure: cfg.Insecure,
	})
	if err != nil {
		return nil, err
	}
	return trivyTool{t}, nil
}

type trivyTool struct{ t *trivy.Tool }

var _ Tool = trivyTool{}

func (trivyTool) Name() string { return "trivy" }

func (tt trivyTool) Version(ctx context.Context) (ToolVersion, error) {
	v, err := tt.t.Version(ctx)
	return ToolVersion{Tool: v.Tool, Data: v.DB}, err
}

func (tt trivyTool) Run(ctx context.Context, in Input, dir string) (Output, error) {
	scan, err := tt.t.Scan(ctx, in.Image, dir, in.Timeout)
	switch {
	case errors.Is(err, trivy.ErrImageNotFound):
		return Output{}, fmt.Errorf("%w: %w: %w", ErrPermanent, ErrTargetNotFound, err)
	case errors.Is(err, runner.ErrTimeout):
		return Output{}, fmt.Errorf("%w: %w", ErrTimeout, err)
	case errors.Is(err, runner.ErrUnmappedImage):
		return Output{}, fmt.Errorf("%w: %w", ErrPermanent, err)
	case err != nil:
		return Output{}, err
	}
	out := Output{Summary: scan.Summary}
	for _, r := range scan.Reports {
		out.Reports = append(out.Reports, OutputFile{Format: r.Format, MediaType: r.MediaType, Path: r.Path})
	}
	return out, nil
}
