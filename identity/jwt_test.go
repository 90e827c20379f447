package identity

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"
)

var (
	keysOnce sync.Once
	rsaKey   *rsa.PrivateKey
	rsaKey2  *rsa.PrivateKey
	ecKey    *ecdsa.PrivateKey
)

func testKeys(t testing.TB) {
	t.Helper()
	keysOnce.Do(func() {
		var err error
		if rsaKey, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
			panic(err)
		}
		if rsaKey2, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
			panic(err)
		}
		if ecKey, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
			panic(err)
		}
	})
}

var hsSecret = []byte("0123456789abcdef0123456789abcdef")

var testNow = time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)

func testVerifier(t testing.TB, allowUnsigned bool) *Verifier {
	t.Helper()
	testKeys(t)
	v, err := NewVerifier(VerifierOptions{
		Keys: []Key{
			{ID: "rsa", Alg: AlgRS256, Public: &rsaKey.PublicKey},
			{ID: "ec", Alg: AlgES256, Public: &ecKey.PublicKey},
			{ID: "hs", Alg: AlgHS256, Secret: hsSecret},
		},
		AllowUnsigned: allowUnsigned,
		RequireExpiry: true,
		Now:           func() time.Time { return testNow },
	})
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func claimsAt(exp time.Time) map[string]any {
	return map[string]any{"sub": "200000000001", "exp": exp.Unix(), "iat": testNow.Unix()}
}

func mustSign(t testing.TB, alg string, key any, claims, extra map[string]any) string {
	t.Helper()
	s, err := Sign(alg, key, claims, extra)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func rsaPublicPEM(k *rsa.PublicKey) []byte {
	der, _ := x509.MarshalPKIXPublicKey(k)
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
}

func TestVerify(t *testing.T) {
	v := testVerifier(t, false)
	vNone := testVerifier(t, true)
	valid := claimsAt(testNow.Add(5 * time.Minute))
	enc := base64.RawURLEncoding
	// The algorithm-confusion forgery: HS256 keyed with the RSA public
	// key's PEM, which an attacker can download.
	confused := mustSign(t, AlgHS256, rsaPublicPEM(&rsaKey.PublicKey), valid, map[string]any{"kid": "rsa"})
	confusedNoKid := mustSign(t, AlgHS256, rsaPublicPEM(&rsaKey.PublicKey), valid, nil)
	good := mustSign(t, AlgRS256, rsaKey, valid, map[string]any{"kid": "rsa"})
	parts := strings.Split(good, ".")

	tests := []struct {
		name  string
		v     *Verifier
		token string
		want  error // nil: accepted
	}{
		{"RS256 with kid", v, good, nil},
		{"RS256 without kid, only RSA key", v, mustSign(t, AlgRS256, rsaKey, valid, nil), nil},
		{"ES256", v, mustSign(t, AlgES256, ecKey, valid, map[string]any{"kid": "ec"}), nil},
		{"HS256", v, mustSign(t, AlgHS256, hsSecret, valid, map[string]any{"kid": "hs"}), nil},
		{"RS256 wrong key", v, mustSign(t, AlgRS256, rsaKey2, valid, map[string]any{"kid": "rsa"}), ErrSignature},
		{"HS256 wrong secret", v, mustSign(t, AlgHS256, []byte("another secret of thirty-two bytes!"), valid, map[string]any{"kid": "hs"}), ErrSignature},
		{"HS256 with RSA public key as secret, kid rsa", v, confused, ErrAlgorithm},
		{"HS256 with RSA public key as secret, no kid", v, confusedNoKid, ErrSignature},
		{"alg none refused", v, mustSign(t, AlgNone, nil, valid, nil), ErrUnsigned},
		{"alg None refused", v, mustSign(t, "None", nil, valid, nil), ErrUnsigned},
		{"alg none allowed", vNone, mustSign(t, AlgNone, nil, valid, nil), nil},
		{"alg none with a signature", vNone, mustSign(t, AlgNone, nil, valid, nil) + "AAAA", ErrMalformed},
		{"alg none still expires", vNone, mustSign(t, AlgNone, nil, claimsAt(testNow.Add(-time.Hour)), nil), ErrExpired},
		{"expired", v, mustSign(t, AlgRS256, rsaKey, claimsAt(testNow.Add(-2*time.Minute)), nil), ErrExpired},
		{"expired within skew", v, mustSign(t, AlgRS256, rsaKey, claimsAt(testNow.Add(-30*time.Second)), nil), nil},
		{"no exp", v, mustSign(t, AlgRS256, rsaKey, map[string]any{"sub": "x"}, nil), ErrMissingExpiry},
		{"nbf in the future", v, mustSign(t, AlgRS256, rsaKey, map[string]any{"exp": testNow.Add(time.Hour).Unix(), "nbf": testNow.Add(10 * time.Minute).Unix()}, nil), ErrNotYetValid},
		{"iat in the future", v, mustSign(t, AlgRS256, rsaKey, map[string]any{"exp": testNow.Add(time.Hour).Unix(), "iat": testNow.Add(10 * time.Minute).Unix()}, nil), ErrNotYetValid},
		{"exp huge", v, mustSign(t, AlgRS256, rsaKey, map[string]any{"exp": 1e300}, nil), ErrMalformed},
		{"exp string", v, mustSign(t, AlgRS256, rsaKey, map[string]any{"exp": "tomorrow"}, nil), ErrMalformed},
		{"unknown kid", v, mustSign(t, AlgRS256, rsaKey, valid, map[string]any{"kid": "nope"}), ErrUnknownKey},
		{"kid of another alg", v, mustSign(t, AlgES256, ecKey, valid, map[string]any{"kid": "rsa"}), ErrAlgorithm},
		{"unsupported alg", v, mustSign(t, AlgNone, nil, valid, map[string]any{"alg": "PS256"}), ErrAlgorithm},
		{"crit header", v, mustSign(t, AlgRS256, rsaKey, valid, map[string]any{"crit": []string{"exp"}}), ErrMalformed},
		{"two parts", v, parts[0] + "." + parts[1], ErrMalformed},
		{"four parts", v, good + ".x", ErrMalformed},
		{"not base64", v, "!!." + parts[1] + "." + parts[2], ErrMalformed},
		{"header not an object", v, enc.EncodeToString([]byte(`["RS256"]`)) + "." + parts[1] + "." + parts[2], ErrMalformed},
		{"duplicate claim", v, parts[0] + "." + enc.EncodeToString([]byte(`{"sub":"a","sub":"b","exp":9999999999}`)) + "." + parts[2], ErrMalformed},
		{"trailing data", v, parts[0] + "." + enc.EncodeToString([]byte(`{"exp":9999999999} {}`)) + "." + parts[2], ErrMalformed},
		{"oversized", v, strings.Repeat("a", MaxTokenBytes+1), ErrMalformed},
		{"tampered payload", v, parts[0] + "." + enc.EncodeToString([]byte(`{"sub":"200000000002","exp":9999999999}`)) + "." + parts[2], ErrSignature},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := tt.v.Verify(tt.token)
			switch {
			case tt.want == nil && err != nil:
				t.Fatalf("refused: %v", err)
			case tt.want != nil && !errors.Is(err, tt.want):
				t.Fatalf("got %v, want %v", err, tt.want)
			}
		})
	}
}

