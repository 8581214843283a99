package vaultdev_test

import (
	"context"
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"testing"

	"ciss.dev/test/vaultdev"
)

// TestDevServer starts the real pinned Vault, writes and reads a KV secret with the
// root token, and checks that Stop really ends the process.
func TestDevServer(t *testing.T) {
	s := vaultdev.New(t)
	req, _ := http.NewRequest(http.MethodPost, s.Addr+"/v1/secret/data/probe", strings.NewReader(`{"data":{"k":"v"}}`))
	req.Header.Set("X-Vault-Token", s.RootToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("write: %s", resp.Status)
	}
	req, _ = http.NewRequest(http.MethodGet, s.Addr+"/v1/secret/data/probe", nil)
	req.Header.Set("X-Vault-Token", s.RootToken)
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body struct {
		Data struct {
			Data map[string]string `json:"data"`
		} `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		t.Fatal(err)
	}
	if body.Data.Data["k"] != "v" {
		t.Fatalf("read back %v", body.Data.Data)
	}
	if err := s.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, err := http.Get(s.Addr + "/v1/sys/health"); err == nil {
		t.Fatal("vault still answers after Stop")
	}
}

func TestNoBinary(t *testing.T) {
	if _, err := vaultdev.Start(context.Background(), vaultdev.Config{}); err != vaultdev.ErrNoBinary {
		t.Fatalf("got %v, want ErrNoBinary", err)
	}
}

// TestSetupCISS: the AppRole it creates logs in and gets the given policy.
func TestSetupCISS(t *testing.T) {
	s := vaultdev.New(t)
	ctx := context.Background()
	roleID, secretID, err := s.SetupCISS(ctx, `path "auth/ciss/*" { capabilities = ["read"] }`)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.Post(s.Addr+"/v1/auth/approle/login", "application/json",
		strings.NewReader(`{"role_id":"`+roleID+`","secret_id":"`+secretID+`"}`))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body struct {
		Auth struct {
			Policies []string `json:"token_policies"`
		} `json:"auth"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(body.Auth.Policies, "ciss") {
		t.Fatalf("login policies %v, want [default ciss]", body.Auth.Policies)
	}
	if _, err := s.Call(ctx, "GET", "sys/policies/acl/nope", nil); err == nil || !strings.Contains(err.Error(), "HTTP 404") {
		t.Fatalf("Call of a missing path: %v", err)
	}
}
