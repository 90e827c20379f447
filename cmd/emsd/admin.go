package main

import (
	"fmt"
	"net/http"
	"net/http/pprof"

	bolt "go.etcd.io/bbolt"

	"github.com/ems-broker/ems/admin"
	"github.com/ems-broker/ems/config"
)

// newAdmin builds the operator API, or returns nil when no operator token
// is configured: an admin API nobody can log in to is better not listening.
func newAdmin(cfg config.Config, db *bolt.DB) (*admin.Server, error) {
	var tokens []admin.Token
	if cfg.AdminToken.IsSet() {
		tokens = append(tokens, admin.Token{Name: "admin", Value: cfg.AdminToken.Value()})
	}
	for _, t := range cfg.Admin.Tokens {
		tokens = append(tokens, admin.Token{Name: t.Name, Value: t.Token.Value()})
	}
	if len(tokens) == 0 || cfg.AdminListen == "" {
		return nil, nil
	}
	audit, err := admin.NewAuditLog(db, cfg.Admin.AuditRetention)
	if err != nil {
		return nil, err
	}
	srv, err := admin.New(admin.Options{Tokens: tokens, Audit: audit})
	if err != nil {
		return nil, fmt.Errorf("admin: %w", err)
	}
	// Profiles are for operators only, so they live behind the token.
	srv.Handle("GET /debug/pprof/", http.HandlerFunc(pprof.Index))
	srv.Handle("GET /debug/pprof/cmdline", http.HandlerFunc(pprof.Cmdline))
	srv.Handle("GET /debug/pprof/profile", http.HandlerFunc(pprof.Profile))
	srv.Handle("GET /debug/pprof/symbol", http.HandlerFunc(pprof.Symbol))
	srv.Handle("GET /debug/pprof/trace", http.HandlerFunc(pprof.Trace))
	return srv, nil
}

// operatorActor names the operator of an admin request in subscription
// histories.
func operatorActor(r *http.Request) string { return "operator:" + admin.Operator(r.Context()) }