func TestAudience(t *testing.T) {
	testKeys(t)
	v, err := NewVerifier(VerifierOptions{Keys: []Key{{Alg: AlgRS256, Public: &rsaKey.PublicKey}}, Audiences: []string{"https://ems.example/STU3"}, Now: func() time.Time { return testNow }})
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		aud  any
		want error
	}{
		{"https://ems.example/STU3", nil},
		{[]string{"x", "https://ems.example/STU3"}, nil},
		{"https://other.example", ErrAudience},
		{nil, ErrAudience},
		{42, ErrMalformed},
	} {
		c := claimsAt(testNow.Add(time.Hour))
		if tt.aud != nil {
			c["aud"] = tt.aud
		}
		_, err := v.Verify(mustSign(t, AlgRS256, rsaKey, c, nil))
		if (tt.want == nil) != (err == nil) || (tt.want != nil && !errors.Is(err, tt.want)) {
			t.Errorf("aud %v: got %v, want %v", tt.aud, err, tt.want)
		}
	}
}

func TestNewVerifierRefusesMisfitKeys(t *testing.T) {
	testKeys(t)
	small, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	for name, k := range map[string]Key{
		"RS256 with EC key":     {Alg: AlgRS256, Public: &ecKey.PublicKey},
		"ES256 with RSA key":    {Alg: AlgES256, Public: &rsaKey.PublicKey},
		"HS256 short secret":    {Alg: AlgHS256, Secret: []byte("short")},
		"HS256 with public key": {Alg: AlgHS256, Secret: hsSecret, Public: &rsaKey.PublicKey},
		"RSA 1024":              {Alg: AlgRS256, Public: &small.PublicKey},
		"unknown alg":           {Alg: "none"},
	} {
		if _, err := NewVerifier(VerifierOptions{Keys: []Key{k}}); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if _, err := NewVerifier(VerifierOptions{Keys: []Key{{ID: "a", Alg: AlgHS256, Secret: hsSecret}, {ID: "a", Alg: AlgHS256, Secret: hsSecret}}}); err == nil {
		t.Error("duplicate kid accepted")
	}
}

func TestParsePublicKey(t *testing.T) {
	testKeys(t)
	k, err := ParsePublicKey(rsaPublicPEM(&rsaKey.PublicKey))
	if err != nil || !rsaKey.PublicKey.Equal(k) {
		t.Fatalf("PKIX: %v", err)
	}
	k, err = ParsePublicKey(pem.EncodeToMemory(&pem.Block{Type: "RSA PUBLIC KEY", Bytes: x509.MarshalPKCS1PublicKey(&rsaKey.PublicKey)}))
	if err != nil || !rsaKey.PublicKey.Equal(k) {
		t.Fatalf("PKCS1: %v", err)
	}
	priv := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(rsaKey)})
	if _, err := ParsePublicKey(priv); err == nil {
		t.Fatal("private key accepted as a public key")
	}
	if _, err := ParsePublicKey([]byte("not pem")); err == nil {
		t.Fatal("garbage accepted")
	}
}

// FuzzVerify: any input is refused or accepted without panicking, and
// nothing unsigned gets through a verifier that does not allow it.
func FuzzVerify(f *testing.F) {
	testKeys(f)
	valid := claimsAt(testNow.Add(time.Hour))
	f.Add(mustSign(f, AlgRS256, rsaKey, valid, map[string]any{"kid": "rsa"}))
	f.Add(mustSign(f, AlgES256, ecKey, valid, map[string]any{"kid": "ec"}))
	f.Add(mustSign(f, AlgHS256, hsSecret, valid, map[string]any{"kid": "hs"}))
	f.Add(mustSign(f, AlgNone, nil, valid, nil))
	f.Add("a.b.c")
	f.Add("eyJhbGciOiJub25lIn0.e30.")
	v := testVerifier(f, false)
	f.Fuzz(func(t *testing.T, raw string) {
		tok, err := v.Verify(raw)
		if err == nil && (tok == nil || tok.Alg == AlgNone) {
			t.Fatalf("accepted %q as %+v", raw, tok)
		}
	})
}
