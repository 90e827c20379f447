// Command emsd is the events management service: the FHIR publish and
// Subscription APIs in front of an embedded (or external) NATS JetStream and
// a bbolt store.
//
// It is the composition root: it reads the configuration, opens the stores,
// wires the packages together and owns the process lifecycle. The packages
// themselves know nothing of flags, files or signals.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	bolt "go.etcd.io/bbolt"

	"github.com/ems-broker/ems/admin"
	"github.com/ems-broker/ems/broker"
	"github.com/ems-broker/ems/config"
	"github.com/ems-broker/ems/fhir"
	"github.com/ems-broker/ems/fhir/catalog"
	"github.com/ems-broker/ems/fhir/profile"
	"github.com/ems-broker/ems/identity"
	"github.com/ems-broker/ems/pace"
	"github.com/ems-broker/ems/subscription"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() { os.Exit(run(os.Args[1:])) }

func run(args []string) int {
	if len(args) > 0 && args[0] == "version" {
		fmt.Println("emsd", version)
		return 0
	}
	cfg, err := config.Parse(args, os.Getenv)
	if errors.Is(err, flag.ErrHelp) {
		config.Usage(os.Stderr)
		return 0
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "emsd:", err)
		return 2
	}
	log := newLogger(cfg.Log)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := serve(ctx, cfg, log); err != nil {
		log.Error("emsd stopped with an error", "err", err)
		return 1
	}
	return 0
}

func newLogger(c config.Log) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(c.Level))
	opts := &slog.HandlerOptions{Level: level, ReplaceAttr: logReplaceAttr}
	if c.Format == "text" {
		return slog.New(slog.NewTextHandler(os.Stdout, opts))
	}
	return slog.New(slog.NewJSONHandler(os.Stdout, opts))
}

// teardown runs registered closers in reverse order of registration.
type teardown []func()

func (t *teardown) add(f func()) { *t = append(*t, f) }
func (t teardown) run() {
	for i := len(t) - 1; i >= 0; i-- {
		t[i]()
	}
}

