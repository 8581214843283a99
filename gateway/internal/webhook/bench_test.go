package webhook

import (
	"net/http"
	"testing"
	"time"

	"ciss.dev/schemas"
)

// BenchmarkGitHubPush is the receiver's CPU work for one push, without the
// network and JetStream: claim, verify, parse, encode the stored event.
func BenchmarkGitHubPush(b *testing.B) {
	body := fixture(b, "github-push.json")
	secret := NewSecret([]byte(testSecret))
	hdr := http.Header{"X-Hub-Signature-256": {SignGitHub([]byte(testSecret), body)}}
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		claimGitHub(body)
		if err := VerifyGitHub(secret, hdr, body); err != nil {
			b.Fatal(err)
		}
		p, err := ParseGitHub("push", body)
		if err != nil || p.Event == nil {
			b.Fatal(err)
		}
		p.Event.DeliveryID, p.Event.ReceivedAt, p.Event.Payload = "d", time.Now(), body
		if _, err := schemas.Marshal(schemas.TypeWebhookReceived, "bench", p.Event.Repo, p.Event); err != nil {
			b.Fatal(err)
		}
	}
}
