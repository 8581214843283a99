package workers_test

import (
	"context"
	"crypto"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/sigstore/cosign/v2/pkg/cosign"
	sigsig "github.com/sigstore/sigstore/pkg/signature"
	"github.com/stretchr/testify/require"

	"ciss.dev/schemas"
	"ciss.dev/workers"
)

const (
	cleanReport = `{"SchemaVersion":2,"Results":[{"Target":"x","Vulnerabilities":[{"VulnerabilityID":"CVE-2024-0003","Severity":"LOW"}]}]}`
	vulnReport  = `{"SchemaVersion":2,"Results":[{"Target":"x","Vulnerabilities":[{"VulnerabilityID":"CVE-2024-0001","Severity":"CRITICAL"},{"VulnerabilityID":"CVE-2024-0002","Severity":"HIGH"},{"VulnerabilityID":"CVE-2024-0003","Severity":"LOW"}]}]}`
)

// signingEnv is a worker with signing on, scanning images of an in-process
// registry with a fake tool that reports per image tag.
type signingEnv struct {
	*env
	reg    string
	pub    crypto.PublicKey
	pubPEM []byte
	images map[string]string // tag → digest ref
}

func setupSigning(t *testing.T, policy workers.Policy) *signingEnv {
	t.Helper()
	e := setup(t)
	srv := httptest.NewServer(registry.New())
	t.Cleanup(srv.Close)
	se := &signingEnv{env: e, reg: strings.TrimPrefix(srv.URL, "http://"), images: map[string]string{}}
	reports := map[string]string{}
	for tag, rep := range map[string]string{"clean": cleanReport, "vuln": vulnReport} {
		img, err := random.Image(256, 1)
		require.NoError(t, err)
		ref, err := name.NewTag(se.reg + "/team/app:" + tag)
		require.NoError(t, err)
		require.NoError(t, remote.Write(ref, img))
		d, _ := img.Digest()
		se.images[tag] = ref.Context().Digest(d.String()).String()
		reports[d.String()] = rep
	}
	keyDir := t.TempDir()
	keyPath, err := workers.GenerateDevKey(keyDir, []byte("pw"))
	require.NoError(t, err)
	se.pubPEM, err = os.ReadFile(filepath.Join(keyDir, "cosign.pub"))
	require.NoError(t, err)
	keys, err := schemas.ParsePublicKeys(se.pubPEM)
	require.NoError(t, err)
	se.pub = keys[0]
	tool := &fakeTool{run: func(_ context.Context, in workers.Input, dir string, _ int) (workers.Output, error) {
		p := filepath.Join(dir, "report.json")
		if err := os.WriteFile(p, []byte(reports[in.ImageDigest]), 0o600); err != nil {
			return workers.Output{}, err
		}
		return workers.Output{Reports: []workers.OutputFile{{Format: schemas.FormatNative, MediaType: schemas.MediaTypeJSON, Path: p}}}, nil
	}}
	e.startWorker(t, tool, func(c *workers.Config) {
		c.Resolver = workers.RegistryResolver{}
		c.Signing = &workers.SigningConfig{Key: keyPath, Password: []byte("pw"), Policy: policy}
	})
	return se
}

func (se *signingEnv) scan(t *testing.T, tag string) schemas.TaskResult {
	t.Helper()
	task := se.newTask(t, schemas.StatusQueued)
	task.Target.Image = se.reg + "/team/app:" + tag
	se.publishTask(t, task)
	r, _ := se.result(t, task.ID)
	require.Equal(t, schemas.OutcomeSucceeded, r.Outcome, "%+v", r.Error)
	return r
}

func (se *signingEnv) cosignVerify(t *testing.T, ref string) error {
	t.Helper()
	v, err := sigsig.LoadVerifier(se.pub, crypto.SHA256)
	require.NoError(t, err)
	d, err := name.NewDigest(ref)
	require.NoError(t, err)
	co := &cosign.CheckOpts{SigVerifier: v, IgnoreTlog: true, IgnoreSCT: true}
	if _, _, err := cosign.VerifyImageSignatures(t.Context(), d, co); err != nil {
		return err
	}
	_, _, err = cosign.VerifyImageAttestations(t.Context(), d, co)
	return err
}

