package schemas

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"reflect"
	"strconv"
)

// Signing: what a worker signs and how anyone verifies it with the standard
// library alone. A consumer of the event stream (or of GET /v1/jobs/{id})
// verifies a result with VerifyTaskResult and the public keys of GET /v1/keys.

// DSSE and in-toto constants.
const (
	// PayloadTypeInToto is the DSSE payload type of in-toto statements.
	PayloadTypeInToto = "application/vnd.in-toto+json"
	// StatementTypeV01 is the in-toto statement type CISS writes (the one
	// cosign reads).
	StatementTypeV01 = "https://in-toto.io/Statement/v0.1"
	// PredicateTypeResult is the predicate type of a signed CISS result.
	PredicateTypeResult = "https://ciss.dev/attestation/result/v1"
	// PredicateTypeVuln is cosign's vulnerability-scan predicate type, used
	// for the attestation attached to a passing image.
	PredicateTypeVuln = "https://cosign.sigstore.dev/attestation/vuln/v1"
	// PredicateTypeCycloneDX is the predicate type of a CycloneDX SBOM
	// attestation (`cosign verify-attestation --type cyclonedx`).
	PredicateTypeCycloneDX = "https://cyclonedx.org/bom"
	// EnvelopeMediaType is the media type of a DSSE envelope.
	EnvelopeMediaType = "application/vnd.dsse.envelope.v1+json"
)

// Envelope is a DSSE envelope (github.com/secure-systems-lab/dsse): a typed
// payload and signatures over its pre-authentication encoding (PAE).
type Envelope struct {
	PayloadType string `json:"payloadType"`
	// Payload is the base64 (standard) encoding of the signed bytes.
	Payload    string              `json:"payload"`
	Signatures []EnvelopeSignature `json:"signatures"`
}

// EnvelopeSignature is one DSSE signature.
type EnvelopeSignature struct {
	// KeyID names the key, as GET /v1/keys lists it; may be empty.
	KeyID string `json:"keyid"`
	// Sig is the base64 signature over PAE(payloadType, payload).
	Sig string `json:"sig"`
}

// Statement is an in-toto v0.1 statement with a raw predicate.
type Statement struct {
	Type          string          `json:"_type"`
	PredicateType string          `json:"predicateType"`
	Subject       []Subject       `json:"subject"`
	Predicate     json.RawMessage `json:"predicate"`
}

// Subject is an in-toto subject: a name and its digests ("sha256" → hex).
type Subject struct {
	Name   string            `json:"name"`
	Digest map[string]string `json:"digest"`
}

// ResultPredicate is what a worker vouches for in a signed result: who ran
// which tool on what, what it found, the policy decision and what it signed
// in the registry. The reports are the statement's subjects.
type ResultPredicate struct {
	TaskID         string          `json:"task_id"`
	JobID          string          `json:"job_id"`
	Tenant         string          `json:"tenant"`
	Tool           string          `json:"tool"`
	ToolVersion    string          `json:"tool_version,omitempty"`
	Worker         string          `json:"worker"`
	ImageDigest    string          `json:"image_digest,omitempty"`
	DBVersion      string          `json:"db_version,omitempty"`
	Summary        Summary         `json:"summary"`
	Policy         *PolicyDecision `json:"policy,omitempty"`
	ImageSignature *ImageSignature `json:"image_signature,omitempty"`
	GitTag         *GitTag         `json:"git_tag,omitempty"`
}

// GitTag says which SSH-signed annotated tag vouches for a sast commit.
type GitTag struct {
	// Name is the tag's name, e.g. "ciss/sast/0123456789ab".
	Name string `json:"name"`
	// Object is the tag object's id; Commit the commit it points at.
	Object string `json:"object"`
	Commit string `json:"commit"`
	// Repo is the repository the tag was pushed to.
	Repo string `json:"repo"`
	// KeyID is the SSH signing key's fingerprint (SHA256:…).
	KeyID string `json:"key_id"`
	// Existing is true when the same tag was already there (a re-run).
	Existing bool `json:"existing,omitempty"`
}

// PolicyDecision is the tenant policy's verdict on a result.
type PolicyDecision struct {
	// Passed is true when no finding at or above Threshold remains after the
	// allowlist.
	Passed bool `json:"passed"`
	// Threshold is the lowest severity that fails (CRITICAL, HIGH, MEDIUM, LOW).
	Threshold string `json:"threshold"`
	// Reason says why the result failed (or "no findings at or above …").
	Reason string `json:"reason"`
	// Blocking lists the finding ids that failed the policy (at most 20).
	Blocking []string `json:"blocking,omitempty"`
}