// serve runs the service until ctx is cancelled.
func serve(ctx context.Context, cfg config.Config, log *slog.Logger) error {
	started := time.Now()
	cfg = clusterConfig(cfg) // cluster mode: replicas on every stream, node name
	var down teardown
	defer down.run()

	if err := os.MkdirAll(cfg.DataDir, 0o750); err != nil {
		return fmt.Errorf("creating data directory: %w", err)
	}

	cat, err := catalog.Default().Apply(eventOverrides(cfg.Events))
	if err != nil {
		return fmt.Errorf("configuring events: %w", err)
	}
	if err := checkRegistryEvents(cfg.Registry, cat); err != nil {
		return err
	}
	auth, err := newIdentity(cfg, log.With("component", "identity"))
	if err != nil {
		return err
	}

	// bbolt's defaults are kept on purpose. With the freelist synced
	// (NoFreelistSync false), opening reads the meta and freelist pages
	// only: under 1 ms and 2 MiB of the map for a 2 GB, 1M-subscription
	// file. NoFreelistSync saves one page write per commit, but the next
	// open rebuilds the freelist by walking every page of the file: 11-18 s
	// and the whole file resident on that file. The freelist type (array or
	// map) only matters for files with many free pages; a seeded file has
	// none.
	db, err := bolt.Open(cfg.Bbolt.Path, 0o600, &bolt.Options{Timeout: 5 * time.Second})
	if err != nil {
		return fmt.Errorf("opening bbolt %s (is another emsd running on this data dir?): %w", cfg.Bbolt.Path, err)
	}
	down.add(func() {
		if err := db.Close(); err != nil {
			log.Error("closing bbolt", "err", err)
		}
	})
	if limit := int64(cfg.Bbolt.ResidentLimit); limit > 0 {
		trimCtx, stopTrim := context.WithCancel(ctx)
		go trimBoltMap(trimCtx, db, limit, boltTrimEvery, log.With("component", "bbolt"))
		down.add(stopTrim)
	}
	audit, stopAudit, err := publicAudit(ctx, cfg, db, log.With("component", "audit"))
	if err != nil {
		return err
	}
	down.add(stopAudit)

	nc, err := connectNATS(natsOptions{
		URLs:            cfg.NATS.Servers(),
		CredentialsFile: cfg.NATS.CredentialsFile,
		Token:           cfg.NATS.Token.Value(),
		StoreDir:        cfg.NATS.Embedded.StoreDir,
		ClientListen:    cfg.NATS.Embedded.ClientListen,
		SyncAlways:      cfg.NATS.Embedded.Sync == config.SyncAlways,
		SyncInterval:    cfg.NATS.Embedded.SyncInterval,
		MaxMemory:       int64(cfg.NATS.Embedded.MaxMemory),
		MaxStore:        int64(cfg.NATS.Embedded.MaxStore),
	}, log)
	if err != nil {
		return err
	}
	down.add(nc.Close)
	js, err := jetstream.New(nc.nc)
	if err != nil {
		return fmt.Errorf("opening JetStream: %w", err)
	}
	setupCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if _, err := broker.EnsureStream(setupCtx, js, broker.StreamConfig{
		Name:            cfg.NATS.EventsStream.Name,
		Retention:       cfg.NATS.EventsStream.Retention,
		DuplicateWindow: cfg.NATS.EventsStream.DuplicateWindow,
		Replicas:        cfg.NATS.EventsStream.Replicas,
		MaxBytes:        int64(cfg.NATS.EventsStream.MaxBytes),
	}); err != nil {
		return err
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	// Delivery gives way to publishing when the machine cannot do both at
	// once (docs/operating.md "Publishing first").
	var gate *pace.Gate
	if y := cfg.Delivery.Yield; y.Enabled {
		if gate, err = pace.New(pace.Options{Target: y.PublishLatency, MinLevel: y.MinShare, Quiet: y.Quiet, Registerer: reg}); err != nil {
			return err
		}
	}

	var profiles broker.ProfileValidator
	if cfg.Publish.ValidateProfiles {
		pv, err := profile.New(profile.Options{MaxIssues: cfg.Publish.MaxIssues})
		if err != nil {
			return fmt.Errorf("loading profile rules: %w", err)
		}
		profiles = broker.ProfileValidatorFunc(func(root *fhir.Node, event string) []fhir.Issue {
			return pv.ValidateBundle(root, profile.BundleOptions{Event: event})
		})
	}
	pubNC, err := nc.dial("emsd-publish")
	if err != nil {
		return err
	}
	pubJS, err := jetstream.New(pubNC)
	if err != nil {
		return fmt.Errorf("opening JetStream for publishing: %w", err)
	}
	publish, err := broker.NewHandler(broker.Options{
		Publisher:      broker.NewJetStreamPublisher(pubJS),
		Catalog:        cat,
		Logger:         log.With("component", "broker"),
		Registerer:     reg,
		MaxBodyBytes:   int64(cfg.Publish.MaxBodyBytes),
		AllowJSON:      cfg.Publish.AllowJSON,
		CheckNHSNumber: cfg.Publish.CheckNHSNumber,
		MaxIssues:      cfg.Publish.MaxIssues,
		MaxInFlight:    cfg.Publish.MaxInFlight,
		QueueWait:      cfg.Publish.QueueWait,
		Authorizer:     identity.PublishAuthorizer{Auth: auth},
		Profiles:       profiles,
	})
	if err != nil {
		return err
	}

	cluster, stopCluster, err := startCluster(ctx, cfg, nc.nc, js, clusterStore(db), log.With("component", "cluster"))
	if err != nil {
		return err
	}
	down.add(stopCluster)
	subs, err := newSubscriptionAPI(cfg, db, cluster.Store(), cat, auth, log.With("component", "subscription"))
	if err != nil {
		return err
	}
	sweepCtx, stopSweep := context.WithCancel(ctx)
	sweepDone := make(chan struct{})
	go func() {
		defer close(sweepDone)
		subs.svc.RunExpirySweep(sweepCtx, cfg.Subscriptions.ExpirySweepInterval)
	}()
	down.add(func() { stopSweep(); <-sweepDone })

	adminSrv, err := newAdmin(cfg, db)
	if err != nil {
		return err
	}
	if adminSrv != nil {
		registerStatus(adminSrv, js, version, started, cluster)
	}
	ref, err := newRefdata(ctx, cfg, db, js, adminSrv, log.With("component", "refdata"))
	if err != nil {
		return err
	}
	down.add(ref.Close)
	if adminSrv != nil {
		mm, err := subs.svc.Matcher()
		if err != nil {
			return err
		}
		registerMatch(adminSrv, &broker.Validator{Catalog: cat, CheckNHSNumber: cfg.Publish.CheckNHSNumber}, mm,
			func(ctx context.Context, f subscription.EventFacts, bundle *fhir.Node) (subscription.EventFacts, error) {
				out, _, err := ref.Enrich(ctx, f, bundle)
				return out, err
			})
		if err := subscription.RegisterAdmin(adminSrv, subs.svc, subscription.AdminOptions{
			Actor: operatorActor, RecordChange: admin.RecordChange,
		}); err != nil {
			return err
		}
	}

	ready := func() error {
		if nc.nc.Status().String() != "CONNECTED" {
			return fmt.Errorf("nats connection is %s", nc.nc.Status())
		}
		if _, err := js.AccountInfo(ctx); err != nil {
			return fmt.Errorf("jetstream: %w", err)
		}
		if err := cluster.Ready(); err != nil {
			return err
		}
		return db.View(func(*bolt.Tx) error { return nil })
	}

	mux := http.NewServeMux()
	// Authenticate publishers before the broker reads and parses a body.
	// Only authenticated publishes count as publishing being busy.
	mux.Handle(broker.ProcessMessagePath, identity.PublishAuthorizer{Auth: auth}.Gate(gate.Foreground(publish)))
	mux.Handle(subscription.PathPrefix, subs.handler)
	mux.Handle(subscription.PathPrefix+"/", subs.handler)
	mux.HandleFunc("GET /STU3/metadata", func(w http.ResponseWriter, r *http.Request) {
		writeResource(w, r, http.StatusOK, capabilityStatement(version, started, cat, cfg.Publish.AllowJSON))
	})
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok\n")) })
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if err := ready(); err != nil {
			http.Error(w, "not ready: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ready\n"))
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	// Delivery and the MESH inbox API each get their own NATS connection
	// (see natsConn.dial): the server works one connection's messages in
	// order, on one goroutine.
	var deliveryJS [2]jetstream.JetStream
	for i, name := range []string{"emsd-delivery", "emsd-mesh"} {
		c, err := nc.dial(name)
		if err != nil {
			return err
		}
		if deliveryJS[i], err = jetstream.New(c); err != nil {
			return fmt.Errorf("opening JetStream for %s: %w", name, err)
		}
	}
	stopDelivery, err := startDelivery(ctx, cfg, deliveryJS[0], deliveryJS[1], db, subs, cat, reg, mux, adminSrv, ref, gate,
		log.With("component", "delivery"))
	if err != nil {
		return err
	}
	down.add(stopDelivery)

	public, err := listen(cfg.Listen, "listen")
	if err != nil {
		return err
	}
	if public, err = publicListener(public, cfg); err != nil {
		return err
	}
	srv := &http.Server{
		Handler:           publicHandler(mux, cfg, log.With("component", "http"), audit),
		ReadHeaderTimeout: cfg.HTTP.ReadHeaderTimeout,
		ReadTimeout:       cfg.HTTP.ReadTimeout,
		WriteTimeout:      cfg.HTTP.WriteTimeout,
		IdleTimeout:       cfg.HTTP.IdleTimeout,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	readyAttrs := []any{"http", public.Addr().String(), "version", version, "data_dir", cfg.DataDir,
		"startup_ms", time.Since(started).Milliseconds()}
	if nc.srv != nil && cfg.NATS.Embedded.ClientListen != "" {
		readyAttrs = append(readyAttrs, "nats", nc.srv.ClientURL())
	} else if nc.srv == nil {
		readyAttrs = append(readyAttrs, "nats", nc.nc.ConnectedUrlRedacted())
	}
	serveErr := make(chan error, 2)
	go func() { serveErr <- srv.Serve(public) }()
	servers := []*http.Server{srv}

	if adminSrv != nil {
		adminL, err := listen(cfg.AdminListen, "admin_listen")
		if err != nil {
			return err
		}
		adminHTTP := &http.Server{
			Handler:           adminSrv,
			ReadHeaderTimeout: cfg.HTTP.ReadHeaderTimeout,
			ReadTimeout:       cfg.HTTP.ReadTimeout,
			// pprof's CPU profile streams for up to its seconds parameter.
			WriteTimeout:   max(cfg.HTTP.WriteTimeout, 2*time.Minute),
			IdleTimeout:    cfg.HTTP.IdleTimeout,
			MaxHeaderBytes: 64 << 10,
			ErrorLog:       slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		}
		go func() { serveErr <- adminHTTP.Serve(adminL) }()
		servers = append(servers, adminHTTP)
		readyAttrs = append(readyAttrs, "admin", adminL.Addr().String())
	} else {
		log.Warn("admin API disabled: configure admin.tokens (or admin_token) to enable it")
	}

	log.Info("emsd ready", readyAttrs...)

	select {
	case <-ctx.Done():
	case err := <-serveErr:
		return fmt.Errorf("HTTP server: %w", err)
	}
	log.Info("shutting down: draining in-flight requests", "timeout", cfg.HTTP.ShutdownTimeout)
	shutdownCtx, cancelShutdown := context.WithTimeout(context.Background(), cfg.HTTP.ShutdownTimeout)
	defer cancelShutdown()
	for _, s := range servers {
		if err := s.Shutdown(shutdownCtx); err != nil {
			log.Warn("HTTP shutdown incomplete", "err", err)
		}
	}
	log.Info("emsd stopped")
	return nil
}

// listen opens a TCP listener, naming the config key on failure.
func listen(addr, key string) (net.Listener, error) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", key, addr, err)
	}
	return l, nil
}

