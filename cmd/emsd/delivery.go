package main

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	bolt "go.etcd.io/bbolt"

	"github.com/ems-broker/ems/admin"
	"github.com/ems-broker/ems/config"
	"github.com/ems-broker/ems/delivery"
	"github.com/ems-broker/ems/delivery/mesh"
	"github.com/ems-broker/ems/fhir/catalog"
	"github.com/ems-broker/ems/pace"
)

// startDelivery maps the configuration onto the delivery service, mounts
// the MESH inbox API on the public mux and the delivery admin routes on the
// operator API (when it is enabled), and starts the pipeline. The returned
// stop waits for in-flight attempts.
func startDelivery(ctx context.Context, cfg config.Config, js, meshJS jetstream.JetStream, db *bolt.DB, subs *subscriptionAPI,
	cat *catalog.Catalog, reg prometheus.Registerer, public *http.ServeMux, adminSrv *admin.Server, facts delivery.FactsCompleter,
	gate *pace.Gate, log *slog.Logger) (func(), error) {
	d := cfg.Delivery
	matcher, err := subs.svc.Matcher()
	if err != nil {
		return nil, fmt.Errorf("delivery: %w", err)
	}
	passwords := map[string]string{}
	for mb, m := range d.Mesh.Mailboxes {
		passwords[mb] = m.Password.Value()
	}
	var secrets []string
	for _, s := range d.Webhook.SigningSecrets {
		secrets = append(secrets, s.Value())
	}
	var allow []netip.Prefix
	for _, n := range d.Webhook.AllowNetworks {
		p, err := netip.ParsePrefix(n)
		if err != nil {
			return nil, fmt.Errorf("delivery.webhook.allow_networks: %w", err)
		}
		allow = append(allow, p)
	}
	policy := func(endpoint string) delivery.Policy {
		r := d.Retry
		if o, ok := d.Endpoints[endpoint]; ok {
			r = o.Retry.Merged(d.Retry)
		}
		return delivery.Policy{
			Backoff:     delivery.Backoff{Initial: r.Initial, Max: r.Max, Multiplier: float64(r.Multiplier)},
			MaxAttempts: r.MaxAttempts, MaxAge: r.MaxAge, RetryAfterMax: r.RetryAfterMax,
		}
	}
	concurrency := func(endpoint string) int {
		if o, ok := d.Endpoints[endpoint]; ok && o.Concurrency > 0 {
			return o.Concurrency
		}
		return d.Concurrency
	}
	svc, err := delivery.New(ctx, delivery.Options{
		JS: js, MeshJS: meshJS, DB: db, EventsStream: cfg.NATS.EventsStream.Name,
		Matcher: matcher, Facts: facts, Subscriptions: subs.svc.Store(), Catalog: cat,
		Mesh: delivery.MeshOptions{SharedKey: d.Mesh.SharedKey.Value(), Passwords: passwords,
			ChunkSize: int(d.Mesh.ChunkSize), MaxSkew: d.Mesh.MaxClockSkew, Retention: d.Mesh.InboxRetention, From: d.Mesh.From},
		Webhook:     delivery.SenderOptions{Timeout: d.Webhook.Timeout, Secrets: secrets, Allow: allow, MaxRedirects: d.Webhook.MaxRedirects},
		Policy:      policy,
		Concurrency: concurrency,
		Breaker: delivery.BreakerConfig{Failures: d.Breaker.Failures, Cooldown: d.Breaker.Cooldown, MaxCooldown: d.Breaker.MaxCooldown,
			Window: d.Breaker.Window, FailurePercent: d.Breaker.FailurePercent},
		FanoutWorkers: d.FanoutWorkers,
		Pace:          gate,
		// Acknowledgements need outlive only the events they could repeat.
		EventRetention: cfg.NATS.EventsStream.Retention,
		Replicas:       cfg.NATS.EventsStream.Replicas,
		Lanes:          deliveryLanes(cfg), // one node per endpoint lane in a cluster (docs/cluster.md)
		Registerer:     reg,
		Logger:         log,
	})
	if err != nil {
		return nil, err
	}
	// MESH clients poll; they do not wait on a publisher, so the inbox API
	// gives way to publishing like the fan-out does.
	public.Handle(mesh.APIPrefix+"/", gate.BackgroundHandler(svc.Mesh))
	if adminSrv != nil {
		for _, p := range []string{"/deliveries", "/deliveries/", "/dead-letters", "/dead-letters/", "/breakers", "/breakers/"} {
			adminSrv.Handle(delivery.AdminPrefix+p, svc.Admin)
		}
	}
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := svc.Run(runCtx); err != nil {
			log.Error("delivery stopped", "err", err)
		}
	}()
	return func() { cancel(); <-done }, nil
}
