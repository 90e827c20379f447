package config

import (
	"errors"
	"strings"
	"testing"
)

func TestSecurityValidation(t *testing.T) {
	base := "registry:\n  asids:\n    \"200000000001\":\n      ods: RR8\n"
	for _, tt := range []struct {
		name, yaml, field string
	}{
		{"HS256 short secret", "security:\n  jwt:\n    keys:\n      - {kid: a, alg: HS256, secret: short}\n", "security.jwt.keys[0].secret"},
		{"HS256 with a public key file", "security:\n  jwt:\n    keys:\n      - {kid: a, alg: HS256, secret: 0123456789abcdef0123456789abcdef, public_key_file: /k.pem}\n", "security.jwt.keys[0].public_key_file"},
		{"RS256 without a key file", "security:\n  jwt:\n    keys:\n      - {kid: a, alg: RS256}\n", "security.jwt.keys[0].public_key_file"},
		{"alg none as a key", "security:\n  jwt:\n    keys:\n      - {kid: a, alg: none}\n", "security.jwt.keys[0].alg"},
		{"duplicate kid", "security:\n  jwt:\n    keys:\n      - {kid: a, alg: RS256, public_key_file: /a}\n      - {kid: a, alg: ES256, public_key_file: /b}\n", "security.jwt.keys[1].kid"},
		{"identity required without keys", "security:\n  require_identity: true\n", "security.require_identity"},
		{"client CA without TLS", "security:\n  tls:\n    client_ca_file: /ca.pem\n", "security.tls.client_ca_file"},
		{"client certificate required without CA", "security:\n  tls:\n    cert_file: /c\n    key_file: /k\n    require_client_cert: true\n", "security.tls.require_client_cert"},
		{"certificate of an unregistered ASID", "security:\n  tls:\n    cert_asids:\n      CN=x: \"200000000009\"\n", "security.tls.cert_asids.CN=x"},
		{"kinds of an unregistered ASID", "security:\n  subscription_kinds:\n    \"200000000009\": [explicit]\n", "security.subscription_kinds.200000000009"},
		{"unknown kind", "security:\n  subscription_kinds:\n    \"200000000001\": [all]\n", "security.subscription_kinds.200000000001[0]"},
		{"skew too large", "security:\n  jwt:\n    max_skew: 1h\n", "security.jwt.max_skew"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Load([]byte(base + tt.yaml))
			var fe *FieldError
			if err == nil || !errors.As(err, &fe) || !strings.Contains(err.Error(), tt.field+":") {
				t.Fatalf("got %v, want an error on %s", err, tt.field)
			}
		})
	}
	c, err := Load([]byte(base + "security:\n  require_identity: true\n  jwt:\n    allow_unsigned: true\n"))
	if err != nil || !c.Security.RequireIdentity {
		t.Fatalf("integration-environment setup refused: %v", err)
	}
	c, err = Load([]byte(base + "security:\n  jwt:\n    keys:\n      - {kid: h, alg: HS256, secret: inline:0123456789abcdef0123456789abcdef}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(c.Redacted(), "0123456789abcdef") {
		t.Error("the HS256 secret is printed")
	}
}
