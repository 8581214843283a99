package gateway_test

import (
	"context"
	"encoding/json"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"ciss.dev/gateway"
	"ciss.dev/gateway/internal/certtest"
	"ciss.dev/schemas"
)

const testGuardrails = `version: 1
rules:
  - name: acme-approle
    tenants: [acme]
    roles: [submitter]
    actions: [vault-auth-onboard]
    names: ["ci-*"]
    auth_types: [approle]
    capabilities: [read, list]
    max_token_ttl: 1h
    max_secret_id_ttl: 24h
  - name: globex-policies
    tenants: [globex]
    roles: [admin]
    actions: [vault-policy-apply]
    names: ["*"]
    capabilities: [read, list]
    require_approval: true
`

const onboardOK = `{"type":"vault-auth-onboard","params":{"name":"ci-a","auth_type":"approle","token_ttl":"30m","secret_id_ttl":"1h"}}`

// withActions starts the gateway with guardrails and the audit stream.
func withActions(t *testing.T) (*env, string) {
	file := filepath.Join(t.TempDir(), "guardrails.yaml")
	writeFile(t, file, testGuardrails)
	e := setup(t, setupOpt{config: func(c *gateway.Config) { c.GuardrailsFile = file; c.ReloadInterval = 50 * time.Millisecond }})
	_, err := e.js.js.CreateStream(context.Background(), jetstream.StreamConfig{Name: schemas.StreamAudit, Subjects: []string{"ciss.audit.>"}})
	require.NoError(t, err)
	return e, file
}

func auditRecords(t *testing.T, e *env) []schemas.ActionAudit {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s, err := e.js.js.Stream(ctx, schemas.StreamAudit)
	require.NoError(t, err)
	info, err := s.Info(ctx)
	require.NoError(t, err)
	var out []schemas.ActionAudit
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		m, err := s.GetMsg(ctx, seq)
		require.NoError(t, err)
		var r schemas.ActionAudit
		require.NoError(t, json.Unmarshal(m.Data, &r))
		out = append(out, r)
	}
	return out
}

func TestGuardrailsAtSubmit(t *testing.T) {
	e, file := withActions(t)
	acme := e.client(e.acme())
	before := e.js.streamMsgs(t)
	j := acme.submit(onboardOK)
	require.Equal(t, schemas.StatusQueued, j.Status)
	require.Equal(t, before+1, e.js.streamMsgs(t), "an allowed action is queued")

	for _, tc := range []struct{ body, field string }{
		{`{"type":"vault-auth-onboard","params":{"name":"ci-a","auth_type":"approle","token_ttl":"2h","secret_id_ttl":"1h"}}`, "guardrail.acme-approle.max_token_ttl"},
		{`{"type":"vault-auth-onboard","params":{"name":"prod","auth_type":"approle","secret_id_ttl":"1h"}}`, "guardrail.acme-approle.names"},
		{`{"type":"vault-auth-onboard","params":{"name":"ci-a","auth_type":"approle","token_ttl":"30m"}}`, "guardrail.acme-approle.max_secret_id_ttl"},
		{`{"type":"vault-policy-apply","params":{"name":"x"}}`, "guardrail.default-deny"},
	} {
		p := acme.do(http.MethodPost, "/v1/jobs", tc.body).problem(t, http.StatusForbidden, "guardrail-denied")
		require.Equal(t, tc.field, p.InvalidParams[0].Field, p.Detail)
	}
	require.Equal(t, before+1, e.js.streamMsgs(t), "a refused action was queued")
	// Hostile parameters are refused by the parser (422), never evaluated.
	for _, body := range []string{
		`{"type":"vault-auth-onboard","params":{"name":"../../sys","auth_type":"approle"}}`,
		`{"type":"vault-policy-apply","params":{"name":"x","paths":"../other/*"}}`,
		`{"type":"vault-policy-apply","params":{"name":"x","paths":"{{identity.entity.name}}"}}`,
		`{"type":"vault-policy-apply","params":{"name":"x","capabilities":"sudo"}}`,
		`{"type":"vault-policy-apply","target":{"image":"r.example/a:1"},"params":{"name":"x"}}`,
	} {
		acme.do(http.MethodPost, "/v1/jobs", body).problem(t, http.StatusUnprocessableEntity, "invalid-request")
	}
	// A replayed request (same Idempotency-Key) is the same job, queued once.
	k1 := acme.submit(onboardOK, "Idempotency-Key", "onboard-1")
	k2 := acme.submit(onboardOK, "Idempotency-Key", "onboard-1")
	require.Equal(t, k1.ID, k2.ID)
	require.Equal(t, before+2, e.js.streamMsgs(t))
	// A reader has no rule.
	e.client(e.acmeReader()).do(http.MethodPost, "/v1/jobs", onboardOK).problem(t, http.StatusForbidden, "forbidden")

	recs := auditRecords(t, e)
	require.Len(t, recs, 7) // allowed, 4 denied, the replayed pair (allowed); the reader never reaches the guardrails
	require.Equal(t, "allowed", recs[5].Verdict)
	require.Equal(t, "allowed", recs[6].Verdict)
	recs = recs[:5]
	require.Equal(t, "allowed", recs[0].Verdict)
	require.Equal(t, acmeSPIFFE, recs[0].Identity)
	require.Equal(t, j.ID, recs[0].JobID)
	for _, r := range recs[1:] {
		require.Equal(t, "denied", r.Verdict)
		require.NotEmpty(t, r.Rule)
	}

	// Reloaded on change: the same request is now refused.
	writeFile(t, file, "version: 1\nrules: []\n")
	eventually(t, 10*time.Second, "guardrails reloaded", func() bool {
		r := acme.do(http.MethodPost, "/v1/jobs", onboardOK)
		return r.StatusCode == http.StatusForbidden
	})
}