// ImageSignature says where the cosign signature and attestations of a
// passing image were written.
type ImageSignature struct {
	// Signature is the signature image reference (repo:sha256-<hex>.sig);
	// empty when only attestations were attached (SBOM jobs).
	Signature string `json:"signature,omitempty"`
	// Attestations is the attestation image reference (repo:sha256-<hex>.att).
	Attestations string `json:"attestations,omitempty"`
	// PredicateTypes are the attestations attached by this job.
	PredicateTypes []string `json:"predicate_types,omitempty"`
	// KeyID names the signing key, as GET /v1/keys lists it.
	KeyID string `json:"key_id"`
}

// PublicKey is one entry of GET /v1/keys.
type PublicKey struct {
	// ID is the key id used in envelopes (KeyIDOf the PEM).
	ID string `json:"id"`
	// PEM is the PKIX public key ("PUBLIC KEY" block), what `cosign verify --key` takes.
	PEM string `json:"pem"`
}

// Keys is the body of GET /v1/keys: what a verifier needs.
type Keys struct {
	// Keys are the result and image signing keys.
	Keys []PublicKey `json:"keys"`
	// AllowedSigners is an ssh allowed-signers file for `git verify-tag`, if configured.
	AllowedSigners string `json:"allowed_signers,omitempty"`
}

// Signing errors.
var (
	// ErrBadSignature is a signature that does not verify with any given key.
	ErrBadSignature = errors.New("signature does not verify")
	// ErrStatementMismatch is a validly signed statement that does not
	// describe the result it came with (a tampered result).
	ErrStatementMismatch = errors.New("signed statement does not match the result")
	// ErrUnsigned is a result without a signature.
	ErrUnsigned = errors.New("result is not signed")
)

// PAE is DSSE's pre-authentication encoding: what is actually signed.
func PAE(payloadType string, payload []byte) []byte {
	var b bytes.Buffer
	b.WriteString("DSSEv1 ")
	b.WriteString(strconv.Itoa(len(payloadType)))
	b.WriteByte(' ')
	b.WriteString(payloadType)
	b.WriteByte(' ')
	b.WriteString(strconv.Itoa(len(payload)))
	b.WriteByte(' ')
	b.Write(payload)
	return b.Bytes()
}

// KeyIDOf is the id CISS gives a public key: "sha256:" and the hex digest of
// its DER (PKIX) encoding.
func KeyIDOf(pub crypto.PublicKey) (string, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return "", fmt.Errorf("key id: %w", err)
	}
	sum := sha256.Sum256(der)
	return "sha256:" + hex.EncodeToString(sum[:]), nil
}

// ParsePublicKeys reads every "PUBLIC KEY" PEM block of b.
func ParsePublicKeys(b []byte) ([]crypto.PublicKey, error) {
	var keys []crypto.PublicKey
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			break
		}
		if blk.Type != "PUBLIC KEY" {
			continue
		}
		k, err := x509.ParsePKIXPublicKey(blk.Bytes)
		if err != nil {
			return nil, fmt.Errorf("public key: %w", err)
		}
		keys = append(keys, k)
	}
	if len(keys) == 0 {
		return nil, errors.New("no PUBLIC KEY PEM block")
	}
	return keys, nil
}

// Verify checks that some signature of e verifies with one of keys and
// returns the payload. ECDSA (SHA-256 of PAE, ASN.1 signature, as cosign
// signs), Ed25519 and RSA-PSS/PKCS#1v1.5 (SHA-256) keys are accepted.
func (e *Envelope) Verify(keys ...crypto.PublicKey) ([]byte, error) {
	if e == nil {
		return nil, ErrUnsigned
	}
	payload, err := base64.StdEncoding.DecodeString(e.Payload)
	if err != nil {
		return nil, fmt.Errorf("%w: payload is not base64: %w", ErrBadSignature, err)
	}
	msg := PAE(e.PayloadType, payload)
	digest := sha256.Sum256(msg)
	for _, s := range e.Signatures {
		sig, err := base64.StdEncoding.DecodeString(s.Sig)
		if err != nil {
			continue
		}
		for _, k := range keys {
			if verifyWith(k, msg, digest[:], sig) {
				return payload, nil
			}
		}
	}
	return nil, ErrBadSignature
}

