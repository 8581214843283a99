package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"ciss.dev/schemas"
	"ciss.dev/test/stack"
)

// shadowResult is phase 6: the primary's latency under load with and
// without a shadow trial, measured in alternating blocks on one stack.
type shadowResult struct {
	without, with []jobTiming
	blocks        int
	// drained is the total time waited after "with" blocks for the
	// shadow backlog to finish, so it cannot load the next "without" block.
	drained time.Duration
	cpu     cpuSnap
	elapsed time.Duration
}

const shadowRoutingBase = `version: 2
tools:
  - {name: trivy, job_types: [image-scan]}
  - {name: trivy-shadow, job_types: [image-scan]}
routes:
  - job_type: image-scan
    primary: trivy
`

// shadowOverhead starts a stack whose catalog also holds trivy-shadow (the
// shipped Trivy Task under a second name: a full second scan per job, the
// A/A trial, run by the worker's shadow pool at nice 10) and runs -shadow-n interactive cache-off jobs at concurrency
// -shadow-c in four alternating blocks: without, with, without, with the
// shadow. Routing is swapped by rewriting the file (hot reload, confirmed by
// the routing audit record).
func shadowOverhead(ctx context.Context, o options, tmp string, logs io.Writer) (shadowResult, error) {
	var r shadowResult
	root, err := stack.RepoRoot()
	if err != nil {
		return r, err
	}
	catalog := filepath.Join(tmp, "shadow-catalog")
	if err := os.MkdirAll(catalog, 0o700); err != nil {
		return r, err
	}
	files, err := filepath.Glob(filepath.Join(root, "deploy", "tekton", "*.yaml"))
	if err != nil {
		return r, err
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return r, err
		}
		if err := os.WriteFile(filepath.Join(catalog, filepath.Base(f)), b, 0o600); err != nil {
			return r, err
		}
		if filepath.Base(f) == "trivy.tool.yaml" {
			shadow := strings.Replace(string(b), "\nname: trivy ", "\nname: trivy-shadow ", 1)
			if shadow == string(b) {
				return r, errors.New("trivy.tool.yaml: cannot rename the tool")
			}
			if err := os.WriteFile(filepath.Join(catalog, "trivy-shadow.tool.yaml"), []byte(shadow), 0o600); err != nil {
				return r, err
			}
		}
	}
	routing := filepath.Join(tmp, "shadow-routing.yaml")
	without := []byte(shadowRoutingBase)
	with := []byte(shadowRoutingBase + "    shadows: [{tool: trivy-shadow, trial: bench-aa}]\ntrials: [{name: bench-aa, baseline: true}]\n")
	if err := os.WriteFile(routing, without, 0o600); err != nil {
		return r, err
	}
	s, err := stack.Start(ctx, stack.Config{Dir: filepath.Join(tmp, "stack-c"), BinDir: o.binDir, Trivy: o.trivy, Output: logs,
		TasksDir: catalog, RoutingFile: routing})
	if err != nil {
		return r, fmt.Errorf("start stack: %w", err)
	}
	defer s.Close()
	hc, err := s.Client(s.PKI.Client)
	if err != nil {
		return r, err
	}
	if tr, ok := hc.Transport.(*http.Transport); ok {
		tr.MaxIdleConnsPerHost = max(tr.MaxIdleConnsPerHost, o.shadowConc)
	}
	hc.Timeout = 0
	nc, err := nats.Connect(s.NATSURL, nats.Name("ciss-load-shadow"))
	if err != nil {
		return r, err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return r, err
	}
	if _, err := e2eJob(ctx, hc, s.APIURL, s.Images.Clean, false); err != nil { // warm-up
		return r, fmt.Errorf("warm-up: %w", err)
	}
	per := max(o.shadowN/4, 1)
	c0, t0 := cpuNow(), time.Now()
	for block := range 4 {
		shadowed := block%2 == 1
		content := without
		if shadowed {
			content = with
		}
		if block > 0 {
			if err := swapRouting(ctx, js, routing, content); err != nil {
				return r, err
			}
		}
		progress("phase 6: block %d/4, shadow %t: %d jobs at C=%d", block+1, shadowed, per, o.shadowConc)
		ts, err := concurrentJobs(ctx, hc, s.APIURL, s.Images.Clean, o.shadowConc, per)
		if err != nil {
			return r, err
		}
		if shadowed {
			r.with = append(r.with, ts...)
			t := time.Now()
			if err := waitShadowsDrained(ctx, js); err != nil {
				return r, err
			}
			r.drained += time.Since(t)
		} else {
			r.without = append(r.without, ts...)
		}
		r.blocks++
	}
	r.cpu, r.elapsed = cpuNow().since(c0), time.Since(t0)
	return r, nil
}

// concurrentJobs runs n cache-off interactive jobs from conc closed-loop clients.
func concurrentJobs(ctx context.Context, hc *http.Client, base, image string, conc, n int) ([]jobTiming, error) {
	var (
		mu   sync.Mutex
		out  []jobTiming
		errs []error
		wg   sync.WaitGroup
	)
	next := make(chan struct{}, n)
	for range n {
		next <- struct{}{}
	}
	close(next)
	for range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range next {
				t, err := e2eJob(ctx, hc, base, image, false)
				mu.Lock()
				if err != nil {
					errs = append(errs, err)
				} else {
					out = append(out, t)
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return out, errors.Join(errs...)
}

// swapRouting rewrites the routing file and waits for the dispatcher's
// audit record accepting it.
func swapRouting(ctx context.Context, js jetstream.JetStream, path string, content []byte) error {
	subject := schemas.SubjectAuditRouting(true)
	count := func() (uint64, error) {
		st, err := js.Stream(ctx, schemas.StreamAudit)
		if err != nil {
			return 0, err
		}
		info, err := st.Info(ctx, jetstream.WithSubjectFilter(subject))
		if err != nil {
			return 0, err
		}
		return info.State.Subjects[subject], nil
	}
	before, err := count()
	if err != nil {
		return err
	}
	if err := os.WriteFile(path, content, 0o600); err != nil {
		return err
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		n, err := count()
		if err != nil {
			return err
		}
		if n > before {
			return nil
		}
		if time.Now().After(deadline) {
			return errors.New("routing swap not accepted within 30s")
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// waitShadowsDrained waits until the shadow consumer has nothing left.
func waitShadowsDrained(ctx context.Context, js jetstream.JetStream) error {
	deadline := time.Now().Add(3 * time.Minute)
	for {
		c, err := js.Consumer(ctx, schemas.StreamTasks, "worker-trivy-shadow-shadow")
		if err == nil {
			info, err := c.Info(ctx)
			if err == nil && info.NumPending == 0 && info.NumAckPending == 0 {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return errors.New("shadow tasks not drained within 3m")
		}
		time.Sleep(200 * time.Millisecond)
	}
}