// eventOverrides maps the configuration's event table onto the catalogue.
func eventOverrides(events map[string]config.Event) map[string]catalog.Override {
	out := make(map[string]catalog.Override, len(events))
	for code, e := range events {
		out[code] = catalog.Override{
			Enabled:         e.Enabled,
			State:           catalog.State(e.State),
			DeprecationDate: e.DeprecationDate.Time,
			InfoURL:         e.InfoURL,
		}
	}
	return out
}

// checkRegistryEvents rejects a registry granting an event code the catalogue
// does not know: a typo there would silently deny (or, for "*", widen) a
// grant. config cannot check it because it does not know the catalogue.
func checkRegistryEvents(r config.Registry, cat *catalog.Catalog) error {
	for asid, sys := range r.ASIDs {
		for key, codes := range map[string][]string{"publish_events": sys.PublishEvents, "subscribe_events": sys.SubscribeEvents} {
			for _, code := range codes {
				if _, ok := cat.Lookup(code); !ok && code != "*" {
					return fmt.Errorf("registry.asids.%s.%s: %q is not an EventType-1 event code", asid, key, code)
				}
			}
		}
	}
	return nil
}

// writeResource answers with a resource in the negotiated format.
func writeResource(w http.ResponseWriter, r *http.Request, status int, n *fhir.Node) {
	format := broker.NegotiateResponse(r)
	body, err := fhir.Marshal(n, format, true)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", format.ContentType())
	w.WriteHeader(status)
	_, _ = w.Write(body)
}
