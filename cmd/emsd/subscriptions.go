package main

import (
	"fmt"
	"log/slog"

	bolt "go.etcd.io/bbolt"

	"github.com/ems-broker/ems/config"
	"github.com/ems-broker/ems/fhir/catalog"
	"github.com/ems-broker/ems/identity"
	"github.com/ems-broker/ems/subscription"
)

// subscriptionAPI is the Subscription resource API and the service behind it.
type subscriptionAPI struct {
	handler *subscription.Handler
	svc     *subscription.Service
}

// newSubscriptionAPI maps the configuration onto the subscription package.
// store, when not nil, is the store to serve (cluster mode: it writes
// through the change log); otherwise one is opened in db.
func newSubscriptionAPI(cfg config.Config, db *bolt.DB, store *subscription.Store, cat *catalog.Catalog, auth *identity.Authenticator, log *slog.Logger) (*subscriptionAPI, error) {
	ident := identity.SubscriptionIdentifier{Auth: auth}
	h, err := subscription.NewHandler(subscription.Options{
		DB:         db,
		Store:      store,
		Catalog:    cat,
		Identifier: ident,
		Logger:     log,
		Policy: subscription.Policy{
			AllowDuplicates: cfg.Subscriptions.Duplicates == config.DuplicatesAllow,
			// Plain-http hooks only where delivery is configured for them.
			AllowHTTPWebhooks: cfg.Delivery.Webhook.AllowHTTP,
			AutoActivate:      autoActivation(cfg.Subscriptions.AutoActivate),
		},
	})
	if err != nil {
		return nil, fmt.Errorf("subscription API: %w", err)
	}
	return &subscriptionAPI{handler: h, svc: h.Service()}, nil
}

// autoActivation maps the configuration's auto-activation rules onto the
// subscription policy. With no rules every subscription is active at
// creation, as NEMS does (nil); with rules, only what they match is, and
// everything else waits in requested for an operator.
func autoActivation(rules []config.AutoActivate) map[string][]subscription.Kind {
	if len(rules) == 0 {
		return nil
	}
	out := map[string][]subscription.Kind{}
	for _, r := range rules {
		for _, k := range []subscription.Kind{subscription.Explicit, subscription.Generic} {
			if r.Kind == "*" || r.Kind == k.String() {
				out[r.ODS] = append(out[r.ODS], k)
			}
		}
	}
	return out
}
