package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"

	bolt "go.etcd.io/bbolt"

	"github.com/ems-broker/ems/admin"
	"github.com/ems-broker/ems/broker"
	"github.com/ems-broker/ems/config"
	"github.com/ems-broker/ems/delivery/mesh"
	"github.com/ems-broker/ems/identity"
)

// newIdentity maps the registry and security settings onto the identity
// package: one Authenticator that both the publish and Subscription APIs
// ask (identity.PublishAuthorizer, identity.SubscriptionIdentifier).
func newIdentity(cfg config.Config, log *slog.Logger) (*identity.Authenticator, error) {
	sec := cfg.Security
	systems := make([]identity.System, 0, len(cfg.Registry.ASIDs))
	for asid, sys := range cfg.Registry.ASIDs {
		systems = append(systems, identity.System{
			ASID: asid, ODS: sys.ODS,
			PublishEvents: sys.PublishEvents, SubscribeEvents: sys.SubscribeEvents,
			SubscriptionKinds: sec.SubscriptionKinds[asid], Mailboxes: sys.Mailboxes,
		})
	}
	reg, err := identity.NewRegistry(systems)
	if err != nil {
		return nil, err
	}
	var keys []identity.Key
	for i, k := range sec.JWT.Keys {
		key := identity.Key{ID: k.KID, Alg: k.Alg}
		if k.PublicKeyFile != "" {
			pem, err := os.ReadFile(k.PublicKeyFile)
			if err != nil {
				return nil, fmt.Errorf("security.jwt.keys[%d].public_key_file: %w", i, err)
			}
			if key.Public, err = identity.ParsePublicKey(pem); err != nil {
				return nil, fmt.Errorf("security.jwt.keys[%d].public_key_file %s: %w", i, k.PublicKeyFile, err)
			}
		}
		if v := k.Secret.Value(); v != "" {
			key.Secret = []byte(v)
		}
		keys = append(keys, key)
	}
	verifier, err := identity.NewVerifier(identity.VerifierOptions{
		Keys: keys, AllowUnsigned: sec.JWT.AllowUnsigned, Audiences: sec.JWT.Audiences,
		MaxSkew: sec.JWT.MaxSkew, RequireExpiry: true,
	})
	if err != nil {
		return nil, fmt.Errorf("security.jwt: %w", err)
	}
	log.Info("caller identity", "require_identity", sec.RequireIdentity, "jwt_keys", len(keys),
		"allow_unsigned", sec.JWT.AllowUnsigned, "registered_asids", len(systems), "client_certificates", sec.TLS.ClientCAFile != "")
	if sec.JWT.AllowUnsigned {
		log.Warn("security.jwt.allow_unsigned is on: unsigned JWTs are accepted and prove nothing; never use this in production")
	}
	if !sec.RequireIdentity {
		log.Warn("security.require_identity is off: callers are identified by the fromASID header alone unless they send a JWT")
	}
	return identity.New(identity.Options{
		Registry:          reg,
		Verifier:          verifier,
		RequireIdentity:   sec.RequireIdentity,
		ServiceASIDs:      sec.ServiceASIDs,
		CertASIDs:         sec.TLS.CertASIDs,
		RequireClientCert: sec.TLS.RequireClientCert,
		Limiter:           identity.NewLimiter(float64(sec.RateLimit.PerCaller), sec.RateLimit.Burst, nil),
		Logger:            log,
	})
}

// publicHandler wraps the public mux with the hardening middleware: body
// cap, clean request text, per-address rate limit, and the audit of
// refusals and changes when audit is given (publicAudit).
func publicHandler(mux http.Handler, cfg config.Config, log *slog.Logger, audit ...func(identity.AuditRecord)) http.Handler {
	sec := cfg.Security
	opts := identity.HardenOptions{
		MaxBodyBytes: int64(sec.MaxBodyBytes),
		PerClient:    identity.NewLimiter(float64(sec.RateLimit.PerClientIP), sec.RateLimit.ClientIPBurst, nil),
		Logger:       log,
	}
	if len(audit) > 0 {
		opts.Audit = audit[0]
	}
	return identity.Harden(mux, opts)
}

// publicAudit records public-API refusals and subscription changes in the
// operator audit log (GET /admin/v1/audit?operator=asid:{ASID}), through a
// bounded queue so that neither a slow disk nor a flood of refusals slows
// the API. Accepted publishes are not recorded here: each is in the event
// stream with its publisher ASID and message id. stop flushes the queue.
func publicAudit(ctx context.Context, cfg config.Config, db *bolt.DB, log *slog.Logger) (record func(identity.AuditRecord), stop func(), err error) {
	store, err := admin.NewAuditLog(db, cfg.Admin.AuditRetention)
	if err != nil {
		return nil, nil, err
	}
	qctx, cancel := context.WithCancel(ctx)
	q, wait := identity.NewAuditQueue(qctx, 4096, func(recs []identity.AuditRecord) error {
		entries := make([]admin.Entry, 0, len(recs))
		for _, rec := range recs {
			detail, err := json.Marshal(rec)
			if err != nil {
				return err
			}
			who := "public:unidentified"
			if rec.ASID != "" {
				who = "asid:" + rec.ASID
			}
			entries = append(entries, admin.Entry{Time: rec.Time, Operator: who, Method: rec.Method, Path: rec.Path,
				Status: rec.Status, Remote: rec.Remote, After: detail})
		}
		return store.AppendAll(entries)
	}, log)
	record = func(rec identity.AuditRecord) {
		if rec.Path == broker.ProcessMessagePath && rec.Status < 300 {
			return
		}
		// Likewise a MESH acknowledgement: EMS_MESH_ACKS records each
		// with its mailbox and time, and there is one per delivery, so
		// auditing them again cost a bbolt write per message read.
		if rec.Status < 300 && rec.Method == http.MethodPut && strings.HasPrefix(rec.Path, mesh.APIPrefix+"/") &&
			strings.HasSuffix(rec.Path, "/status/acknowledged") {
			return
		}
		q.Add(rec)
	}
	return record, func() { cancel(); wait() }, nil
}

// publicListener serves TLS on l when security.tls names a certificate,
// verifying client certificates against client_ca_file when given.
func publicListener(l net.Listener, cfg config.Config) (net.Listener, error) {
	t := cfg.Security.TLS
	if t.CertFile == "" {
		return l, nil
	}
	cert, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("security.tls: loading cert_file/key_file: %w", err)
	}
	tc := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	if t.ClientCAFile != "" {
		pem, err := os.ReadFile(t.ClientCAFile)
		if err != nil {
			return nil, fmt.Errorf("security.tls.client_ca_file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("security.tls.client_ca_file %s: no PEM certificate found", t.ClientCAFile)
		}
		tc.ClientCAs = pool
		tc.ClientAuth = tls.VerifyClientCertIfGiven
		if t.RequireClientCert {
			tc.ClientAuth = tls.RequireAndVerifyClientCert
		}
	}
	return tls.NewListener(l, tc), nil
}

// logReplaceAttr masks NHS numbers in every log record.
var logReplaceAttr = identity.MaskNHSNumbers