func TestSigningPassingImageIsSignedAndResultVerifies(t *testing.T) {
	t.Parallel()
	se := setupSigning(t, workers.Policy{})
	r := se.scan(t, "clean")
	res := r.Result
	require.NotNil(t, res.Policy)
	require.True(t, res.Policy.Passed, res.Policy.Reason)
	require.Equal(t, "HIGH", res.Policy.Threshold)
	require.NotNil(t, res.ImageSignature)
	require.Equal(t, []string{schemas.PredicateTypeVuln}, res.ImageSignature.PredicateTypes)
	require.NoError(t, se.cosignVerify(t, se.images["clean"]))

	// The result event verifies with the public key alone, and its report
	// bytes match the signed digests.
	require.NoError(t, schemas.VerifyTaskResult(&r, se.pub))
	rep := res.Reports[0]
	b, err := se.reports.GetBytes(t.Context(), rep.Object)
	require.NoError(t, err)
	require.NoError(t, schemas.VerifyReport(rep, b))
	require.Error(t, schemas.VerifyReport(rep, append(b, ' ')), "changed report bytes")

	for name, tamper := range map[string]func(*schemas.TaskResult){
		"summary":       func(r *schemas.TaskResult) { r.Result.Summary.Critical = 0; r.Result.Summary.High = 7 },
		"report digest": func(r *schemas.TaskResult) { r.Result.Reports[0].Digest = "sha256:" + strings.Repeat("0", 64) },
		"policy":        func(r *schemas.TaskResult) { r.Result.Policy.Threshold = "CRITICAL" },
		"image digest":  func(r *schemas.TaskResult) { r.Result.ImageDigest = "sha256:" + strings.Repeat("1", 64) },
		"job":           func(r *schemas.TaskResult) { r.JobID = newJobID() },
		"report added": func(r *schemas.TaskResult) {
			r.Result.Reports = append(r.Result.Reports, r.Result.Reports[0])
		},
	} {
		t.Run(name, func(t *testing.T) {
			c := r
			cr := *r.Result
			cr.Reports = append([]schemas.Report(nil), r.Result.Reports...)
			p := *r.Result.Policy
			cr.Policy = &p
			c.Result = &cr
			tamper(&c)
			require.ErrorIs(t, schemas.VerifyTaskResult(&c, se.pub), schemas.ErrStatementMismatch)
		})
	}
	other, err := workers.GenerateDevKey(t.TempDir(), nil)
	require.NoError(t, err)
	otherPEM, _ := os.ReadFile(filepath.Join(filepath.Dir(other), "cosign.pub"))
	otherKeys, _ := schemas.ParsePublicKeys(otherPEM)
	require.ErrorIs(t, schemas.VerifyTaskResult(&r, otherKeys...), schemas.ErrBadSignature)
	unsigned := r
	ur := *r.Result
	ur.Signature = nil
	unsigned.Result = &ur
	require.ErrorIs(t, schemas.VerifyTaskResult(&unsigned, se.pub), schemas.ErrUnsigned)
}

func TestSigningFailingImageIsNotSigned(t *testing.T) {
	t.Parallel()
	se := setupSigning(t, workers.Policy{})
	r := se.scan(t, "vuln")
	res := r.Result
	require.NotNil(t, res.Policy)
	require.False(t, res.Policy.Passed)
	require.Equal(t, []string{"CVE-2024-0001", "CVE-2024-0002"}, res.Policy.Blocking)
	require.Contains(t, res.Policy.Reason, "not signed")
	require.Nil(t, res.ImageSignature)
	require.Error(t, se.cosignVerify(t, se.images["vuln"]), "a failing image must carry no signature")
	// The (failing) result itself is still signed.
	require.NoError(t, schemas.VerifyTaskResult(&r, se.pub))
}

func TestSigningAllowlistAndThresholdPerTenant(t *testing.T) {
	t.Parallel()
	se := setupSigning(t, workers.Policy{
		Default: workers.TenantPolicy{Threshold: "LOW"},
		Tenants: map[string]workers.TenantPolicy{
			"payments": {Threshold: "HIGH", Allow: []string{"CVE-2024-0001", "CVE-2024-0002"}},
		},
	})
	r := se.scan(t, "vuln") // newTask's tenant is "payments"
	require.True(t, r.Result.Policy.Passed, r.Result.Policy.Reason)
	require.NotNil(t, r.Result.ImageSignature)
	require.NoError(t, se.cosignVerify(t, se.images["vuln"]))
}

func TestPolicyFileAndEvaluation(t *testing.T) {
	t.Parallel()
	write := func(s string) string {
		p := filepath.Join(t.TempDir(), "policy.yaml")
		require.NoError(t, os.WriteFile(p, []byte(s), 0o600))
		return p
	}
	p, err := workers.LoadPolicy(write("version: 1\ndefault: {threshold: critical}\ntenants:\n  acme: {threshold: LOW, allow: [CVE-2024-0003]}\n"))
	require.NoError(t, err)
	d, err := p.EvaluateTrivy("acme", []byte(vulnReport))
	require.NoError(t, err)
	require.False(t, d.Passed)
	require.Equal(t, []string{"CVE-2024-0001", "CVE-2024-0002"}, d.Blocking)
	d, err = p.EvaluateTrivy("other", []byte(vulnReport))
	require.NoError(t, err)
	require.Equal(t, []string{"CVE-2024-0001"}, d.Blocking)

	for name, bad := range map[string]string{
		"unknown field": "version: 1\ndefault: {threshold: HIGH, sign: false}\n",
		"bad threshold": "version: 1\ndefault: {threshold: SEVERE}\n",
		"bad tenant":    "version: 1\ntenants:\n  'Acme Corp': {}\n",
		"no version":    "default: {}\n",
		"not yaml":      "{{{",
	} {
		_, err := workers.LoadPolicy(write(bad))
		require.Error(t, err, name)
	}
	_, err = workers.LoadPolicy(filepath.Join(t.TempDir(), "missing.yaml"))
	require.Error(t, err)
	for _, rep := range []string{"", "null x", `{"Results":"nope"}`} {
		_, err := p.EvaluateTrivy("acme", []byte(rep))
		require.Error(t, err, "an unreadable report fails closed: %q", rep)
	}
}

func FuzzPolicyEvaluateTrivy(f *testing.F) {
	f.Add([]byte(vulnReport))
	f.Add([]byte(cleanReport))
	f.Add([]byte(`{"Results":[{"Vulnerabilities":[{"VulnerabilityID":"","Severity":"weird"}]}]}`))
	p := workers.Policy{Tenants: map[string]workers.TenantPolicy{"t": {Allow: []string{"CVE-2024-0001"}}}}
	f.Fuzz(func(t *testing.T, b []byte) {
		d, err := p.EvaluateTrivy("t", b)
		if err != nil {
			return
		}
		if d.Passed != (len(d.Blocking) == 0) || len(d.Blocking) > 20 {
			t.Fatalf("inconsistent decision %+v", d)
		}
	})
}
