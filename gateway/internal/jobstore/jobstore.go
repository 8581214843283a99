// Package jobstore is the gateway's view of NATS JetStream: it publishes job
// events to the jobs stream, reads and swaps job state in the jobs KV bucket,
// and streams reports from the object store.
//
// The gateway never creates streams or buckets (the dispatcher owns the
// topology); it binds to them. Open returns at once even when NATS is down or
// the buckets do not exist yet: binding is retried in the background and Ready
// says when the store can be used.
//
// The connection is made with a reconnect buffer of -1, so a publish attempted
// while disconnected fails at once instead of being buffered and sent after the
// reconnect: a request the gateway answered 503 must never turn into a job later.
package jobstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"ciss.dev/schemas"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Config configures the NATS connection. The zero value connects to the
// default URL without authentication.
type Config struct {
	// URL is the NATS server URL list (comma-separated); default
	// "nats://127.0.0.1:4222".
	URL string
	// CredsFile is a NATS user credentials file (JWT + seed); optional.
	CredsFile string
	// CAFile is a PEM bundle of CAs trusted for the NATS server; optional.
	CAFile string
	// CertFile and KeyFile are a client certificate for NATS mTLS; optional,
	// both or neither.
	CertFile, KeyFile string
	// Name is the connection name shown by the server; default "ciss-gateway".
	Name string
	// RetryInterval is how often binding is retried; default 1s.
	RetryInterval time.Duration
	// Logger receives connection events; default discards.
	Logger *slog.Logger
	// Webhooks also binds the webhook stream, the audit stream and the
	// delivery bucket, for the webhook receiver; Ready then requires them.
	Webhooks bool
}

// Entry is a job as stored, with the KV revision it was read at.
type Entry struct {
	Job      schemas.Job
	Revision uint64
	// Deleted is set by Watch when the key was deleted or purged.
	Deleted bool
}

// Object is a report document being read from the object store.
type Object struct {
	io.ReadCloser
	// Size is the stored object's length in bytes.
	Size int64
}

// Store binds to the CISS JetStream topology.
type Store struct {
	nc   *nats.Conn
	js   jetstream.JetStream
	log  *slog.Logger
	cfg  Config
	kick chan struct{}

	bound atomic.Pointer[handles]

	stop context.CancelFunc
	wg   sync.WaitGroup
}

type handles struct {
	kv  jetstream.KeyValue
	obj jetstream.ObjectStore
	// deliveries is the webhook delivery bucket; nil unless Config.Webhooks.
	deliveries jetstream.KeyValue
}

// Open connects to NATS and starts binding in the background. It only fails on
// configuration errors (such as an unreadable credentials file); an unreachable
// server is retried for ever.
func Open(cfg Config) (*Store, error) {
	if cfg.URL == "" {
		cfg.URL = nats.DefaultURL
	}
	if cfg.Name == "" {
		cfg.Name = "ciss-gateway"
	}
	if cfg.RetryInterval <= 0 {
		cfg.RetryInterval = time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if (cfg.CertFile == "") != (cfg.KeyFile == "") {
		return nil, errors.New("jobstore: CertFile and KeyFile must be given together")
	}
	s := &Store{log: cfg.Logger, cfg: cfg, kick: make(chan struct{}, 1)}
	opts := []nats.Option{
		nats.Name(cfg.Name),
		nats.RetryOnFailedConnect(true),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(time.Second),
		nats.ReconnectBufSize(-1),
		nats.ConnectHandler(func(*nats.Conn) { s.log.Info("nats connected"); s.poke() }),
		nats.ReconnectHandler(func(*nats.Conn) { s.log.Info("nats reconnected"); s.poke() }),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil { // nil means closed on purpose
				s.log.Warn("nats disconnected", "err", err)
			}
		}),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			s.log.Warn("nats async error", "err", err)
		}),
	}
	if cfg.CredsFile != "" {
		opts = append(opts, nats.UserCredentials(cfg.CredsFile))
	}
	if cfg.CAFile != "" {
		opts = append(opts, nats.RootCAs(cfg.CAFile))
	}
	if cfg.CertFile != "" {
		opts = append(opts, nats.ClientCert(cfg.CertFile, cfg.KeyFile))
	}
	nc, err := nats.Connect(cfg.URL, opts...)
	if err != nil {
		return nil, fmt.Errorf("jobstore: connect %s: %w", cfg.URL, err)
	}
	js, err := jetstream.New(nc,
		jetstream.WithPublishAsyncMaxPending(maxAuditPending),
		jetstream.WithPublishAsyncErrHandler(func(_ jetstream.JetStream, m *nats.Msg, err error) {
			s.log.Warn("audit record not stored", "subject", m.Subject, "err", err)
		}))
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("jobstore: %w", err)
	}
	s.nc, s.js = nc, js
	ctx, cancel := context.WithCancel(context.Background())
	s.stop = cancel
	s.wg.Go(func() { s.bindLoop(ctx) })
	return s, nil
}

