package main

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"

	"github.com/ems-broker/ems/config"
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
// cap, clean request text, per-address rate limit.
func publicHandler(mux http.Handler, cfg config.Config, log *slog.Logger) http.Handler {
	sec := cfg.Security
	return identity.Harden(mux, identity.HardenOptions{
		MaxBodyBytes: int64(sec.MaxBodyBytes),
		PerClient:    identity.NewLimiter(float64(sec.RateLimit.PerClientIP), sec.RateLimit.ClientIPBurst, nil),
		Logger:       log,
	})
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