func verifyWith(k crypto.PublicKey, msg, digest, sig []byte) bool {
	switch k := k.(type) {
	case *ecdsa.PublicKey:
		return ecdsa.VerifyASN1(k, digest, sig)
	case ed25519.PublicKey:
		return ed25519.Verify(k, msg, sig)
	case *rsa.PublicKey:
		return rsa.VerifyPSS(k, crypto.SHA256, digest, sig, nil) == nil ||
			rsa.VerifyPKCS1v15(k, crypto.SHA256, digest, sig) == nil
	}
	return false
}

// ResultStatement builds the in-toto statement a worker signs for res: the
// reports as subjects (name = object name, sha256 digest) and the
// ResultPredicate. res.Result must be set.
func ResultStatement(res *TaskResult) (Statement, error) {
	if res.Result == nil {
		return Statement{}, errors.New("result statement: task result has no result")
	}
	r := res.Result
	pred := ResultPredicate{
		TaskID: res.TaskID, JobID: res.JobID, Tenant: res.Tenant, Tool: res.Tool, ToolVersion: res.ToolVersion,
		Worker: res.Worker, ImageDigest: r.ImageDigest, DBVersion: r.DBVersion, Summary: r.Summary,
		Policy: r.Policy, ImageSignature: r.ImageSignature, GitTag: r.GitTag,
	}
	pb, err := json.Marshal(pred)
	if err != nil {
		return Statement{}, err
	}
	st := Statement{Type: StatementTypeV01, PredicateType: PredicateTypeResult, Predicate: pb, Subject: []Subject{}}
	for _, rep := range r.Reports {
		hexsum, ok := cutPrefix(rep.Digest, "sha256:")
		if !ok {
			return Statement{}, fmt.Errorf("result statement: report %s digest %q is not sha256", rep.Format, rep.Digest)
		}
		st.Subject = append(st.Subject, Subject{Name: rep.Object, Digest: map[string]string{"sha256": hexsum}})
	}
	return st, nil
}

func cutPrefix(s, p string) (string, bool) {
	if len(s) < len(p) || s[:len(p)] != p {
		return s, false
	}
	return s[len(p):], true
}

// VerifyTaskResult checks res.Result.Signature with keys and that the signed
// statement describes exactly res: same task, tool, image digest, summary,
// policy decision, image signature and report digests. It does not fetch the
// reports; check each one's bytes against its Digest (VerifyReport).
//
// It returns ErrUnsigned, ErrBadSignature or ErrStatementMismatch (wrapped).
func VerifyTaskResult(res *TaskResult, keys ...crypto.PublicKey) error {
	if res == nil || res.Result == nil || res.Result.Signature == nil {
		return ErrUnsigned
	}
	env := res.Result.Signature
	if env.PayloadType != PayloadTypeInToto {
		return fmt.Errorf("%w: payload type %q", ErrStatementMismatch, env.PayloadType)
	}
	payload, err := env.Verify(keys...)
	if err != nil {
		return err
	}
	var got Statement
	if err := json.Unmarshal(payload, &got); err != nil {
		return fmt.Errorf("%w: statement: %w", ErrStatementMismatch, err)
	}
	want, err := ResultStatement(res)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrStatementMismatch, err)
	}
	if got.Type != want.Type || got.PredicateType != want.PredicateType || !reflect.DeepEqual(got.Subject, want.Subject) {
		return fmt.Errorf("%w: statement type or subjects (reports) differ", ErrStatementMismatch)
	}
	var gp, wp ResultPredicate
	if err := json.Unmarshal(got.Predicate, &gp); err != nil {
		return fmt.Errorf("%w: predicate: %w", ErrStatementMismatch, err)
	}
	_ = json.Unmarshal(want.Predicate, &wp)
	if !reflect.DeepEqual(gp, wp) {
		return fmt.Errorf("%w: predicate differs", ErrStatementMismatch)
	}
	return nil
}

// VerifyReport checks that b is the report rep names (its sha256 digest).
func VerifyReport(rep Report, b []byte) error {
	sum := sha256.Sum256(b)
	if "sha256:"+hex.EncodeToString(sum[:]) != rep.Digest {
		return fmt.Errorf("%w: report %s does not have digest %s", ErrStatementMismatch, rep.Format, rep.Digest)
	}
	return nil
}
