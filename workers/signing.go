package workers

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"ciss.dev/schemas"
	"ciss.dev/workers/internal/sign"
)

// SigningConfig turns on signed outcomes: every succeeded task's result is
// signed (a DSSE envelope over an in-toto statement, schemas.ResultStatement),
// and an image-scan whose image passes the tenant's Policy gets a cosign
// signature and a vulnerability attestation in the image's registry.
//
// Signing happens in the worker after the tool's Task, not as a Task step:
// the key (a file or a Vault Transit handle) then never enters the tool's
// sandbox or a TaskRun's pod spec, the policy decision that gates signing is
// made by CISS code on the stored report, and one implementation serves every
// tool in the catalog.
type SigningConfig struct {
	// Key is a cosign private key file or hashivault://NAME. Required.
	Key string
	// Password decrypts a key file (cosign's COSIGN_PASSWORD).
	Password []byte
	// Policy decides which images are signed.
	Policy Policy
	// InsecureRegistries allows plain HTTP to every registry when writing
	// signatures (loopback registries always are).
	InsecureRegistries bool
}

// trivyURI names the scanner in vulnerability attestations.
const trivyURI = "https://github.com/aquasecurity/trivy"

// loadKey loads the signing key, if signing is configured.
func (w *Worker) loadKey(ctx context.Context) error {
	if w.cfg.Signing == nil {
		return nil
	}
	if w.cfg.Signing.Key == "" {
		return errors.New("workers: Config.Signing.Key: required")
	}
	k, err := sign.Load(ctx, w.cfg.Signing.Key, w.cfg.Signing.Password)
	if err != nil {
		return fmt.Errorf("workers: %w", err)
	}
	w.key = k
	w.log.Info("signing enabled", "key", k.ID, "ref", k.Ref)
	return nil
}

// vouch applies the tenant policy to an image-scan result and, when the
// image passes, signs it in its registry and attaches the scan as a cosign
// vuln attestation. Other job types pass through. A registry write failure
// is transient (the task is retried).
func (w *Worker) vouch(ctx context.Context, task schemas.Task, pinned string, ver ToolVersion, r *schemas.Result, started time.Time) error {
	r.Policy, r.ImageSignature, r.GitTag, r.Signature = nil, nil, nil, nil // never trust what a cache held
	if w.key == nil {
		return nil
	}
	switch task.Type {
	case schemas.JobTypeImageScan:
	case schemas.JobTypeSBOM:
		return w.attestSBOM(ctx, pinned, r)
	default:
		return nil
	}
	rep, ok := r.ReportFor(schemas.FormatNative)
	if !ok {
		return fmt.Errorf("%w: policy needs the tool's native report", ErrPermanent)
	}
	b, err := w.reports.GetBytes(ctx, rep.Object)
	if err != nil {
		return fmt.Errorf("read report for policy: %w", err)
	}
	if err := schemas.VerifyReport(rep, b); err != nil {
		return fmt.Errorf("%w: stored report: %w", ErrPermanent, err)
	}
	d, err := w.cfg.Signing.Policy.EvaluateTrivy(task.Tenant, b)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrPermanent, err)
	}
	r.Policy = &d
	if !d.Passed {
		w.met.policyFailed.Inc()
		return nil
	}
	t0 := time.Now()
	pred, err := sign.VulnPredicate(trivyURI, ver.Tool, ver.Data, json.RawMessage(b), started, time.Now())
	if err != nil {
		return err
	}
	is, err := sign.SignImage(ctx, w.key, pinned, []sign.Attestation{{PredicateType: schemas.PredicateTypeVuln, Predicate: pred}},
		sign.ImageOptions{Insecure: w.cfg.Signing.InsecureRegistries, Remote: []remote.Option{
			remote.WithAuthFromKeychain(authn.DefaultKeychain), remote.WithTransport(guardedTransport()),
		}})
	if err != nil {
		return err
	}
	w.met.signSeconds.WithLabelValues("image").Observe(time.Since(t0).Seconds())
	r.ImageSignature = is
	return nil
}

// attestSBOM attaches a job's CycloneDX SBOM to the image as a cosign
// `cyclonedx` attestation. The image itself is not signed: an SBOM says what
// is in an image, not that it passed a policy.
func (w *Worker) attestSBOM(ctx context.Context, pinned string, r *schemas.Result) error {
	rep, ok := r.ReportFor(schemas.FormatCycloneDX)
	if !ok {
		return fmt.Errorf("%w: sbom job without a cyclonedx report", ErrPermanent)
	}
	b, err := w.reports.GetBytes(ctx, rep.Object)
	if err != nil {
		return fmt.Errorf("read sbom: %w", err)
	}
	if err := schemas.VerifyReport(rep, b); err != nil {
		return fmt.Errorf("%w: stored sbom: %w", ErrPermanent, err)
	}
	t0 := time.Now()
	is, err := sign.SignImage(ctx, w.key, pinned, []sign.Attestation{{PredicateType: schemas.PredicateTypeCycloneDX, Predicate: b}},
		sign.ImageOptions{AttestOnly: true, Insecure: w.cfg.Signing.InsecureRegistries, Remote: []remote.Option{
			remote.WithAuthFromKeychain(authn.DefaultKeychain), remote.WithTransport(guardedTransport()),
		}})
	if err != nil {
		return err
	}
	w.met.signSeconds.WithLabelValues("image").Observe(time.Since(t0).Seconds())
	r.ImageSignature = is
	return nil
}

// signResult signs res's result document in place.
func (w *Worker) signResult(ctx context.Context, res *schemas.TaskResult) error {
	if w.key == nil || res.Result == nil {
		return nil
	}
	t0 := time.Now()
	res.Result.Signature = nil
	st, err := schemas.ResultStatement(res)
	if err != nil {
		return err
	}
	b, err := json.Marshal(st)
	if err != nil {
		return err
	}
	env, err := w.key.Envelope(ctx, schemas.PayloadTypeInToto, b)
	if err != nil {
		return err
	}
	res.Result.Signature = env
	w.met.signSeconds.WithLabelValues("result").Observe(time.Since(t0).Seconds())
	return nil
}

// GenerateDevKey writes a cosign key pair into dir (cosign.key, cosign.pub)
// unless one is there, and returns the private key's path. `make run` uses it
// for the dev default key.
func GenerateDevKey(dir string, password []byte) (string, error) {
	return sign.GenerateFiles(dir, password)
}
