package delivery

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"sort"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	bolt "go.etcd.io/bbolt"

	"github.com/ems-broker/ems/delivery/mesh"
	"github.com/ems-broker/ems/fhir/catalog"
)

// Subscriptions is what delivery needs of the subscription store.
type Subscriptions interface {
	SubscriptionReader
	StatusSetter
}

// MeshOptions configure the built-in mailboxes.
type MeshOptions struct {
	SharedKey string
	Passwords map[string]string // mailbox → password
	ChunkSize int
	MaxSkew   time.Duration
	// Retention is how long a message may wait unacknowledged before it is
	// reported (metric + log); it is never dropped.
	Retention time.Duration
	From      string // Mex-From of deliveries
}

// Options wire the delivery service.
type Options struct {
	JS jetstream.JetStream
	// MeshJS, when set, is the MESH inbox's own connection: the inbox API
	// answers subscribers' polls and should not queue behind the fan-out's
	// publishes on one nats.Conn (default JS).
	MeshJS        jetstream.JetStream
	DB            *bolt.DB
	EventsStream  string
	Matcher       Matcher
	Facts         FactsCompleter
	Subscriptions Subscriptions
	Catalog       *catalog.Catalog
	Mesh          MeshOptions
	Webhook       SenderOptions
	Policy        func(endpoint string) Policy
	Concurrency   func(endpoint string) int
	Breaker       BreakerConfig
	FanoutWorkers int
	// EventRetention is how long the events stream keeps an event (0:
	// unknown). Mailbox acknowledgements are remembered as long: a fan-out
	// can only run again for an event still stored, and each remembered
	// acknowledgement costs the server memory (docs/memory.md).
	EventRetention time.Duration
	// Pace, when set, admits fan-out work (FanoutOptions.Pace).
	Pace     Pacer
	Replicas int
	// Lanes partition webhook jobs across the nodes of a cluster
	// (DispatcherOptions.Lanes); nil on a single node.
	Lanes      *LaneOptions
	Registerer prometheus.Registerer
	Logger     *slog.Logger
	Now        func() time.Time
}

// Service is the running delivery pipeline and its HTTP faces.
type Service struct {
	// Mesh is the MESH inbox API, to mount at mesh.APIPrefix + "/".
	Mesh http.Handler
	// Admin is the delivery admin API, to mount at AdminPrefix + "/".
	Admin http.Handler

	o       Options
	fanout  *Fanout
	disp    *Dispatcher
	meshS   *mesh.Store
	metrics *Metrics
	mailLog *asyncLog
}