func (s *Store) poke() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// bindLoop binds once, retrying until it succeeds or the store is closed. Once
// bound, the handles stay valid across reconnects.
func (s *Store) bindLoop(ctx context.Context) {
	t := time.NewTicker(s.cfg.RetryInterval)
	defer t.Stop()
	var lastErr string
	for {
		if s.nc.IsConnected() {
			err := s.bind(ctx)
			if err == nil {
				s.log.Info("jetstream bound", "stream", schemas.StreamJobs, "bucket", schemas.BucketJobs, "objects", schemas.ObjectReports)
				return
			}
			if msg := err.Error(); msg != lastErr { // log changes, not every retry
				s.log.Warn("jetstream not bound yet", "err", err)
				lastErr = msg
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-s.kick:
		}
	}
}

func (s *Store) bind(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if _, err := s.js.Stream(ctx, schemas.StreamJobs); err != nil {
		return fmt.Errorf("stream %s: %w", schemas.StreamJobs, err)
	}
	kv, err := s.js.KeyValue(ctx, schemas.BucketJobs)
	if err != nil {
		return fmt.Errorf("kv %s: %w", schemas.BucketJobs, err)
	}
	obj, err := s.js.ObjectStore(ctx, schemas.ObjectReports)
	if err != nil {
		return fmt.Errorf("object store %s: %w", schemas.ObjectReports, err)
	}
	h := &handles{kv: kv, obj: obj}
	if s.cfg.Webhooks {
		if h.deliveries, err = bindWebhooks(ctx, s.js); err != nil {
			return err
		}
	}
	s.bound.Store(h)
	return nil
}

// Close stops binding and closes the connection.
func (s *Store) Close() {
	s.stop()
	s.wg.Wait()
	s.nc.Close()
}

// Ready returns nil when connected and bound, else ErrNotConnected or ErrNotBound.
func (s *Store) Ready() error {
	_, err := s.handles()
	return err
}

func (s *Store) handles() (*handles, error) {
	if !s.nc.IsConnected() {
		return nil, ErrNotConnected
	}
	h := s.bound.Load()
	if h == nil {
		return nil, ErrNotBound
	}
	return h, nil
}

// unavailable wraps a transport error so that it matches ErrUnavailable.
func unavailable(op string, err error) error {
	return fmt.Errorf("%s: %w: %w", op, ErrUnavailable, err)
}

// Publish stores data in the jobs stream on subject with msgID as the
// deduplication id. It returns nil only once JetStream acknowledged the
// message (a duplicate acknowledgement included); anything else wraps
// ErrUnavailable, since the outcome is unknown or negative.
func (s *Store) Publish(ctx context.Context, subject, msgID string, data []byte) error {
	if _, err := s.handles(); err != nil {
		return fmt.Errorf("publish %s: %w", subject, err)
	}
	_, err := s.js.Publish(ctx, subject, data, jetstream.WithMsgID(msgID), jetstream.WithExpectStream(schemas.StreamJobs))
	if err != nil {
		return unavailable("publish "+subject, err)
	}
	return nil
}

// Notify publishes data on a core NATS subject, without persistence or
// acknowledgement.
func (s *Store) Notify(subject string, data []byte) error {
	if !s.nc.IsConnected() {
		return fmt.Errorf("notify %s: %w", subject, ErrNotConnected)
	}
	if err := s.nc.Publish(subject, data); err != nil {
		return unavailable("notify "+subject, err)
	}
	return nil
}

// Get reads a job; ErrNotFound when the key is missing or deleted.
func (s *Store) Get(ctx context.Context, key string) (Entry, error) {
	h, err := s.handles()
	if err != nil {
		return Entry{}, fmt.Errorf("get %s: %w", key, err)
	}
	e, err := h.kv.Get(ctx, key)
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound), errors.Is(err, jetstream.ErrKeyDeleted):
		return Entry{}, fmt.Errorf("get %s: %w", key, ErrNotFound)
	case err != nil:
		return Entry{}, unavailable("get "+key, err)
	}
	return decode(e)
}

func decode(e jetstream.KeyValueEntry) (Entry, error) {
	var j schemas.Job
	if err := json.Unmarshal(e.Value(), &j); err != nil {
		return Entry{}, fmt.Errorf("decode job %s revision %d: %w", e.Key(), e.Revision(), err)
	}
	return Entry{Job: j, Revision: e.Revision()}, nil
}

