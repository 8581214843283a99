package sign

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/sigstore/cosign/v2/pkg/cosign/attestation"
	cremote "github.com/sigstore/cosign/v2/pkg/cosign/remote"
	"github.com/sigstore/cosign/v2/pkg/oci/mutate"
	ociremote "github.com/sigstore/cosign/v2/pkg/oci/remote"
	"github.com/sigstore/cosign/v2/pkg/oci/static"
	"github.com/sigstore/cosign/v2/pkg/types"
	"github.com/sigstore/sigstore/pkg/signature/payload"

	"ciss.dev/schemas"
)

// Attestation is one in-toto predicate to attach to an image.
type Attestation struct {
	// PredicateType is the statement's predicate type (e.g. schemas.PredicateTypeVuln).
	PredicateType string
	// Predicate is the predicate JSON.
	Predicate json.RawMessage
}

// VulnPredicate builds cosign's vulnerability-scan predicate
// (https://cosign.sigstore.dev/attestation/vuln/v1) around a scanner's raw
// JSON report, as `cosign attest --type vuln` expects it.
func VulnPredicate(scannerURI, scannerVersion, dbVersion string, report json.RawMessage, started, finished time.Time) (json.RawMessage, error) {
	p := attestation.CosignVulnPredicate{
		Invocation: attestation.Invocation{URI: "https://ciss.dev", BuilderID: "ciss-worker"},
		Scanner: attestation.Scanner{
			URI: scannerURI, Version: scannerVersion,
			DB:     attestation.DB{URI: scannerURI + "#db", Version: dbVersion},
			Result: report,
		},
		Metadata: attestation.Metadata{ScanStartedOn: started.UTC(), ScanFinishedOn: finished.UTC()},
	}
	b, err := json.Marshal(p)
	if err != nil {
		return nil, fmt.Errorf("sign: vuln predicate: %w", err)
	}
	return b, nil
}

// ImageOptions are the registry options of SignImage.
type ImageOptions struct {
	// Insecure allows plain HTTP to any registry (loopback is always allowed
	// plain HTTP by go-containerregistry).
	Insecure bool
	// Remote are extra go-containerregistry options (auth, transport).
	Remote []remote.Option
	// AttestOnly attaches the attestations without signing the image itself
	// (an SBOM states what is in an image, not that it passed a policy).
	AttestOnly bool
}

// SignImage signs the image ref (pinned by digest: repo@sha256:…) with k in
// its registry, as `cosign sign --key` does (simple signing payload, a
// signature layer in the repo:sha256-<hex>.sig image), and attaches atts as
// DSSE-signed in-toto attestations (repo:sha256-<hex>.att), as `cosign attest`
// does. Nothing goes to a transparency log: verify with
// `cosign verify --insecure-ignore-tlog`.
func SignImage(ctx context.Context, k *Key, ref string, atts []Attestation, o ImageOptions) (*schemas.ImageSignature, error) {
	var nopts []name.Option
	if o.Insecure {
		nopts = append(nopts, name.Insecure)
	}
	digest, err := name.NewDigest(ref, nopts...)
	if err != nil {
		return nil, fmt.Errorf("sign: image %q must be pinned by digest: %w", ref, err)
	}
	ropts := append([]remote.Option{remote.WithContext(ctx)}, o.Remote...)
	oopts := []ociremote.Option{ociremote.WithRemoteOptions(ropts...)}
	se, err := ociremote.SignedEntity(digest, oopts...)
	if err != nil {
		return nil, fmt.Errorf("sign: read %s: %w", ref, err)
	}
	hexsum := strings.TrimPrefix(digest.DigestStr(), "sha256:")
	out := &schemas.ImageSignature{KeyID: k.ID}
	if !o.AttestOnly {
		pl, err := (&payload.Cosign{Image: digest}).MarshalJSON()
		if err != nil {
			return nil, fmt.Errorf("sign: payload: %w", err)
		}
		raw, err := k.Sign(ctx, pl)
		if err != nil {
			return nil, err
		}
		sig, err := static.NewSignature(pl, base64.StdEncoding.EncodeToString(raw))
		if err != nil {
			return nil, fmt.Errorf("sign: signature layer: %w", err)
		}
		// Re-signing an image with the same key adds no second signature.
		if se, err = mutate.AttachSignatureToEntity(se, sig, mutate.WithDupeDetector(cremote.NewDupeDetector(k.sv))); err != nil {
			return nil, fmt.Errorf("sign: attach signature: %w", err)
		}
		if err := ociremote.WriteSignatures(digest.Repository, se, oopts...); err != nil {
			return nil, fmt.Errorf("sign: write signature to %s: %w", digest.Repository, err)
		}
		out.Signature = digest.Repository.Tag("sha256-" + hexsum + ".sig").String()
	}
	if len(atts) == 0 {
		return out, nil
	}
	for _, a := range atts {
		st := schemas.Statement{
			Type: schemas.StatementTypeV01, PredicateType: a.PredicateType, Predicate: a.Predicate,
			Subject: []schemas.Subject{{Name: digest.Repository.Name(), Digest: map[string]string{"sha256": hexsum}}},
		}
		b, err := json.Marshal(st)
		if err != nil {
			return nil, fmt.Errorf("sign: statement: %w", err)
		}
		env, err := k.Envelope(ctx, schemas.PayloadTypeInToto, b)
		if err != nil {
			return nil, err
		}
		eb, err := json.Marshal(env)
		if err != nil {
			return nil, err
		}
		att, err := static.NewAttestation(eb, static.WithLayerMediaType(types.DssePayloadType),
			static.WithAnnotations(map[string]string{"predicateType": a.PredicateType}))
		if err != nil {
			return nil, fmt.Errorf("sign: attestation layer: %w", err)
		}
		// A newer attestation of the same predicate type replaces the older
		// one (cosign attest --replace), so rescans do not grow the .att image.
		if se, err = mutate.AttachAttestationToEntity(se, att, mutate.WithReplaceOp(cremote.NewReplaceOp(a.PredicateType))); err != nil {
			return nil, fmt.Errorf("sign: attach attestation: %w", err)
		}
		out.PredicateTypes = append(out.PredicateTypes, a.PredicateType)
	}
	if err := ociremote.WriteAttestations(digest.Repository, se, oopts...); err != nil {
		return nil, fmt.Errorf("sign: write attestations to %s: %w", digest.Repository, err)
	}
	out.Attestations = digest.Repository.Tag("sha256-" + hexsum + ".att").String()
	return out, nil
}