func TestNoGuardrailsRefusesActions(t *testing.T) {
	e := setup(t)
	_, err := e.js.js.CreateStream(context.Background(), jetstream.StreamConfig{Name: schemas.StreamAudit, Subjects: []string{"ciss.audit.>"}})
	require.NoError(t, err)
	p := e.client(e.acme()).do(http.MethodPost, "/v1/jobs", onboardOK).problem(t, http.StatusForbidden, "guardrail-denied")
	require.Contains(t, p.Detail, "not enabled")
	require.Equal(t, "denied", auditRecords(t, e)[0].Verdict)
}

// TestUnauditedIsUndecided: without the audit stream no decision is answered.
func TestUnauditedIsUndecided(t *testing.T) {
	e := setup(t)
	e.client(e.acme()).do(http.MethodPost, "/v1/jobs", onboardOK).problem(t, http.StatusServiceUnavailable, "unavailable")
}

func TestApproval(t *testing.T) {
	e, _ := withActions(t)
	requester := e.client(e.globex())
	before := e.js.streamMsgs(t)
	j := requester.submit(`{"type":"vault-policy-apply","params":{"name":"readers"}}`)
	require.Equal(t, schemas.StatusPendingApproval, j.Status)
	require.Equal(t, before, e.js.streamMsgs(t), "a job pending approval was dispatched")

	requester.do(http.MethodPost, "/v1/jobs/"+j.ID+"/approve", "").problem(t, http.StatusForbidden, "self-approval")
	e.client(e.acme()).do(http.MethodPost, "/v1/jobs/"+j.ID+"/approve", "").problem(t, http.StatusForbidden, "forbidden")
	other := e.client(e.ca.Issue(t, certtest.Options{URIs: []string{"spiffe://ciss.dev/tenant/globex/lead"}}))
	r := other.do(http.MethodPost, "/v1/jobs/"+j.ID+"/approve", "")
	require.Equal(t, http.StatusAccepted, r.StatusCode, "%s", r.body)
	got := r.job()
	require.Equal(t, schemas.StatusQueued, got.Status)
	require.Equal(t, "spiffe://ciss.dev/tenant/globex/lead", got.ApprovedBy)
	require.Equal(t, before+1, e.js.streamMsgs(t))
	// Approving again re-publishes (deduplicated) while undispatched...
	r = other.do(http.MethodPost, "/v1/jobs/"+j.ID+"/approve", "")
	require.Equal(t, http.StatusAccepted, r.StatusCode, "%s", r.body)
	require.Equal(t, before+1, e.js.streamMsgs(t))
	// ...and is a conflict once it is running.
	e.js.setJob(t, "globex", j.ID, func(j *schemas.Job) { j.Status, j.Tool = schemas.StatusRunning, "vault" })
	other.do(http.MethodPost, "/v1/jobs/"+j.ID+"/approve", "").problem(t, http.StatusConflict, "not-pending-approval")

	var verdicts []string
	for _, rec := range auditRecords(t, e) {
		verdicts = append(verdicts, rec.Verdict)
	}
	require.Equal(t, []string{"pending-approval", "approved", "approved"}, verdicts)
}