// Create stores a new job; ErrExists when the key is already there.
func (s *Store) Create(ctx context.Context, key string, job *schemas.Job) (uint64, error) {
	h, err := s.handles()
	if err != nil {
		return 0, fmt.Errorf("create %s: %w", key, err)
	}
	b, err := json.Marshal(job)
	if err != nil {
		return 0, fmt.Errorf("create %s: %w", key, err)
	}
	rev, err := h.kv.Create(ctx, key, b)
	switch {
	case errors.Is(err, jetstream.ErrKeyExists):
		return 0, fmt.Errorf("create %s: %w", key, ErrExists)
	case err != nil:
		return 0, unavailable("create "+key, err)
	}
	return rev, nil
}

// Update replaces a job if its revision is still rev; ErrConflict otherwise.
func (s *Store) Update(ctx context.Context, key string, job *schemas.Job, rev uint64) (uint64, error) {
	h, err := s.handles()
	if err != nil {
		return 0, fmt.Errorf("update %s: %w", key, err)
	}
	b, err := json.Marshal(job)
	if err != nil {
		return 0, fmt.Errorf("update %s: %w", key, err)
	}
	next, err := h.kv.Update(ctx, key, b, rev)
	switch {
	case errors.Is(err, jetstream.ErrKeyExists): // wrong last sequence
		return 0, fmt.Errorf("update %s at revision %d: %w", key, rev, ErrConflict)
	case err != nil:
		return 0, unavailable("update "+key, err)
	}
	return next, nil
}

// Watch sends the current value of key and then every change, until ctx is
// done; the channel is closed then. Values that do not decode are skipped.
func (s *Store) Watch(ctx context.Context, key string) (<-chan Entry, error) {
	h, err := s.handles()
	if err != nil {
		return nil, fmt.Errorf("watch %s: %w", key, err)
	}
	w, err := h.kv.Watch(ctx, key)
	if err != nil {
		return nil, unavailable("watch "+key, err)
	}
	ch := make(chan Entry)
	go func() {
		defer close(ch)
		defer func() { _ = w.Stop() }() // Stop only fails if already stopped.
		for {
			var kve jetstream.KeyValueEntry
			select {
			case <-ctx.Done():
				return
			case e, ok := <-w.Updates():
				if !ok {
					return
				}
				kve = e
			}
			if kve == nil { // end of initial values
				continue
			}
			var out Entry
			if kve.Operation() != jetstream.KeyValuePut {
				out = Entry{Revision: kve.Revision(), Deleted: true}
			} else if out, err = decode(kve); err != nil {
				s.log.Warn("skipping undecodable job state", "err", err)
				continue
			}
			select {
			case ch <- out:
			case <-ctx.Done():
				return
			}
		}
	}()
	return ch, nil
}

// List returns the latest value of every job whose key matches filter (a KV
// key filter such as "acme.*"), in no particular order. It reads values, not
// just keys (ListKeysFiltered is the same watch with values stripped), because
// callers sort and filter on them.
func (s *Store) List(ctx context.Context, filter string) ([]Entry, error) {
	h, err := s.handles()
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", filter, err)
	}
	w, err := h.kv.Watch(ctx, filter, jetstream.IgnoreDeletes())
	if err != nil {
		return nil, unavailable("list "+filter, err)
	}
	defer func() { _ = w.Stop() }()
	var out []Entry
	for {
		select {
		case <-ctx.Done():
			return nil, unavailable("list "+filter, context.Cause(ctx))
		case e, ok := <-w.Updates():
			if !ok {
				return nil, unavailable("list "+filter, errors.New("watcher closed"))
			}
			if e == nil {
				return out, nil
			}
			ent, err := decode(e)
			if err != nil {
				s.log.Warn("skipping undecodable job state", "err", err)
				continue
			}
			out = append(out, ent)
		}
	}
}

// OpenReport opens a stored report; ErrNotFound when the object is missing.
// The caller must close it.
func (s *Store) OpenReport(ctx context.Context, name string) (Object, error) {
	h, err := s.handles()
	if err != nil {
		return Object{}, fmt.Errorf("open report %s: %w", name, err)
	}
	r, err := h.obj.Get(ctx, name)
	switch {
	case errors.Is(err, jetstream.ErrObjectNotFound):
		return Object{}, fmt.Errorf("open report %s: %w", name, ErrNotFound)
	case err != nil:
		return Object{}, unavailable("open report "+name, err)
	}
	info, err := r.Info()
	if err != nil {
		_ = r.Close()
		return Object{}, unavailable("open report "+name, err)
	}
	return Object{ReadCloser: r, Size: int64(info.Size)}, nil
}
