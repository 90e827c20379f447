package main

import (
	"fmt"
	"log/slog"

	bolt "go.etcd.io/bbolt"

	"github.com/ems-broker/ems/config"
	"github.com/ems-broker/ems/fhir/catalog"
	"github.com/ems-broker/ems/subscription"
)

// subscriptionAPI is the Subscription resource API and the service behind it.
type subscriptionAPI struct {
	handler *subscription.Handler
	svc     *subscription.Service
}

// newSubscriptionAPI maps the configuration onto the subscription package.
func newSubscriptionAPI(cfg config.Config, db *bolt.DB, cat *catalog.Catalog, log *slog.Logger) (*subscriptionAPI, error) {
	entries := make(map[string]subscription.RegistryEntry, len(cfg.Registry.ASIDs))
	for asid, sys := range cfg.Registry.ASIDs {
		entries[asid] = subscription.RegistryEntry{ODS: sys.ODS, Mailboxes: sys.Mailboxes, SubscribeEvents: sys.SubscribeEvents}
	}
	ident, err := subscription.NewRegistryIdentifier(entries)
	if err != nil {
		return nil, fmt.Errorf("registry: %w", err)
	}
	review, err := reviewPolicy(cfg.Subscriptions.AutoActivate)
	if err != nil {
		return nil, err
	}
	h, err := subscription.NewHandler(subscription.Options{
		DB:         db,
		Catalog:    cat,
		Identifier: ident,
		Logger:     log,
		Policy: subscription.Policy{
			AllowDuplicates: cfg.Subscriptions.Duplicates == config.DuplicatesAllow,
			// Plain-http hooks only where delivery is configured for them.
			AllowHTTPWebhooks: cfg.Delivery.Webhook.AllowHTTP,
			Review:            review,
		},
	})
	if err != nil {
		return nil, fmt.Errorf("subscription API: %w", err)
	}
	return &subscriptionAPI{handler: h, svc: h.Service()}, nil
}

// reviewPolicy turns the configuration's auto-activation rules into the
// subscriptions that wait for an operator. With no rules every subscription
// is active at creation, as NEMS does; with rules, only what they match is.
func reviewPolicy(rules []config.AutoActivate) (map[string][]subscription.Kind, error) {
	if len(rules) == 0 {
		return nil, nil
	}
	auto := map[subscription.Kind]bool{}
	for _, r := range rules {
		if r.ODS != "*" {
			// TODO(subscription policy): per-organisation rules need a
			// predicate in subscription.Policy.
			return nil, fmt.Errorf("subscriptions.auto_activate: ods %q: only \"*\" is supported so far", r.ODS)
		}
		for _, k := range []subscription.Kind{subscription.Explicit, subscription.Generic} {
			if r.Kind == "*" || r.Kind == k.String() {
				auto[k] = true
			}
		}
	}
	var review []subscription.Kind
	for _, k := range []subscription.Kind{subscription.Explicit, subscription.Generic} {
		if !auto[k] {
			review = append(review, k)
		}
	}
	return map[string][]subscription.Kind{"*": review}, nil
}
