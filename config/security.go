package config

import (
	"fmt"
	"slices"
	"time"
)

// Security configures who may call the public FHIR API and how hard it is
// to abuse: caller identity (Spine headers, JWT, client certificates),
// per-caller rate limits and the global body cap.
type Security struct {
	// RequireIdentity makes fromASID, toASID, InteractionID and a verified
	// JWT mandatory on publish and Subscription calls, as Spine does. Off,
	// fromASID alone identifies a caller (development, or behind a gateway
	// that authenticates); a JWT that is sent is verified either way.
	RequireIdentity bool `yaml:"require_identity"`
	// ServiceASIDs are this service's own ASIDs; a toASID header must be
	// one of them. Empty: toASID is not checked.
	ServiceASIDs []string    `yaml:"service_asids"`
	JWT          SecurityJWT `yaml:"jwt"`
	TLS          SecurityTLS `yaml:"tls"`
	RateLimit    RateLimit   `yaml:"rate_limit"`
	// MaxBodyBytes caps every request body on the public listener, before
	// any route's own (smaller) limit.
	MaxBodyBytes ByteSize `yaml:"max_body_bytes"`
	// SubscriptionKinds restricts registered ASIDs to explicit and/or
	// generic subscriptions (the NEMS_SUBS_TYPE category bag); an ASID not
	// listed may create both.
	SubscriptionKinds map[string][]string `yaml:"subscription_kinds"`
}

// SecurityJWT configures JWT verification.
type SecurityJWT struct {
	Keys []JWTKey `yaml:"keys"`
	// AllowUnsigned accepts alg "none" tokens, which the national
	// integration environment uses. Anyone can then claim any registered
	// identity: never enable it in production.
	AllowUnsigned bool `yaml:"allow_unsigned"`
	// Audiences, when set, must contain the token's aud.
	Audiences []string `yaml:"audiences"`
	// MaxSkew tolerates clock differences on exp, nbf and iat.
	MaxSkew time.Duration `yaml:"max_skew"`
}

// JWTKey is one verification key, selected by the token's kid.
type JWTKey struct {
	KID string `yaml:"kid"`
	// Alg is RS256, ES256 or HS256; a token naming another algorithm is
	// refused whatever its kid.
	Alg string `yaml:"alg"`
	// PublicKeyFile is a PEM public key or certificate (RS256, ES256).
	PublicKeyFile string `yaml:"public_key_file"`
	// Secret is the HS256 shared secret (at least 32 bytes).
	Secret Secret `yaml:"secret"`
}

// SecurityTLS serves the public API over TLS, optionally requiring client
// certificates.
type SecurityTLS struct {
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
	// ClientCAFile verifies client certificates.
	ClientCAFile string `yaml:"client_ca_file"`
	// RequireClientCert refuses connections without a certificate from
	// the client CA, and calls whose certificate maps to no ASID.
	RequireClientCert bool `yaml:"require_client_cert"`
	// CertASIDs maps a certificate's URI or DNS SAN, subject CN or full
	// subject to the ASID it is issued to; fromASID must agree.
	CertASIDs map[string]string `yaml:"cert_asids"`
}

// RateLimit configures token buckets on the public API (0 disables one).
type RateLimit struct {
	// PerCaller is requests per second per authenticated ASID.
	PerCaller int `yaml:"per_caller"`
	Burst     int `yaml:"burst"`
	// PerClientIP is requests per second per remote address, applied
	// before authentication (covers the MESH API and unauthenticated
	// floods).
	PerClientIP   int `yaml:"per_client_ip"`
	ClientIPBurst int `yaml:"client_ip_burst"`
}

// DefaultSecurity is the default: identity from fromASID (require_identity
// off, for compatibility with existing deployments), no rate limits, a
// 4 MiB body cap.
func DefaultSecurity() Security {
	return Security{
		JWT:          SecurityJWT{MaxSkew: time.Minute},
		MaxBodyBytes: 4 << 20,
	}
}

func (s Security) validate(v *validator, reg Registry) {
	for i, a := range s.ServiceASIDs {
		if !asidRE.MatchString(a) {
			v.add(fmt.Sprintf("security.service_asids[%d]", i), "an ASID is 1 to 12 digits, got %q", a)
		}
	}
	kids := map[string]bool{}
	for i, k := range s.JWT.Keys {
		field := fmt.Sprintf("security.jwt.keys[%d]", i)
		if kids[k.KID] {
			v.add(field+".kid", "%q is used twice", k.KID)
		}
		kids[k.KID] = true
		switch k.Alg {
		case "RS256", "ES256":
			if k.PublicKeyFile == "" {
				v.add(field+".public_key_file", "is required for %s", k.Alg)
			}
			if k.Secret.IsSet() {
				v.add(field+".secret", "is for HS256 only; %s verifies with a public key", k.Alg)
			}
		case "HS256":
			if len(k.Secret.Value()) < 32 {
				v.add(field+".secret", "an HS256 secret of at least 32 bytes is required")
			}
			if k.PublicKeyFile != "" {
				v.add(field+".public_key_file", "HS256 takes a secret, never a public key (that is the algorithm-confusion attack)")
			}
		default:
			v.add(field+".alg", `must be one of "RS256", "ES256", "HS256", got %q`, k.Alg)
		}
	}
	if s.JWT.MaxSkew < 0 || s.JWT.MaxSkew > 10*time.Minute {
		v.add("security.jwt.max_skew", "must be between 0 and 10m, got %s", formatDuration(s.JWT.MaxSkew))
	}
	if s.RequireIdentity && len(s.JWT.Keys) == 0 && !s.JWT.AllowUnsigned {
		v.add("security.require_identity", "needs security.jwt.keys (or jwt.allow_unsigned for an integration environment)")
	}
	t := s.TLS
	if (t.CertFile == "") != (t.KeyFile == "") {
		v.add("security.tls", "cert_file and key_file go together")
	}
	if t.ClientCAFile != "" && t.CertFile == "" {
		v.add("security.tls.client_ca_file", "client certificates need TLS: set cert_file and key_file")
	}
	if t.RequireClientCert && t.ClientCAFile == "" {
		v.add("security.tls.require_client_cert", "needs client_ca_file")
	}
	for _, name := range sortedKeys(t.CertASIDs) {
		if _, ok := reg.ASIDs[t.CertASIDs[name]]; !ok {
			v.add("security.tls.cert_asids."+name, "ASID %q is not in registry.asids", t.CertASIDs[name])
		}
	}
	r := s.RateLimit
	if r.PerCaller < 0 || r.PerClientIP < 0 || r.Burst < 0 || r.ClientIPBurst < 0 {
		v.add("security.rate_limit", "rates and bursts must not be negative")
	}
	v.positiveSize("security.max_body_bytes", s.MaxBodyBytes)
	for _, asid := range sortedKeys(s.SubscriptionKinds) {
		field := "security.subscription_kinds." + asid
		if _, ok := reg.ASIDs[asid]; !ok {
			v.add(field, "ASID %s is not in registry.asids", asid)
		}
		for i, k := range s.SubscriptionKinds[asid] {
			if !slices.Contains([]string{"explicit", "generic"}, k) {
				v.add(fmt.Sprintf("%s[%d]", field, i), `must be "explicit" or "generic", got %q`, k)
			}
		}
	}
}