// New creates the streams, consumers and handlers; Run starts the work.
func New(ctx context.Context, o Options) (*Service, error) {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Mesh.Retention <= 0 {
		o.Mesh.Retention = 5 * 24 * time.Hour
	}
	m := NewMetrics(o.Registerer)
	streams, err := EnsureStreams(ctx, o.JS, StreamsConfig{Replicas: o.Replicas})
	if err != nil {
		return nil, err
	}
	meshJS := o.MeshJS
	if meshJS == nil {
		meshJS = o.JS
	}
	// Without lanes this is the only node: acknowledged messages can be
	// deleted in the background (mesh.StreamConfig.SingleNode).
	meshStore, err := mesh.NewStore(ctx, meshJS, mesh.StreamConfig{Replicas: o.Replicas, SingleNode: o.Lanes == nil, AckRetention: o.EventRetention,
		Logger: o.Logger.With("component", "mesh"), Registerer: o.Registerer})
	if err != nil {
		return nil, err
	}
	dlog, err := NewLog(o.DB)
	if err != nil {
		return nil, err
	}
	o.Webhook.Now = o.Now
	sender, err := NewSender(o.Webhook)
	if err != nil {
		return nil, err
	}
	mailLog := newAsyncLog(dlog)
	fan, err := NewFanout(ctx, FanoutOptions{JS: o.JS, EventsStream: o.EventsStream, Matcher: o.Matcher, Facts: o.Facts,
		Subscriptions: o.Subscriptions, Catalog: o.Catalog, MeshFrom: o.Mesh.From, Workers: o.FanoutWorkers, Pace: o.Pace,
		Logger: o.Logger.With("stage", "fanout"), Metrics: m, Now: o.Now, mailLog: mailLog})
	if err != nil {
		return nil, err
	}
	disp, err := NewDispatcher(ctx, DispatcherOptions{JS: o.JS, Log: dlog, Sender: sender, Statuses: o.Subscriptions,
		Policy: o.Policy, Concurrency: o.Concurrency, Breaker: o.Breaker, AckWait: webhookAckWait(o.Webhook.Timeout),
		Logger: o.Logger.With("stage", "webhook"), Metrics: m, Now: o.Now, Lanes: o.Lanes})
	if err != nil {
		return nil, err
	}
	log := o.Logger
	meshAPI := mesh.NewHandler(mesh.HandlerOptions{Store: meshStore,
		Auth:      mesh.NewAuthenticator(mesh.AuthOptions{SharedKey: o.Mesh.SharedKey, Passwords: o.Mesh.Passwords, MaxSkew: o.Mesh.MaxSkew, Now: o.Now}),
		ChunkSize: o.Mesh.ChunkSize, Logger: o.Logger.With("component", "mesh"), Now: o.Now,
		OnAck: func(mb, id string) {
			log.Debug("MESH message acknowledged", "mailbox", mb, "id", id)
			mailLog.put(logEntry{acked: id, at: o.Now()})
		}})
	admin := NewAdminHandler(AdminOptions{Log: dlog, Dispatcher: disp,
		Replayer: &Replayer{JS: o.JS, Dead: streams.Dead, Log: dlog, Subscriptions: o.Subscriptions, Now: o.Now}})
	return &Service{Mesh: meshAPI, Admin: admin, o: o, fanout: fan, disp: disp, meshS: meshStore, metrics: m, mailLog: mailLog}, nil
}

func webhookAckWait(timeout time.Duration) time.Duration {
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	return timeout + 30*time.Second
}

// Run runs the fan-out, the dispatcher and the inbox watch until ctx ends.
func (s *Service) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	errs := make(chan error, 2)
	for _, run := range []func(context.Context) error{s.fanout.Run, s.disp.Run} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := run(ctx); err != nil {
				errs <- err
			}
		}()
	}
	wg.Add(1)
	go func() { defer wg.Done(); s.watchInboxes(ctx, time.Minute) }()
	wg.Add(1)
	go func() { defer wg.Done(); _ = s.meshS.RunIndex(ctx) }() // nil at ctx's end; restarts by itself
	logDone := make(chan struct{})
	logStopped := make(chan struct{})
	go func() { defer close(logStopped); s.mailLog.run(logDone) }()
	wg.Wait()
	close(logDone) // the fan-out has stopped: flush its last lines
	<-logStopped
	close(errs)
	return <-errs
}

// watchInboxes reports inbox depth and messages left unacknowledged past
// the retention: NEMS relies on MESH deleting them; we keep them and say so.
func (s *Service) watchInboxes(ctx context.Context, every time.Duration) {
	mbs := make([]string, 0, len(s.o.Mesh.Passwords))
	for mb := range s.o.Mesh.Passwords {
		mbs = append(mbs, mb)
	}
	sort.Strings(mbs)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		for _, mb := range mbs {
			n, err := s.meshS.Count(ctx, mb)
			if err != nil {
				continue
			}
			s.metrics.inboxDepth.WithLabelValues(mb).Set(float64(n))
			oldest, err := s.meshS.Oldest(ctx, mb)
			if err != nil || oldest.IsZero() {
				s.metrics.inboxOld.WithLabelValues(mb).Set(0)
				continue
			}
			age := s.o.Now().Sub(oldest)
			s.metrics.inboxOld.WithLabelValues(mb).Set(age.Seconds())
			if age > s.o.Mesh.Retention {
				s.o.Logger.Warn("MESH mailbox has messages unacknowledged past the retention", "mailbox", mb,
					"oldest_age", age.Round(time.Second).String(), "retention", s.o.Mesh.Retention.String(), "depth", n)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// String names the service in logs.
func (s *Service) String() string { return fmt.Sprintf("delivery(%s)", s.o.EventsStream) }
