package identity

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"math/big"
	"strings"
	"time"
)

// JWT algorithms this package verifies. AlgNone is an unsigned token: it
// proves nothing and is accepted only when Verifier.AllowUnsigned says so.
const (
	AlgRS256 = "RS256"
	AlgES256 = "ES256"
	AlgHS256 = "HS256"
	AlgNone  = "none"
)

// MaxTokenBytes bounds the Authorization value parsed as a JWT. Spine JWTs
// are a few hundred bytes; a larger token is an attack on the parser.
const MaxTokenBytes = 8 << 10

// Errors of Verify; wrapped with detail, test with errors.Is.
var (
	ErrMalformed     = errors.New("malformed JWT")
	ErrUnsigned      = errors.New("unsigned JWT (alg none) refused")
	ErrAlgorithm     = errors.New("JWT algorithm not accepted")
	ErrUnknownKey    = errors.New("no key for JWT")
	ErrSignature     = errors.New("JWT signature invalid")
	ErrExpired       = errors.New("JWT expired")
	ErrNotYetValid   = errors.New("JWT not yet valid")
	ErrAudience      = errors.New("JWT audience not accepted")
	ErrMissingExpiry = errors.New("JWT has no exp claim")
)

// Key is one verification key. Its Alg is fixed when configured: a token is
// checked only with a key of the algorithm the token names, so an RSA public
// key can never be used as an HMAC secret (the classic RS256→HS256 switch).
type Key struct {
	ID  string // kid; empty matches tokens without a kid
	Alg string // RS256, ES256 or HS256
	// Public is an *rsa.PublicKey (RS256) or *ecdsa.PublicKey on P-256
	// (ES256).
	Public crypto.PublicKey
	// Secret is the HS256 shared secret.
	Secret []byte
}

// check refuses a key whose material does not fit its algorithm.
func (k Key) check() error {
	switch k.Alg {
	case AlgRS256:
		pub, ok := k.Public.(*rsa.PublicKey)
		if !ok {
			return fmt.Errorf("key %q: RS256 needs an RSA public key", k.ID)
		}
		if pub.N.BitLen() < 2048 {
			return fmt.Errorf("key %q: RSA key of %d bits is too small (2048 minimum)", k.ID, pub.N.BitLen())
		}
	case AlgES256:
		pub, ok := k.Public.(*ecdsa.PublicKey)
		if !ok || pub.Curve != elliptic.P256() {
			return fmt.Errorf("key %q: ES256 needs an ECDSA P-256 public key", k.ID)
		}
	case AlgHS256:
		if len(k.Secret) < 32 {
			return fmt.Errorf("key %q: HS256 secret must be at least 32 bytes", k.ID)
		}
		if k.Public != nil {
			return fmt.Errorf("key %q: HS256 takes a secret, not a public key", k.ID)
		}
	default:
		return fmt.Errorf("key %q: algorithm %q is not RS256, ES256 or HS256", k.ID, k.Alg)
	}
	return nil
}

// VerifierOptions configure a Verifier.
type VerifierOptions struct {
	Keys []Key
	// AllowUnsigned accepts alg "none" tokens, as the national service's
	// integration environment sends. Anyone can then claim any identity
	// the headers agree with: never in production.
	AllowUnsigned bool
	// Audiences, when not empty, must contain the token's aud (or one of
	// its values).
	Audiences []string
	// MaxSkew tolerates clock differences on exp, nbf and iat; zero: 60s.
	MaxSkew time.Duration
	// RequireExpiry refuses tokens without exp (Spine Core requires it).
	RequireExpiry bool
	// Now; nil: time.Now.
	Now func() time.Time
}

// Verifier checks JWT signatures and validity times.
type Verifier struct {
	opts VerifierOptions
}

// NewVerifier checks every key and returns the verifier.
func NewVerifier(opts VerifierOptions) (*Verifier, error) {
	seen := map[string]bool{}
	for _, k := range opts.Keys {
		if err := k.check(); err != nil {
			return nil, err
		}
		if seen[k.ID] {
			return nil, fmt.Errorf("key id %q is used twice", k.ID)
		}
		seen[k.ID] = true
	}
	if opts.MaxSkew <= 0 {
		opts.MaxSkew = time.Minute
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	return &Verifier{opts: opts}, nil
}

// Token is a verified JWT.
type Token struct {
	Alg    string
	KID    string
	Claims Claims
}

// Claims are the JWT payload, each value as its raw JSON.
type Claims map[string]json.RawMessage

// String returns claim name as a string; ok is false when absent or not a
// JSON string.
func (c Claims) String(name string) (string, bool) {
	raw, present := c[name]
	if !present {
		return "", false
	}
	var s string
	if json.Unmarshal(raw, &s) != nil {
		return "", false
	}
	return s, true
}

// Has reports whether the claim is present.
func (c Claims) Has(name string) bool { _, ok := c[name]; return ok }

// Verify parses raw (header.payload.signature), checks the signature with
// the key the header selects, and the validity times.
func (v *Verifier) Verify(raw string) (*Token, error) {
	tok, signed, sig, err := parse(raw)
	if err != nil {
		return nil, err
	}
	if tok.Alg == AlgNone {
		if !v.opts.AllowUnsigned {
			return nil, ErrUnsigned
		}
		if len(sig) != 0 {
			return nil, fmt.Errorf("%w: alg none with a signature", ErrMalformed)
		}
	} else {
		key, err := v.key(tok.Alg, tok.KID)
		if err != nil {
			return nil, err
		}
		if err := verifySignature(key, signed, sig); err != nil {
			return nil, err
		}
	}
	if err := v.checkTimes(tok.Claims); err != nil {
		return nil, err
	}
	if err := v.checkAudience(tok.Claims); err != nil {
		return nil, err
	}
	return tok, nil
}

// key selects the verification key: by kid when the token has one, else the
// only key of the token's algorithm.
func (v *Verifier) key(alg, kid string) (Key, error) {
	switch alg {
	case AlgRS256, AlgES256, AlgHS256:
	default:
		return Key{}, fmt.Errorf("%w: %q", ErrAlgorithm, alg)
	}
	var found []Key
	for _, k := range v.opts.Keys {
		if kid != "" && k.ID != kid {
			continue
		}
		found = append(found, k)
	}
	if kid != "" {
		if len(found) == 0 {
			return Key{}, fmt.Errorf("%w: kid %q is not configured", ErrUnknownKey, kid)
		}
		if found[0].Alg != alg {
			// The token's alg must be the key's: otherwise an attacker
			// picks the algorithm that misuses the key.
			return Key{}, fmt.Errorf("%w: kid %q is a %s key, the token says %s", ErrAlgorithm, kid, found[0].Alg, alg)
		}
		return found[0], nil
	}
	var same []Key
	for _, k := range found {
		if k.Alg == alg {
			same = append(same, k)
		}
	}
	switch len(same) {
	case 0:
		return Key{}, fmt.Errorf("%w: no %s key is configured", ErrUnknownKey, alg)
	case 1:
		return same[0], nil
	}
	return Key{}, fmt.Errorf("%w: %d %s keys are configured; the token must name one with kid", ErrUnknownKey, len(same), alg)
}

func verifySignature(k Key, signed, sig []byte) error {
	sum := sha256.Sum256(signed)
	switch k.Alg {
	case AlgRS256:
		if err := rsa.VerifyPKCS1v15(k.Public.(*rsa.PublicKey), crypto.SHA256, sum[:], sig); err != nil {
			return ErrSignature
		}
	case AlgES256:
		// JWS ES256 signatures are r||s, 32 bytes each (RFC 7518 §3.4),
		// not ASN.1.
		if len(sig) != 64 {
			return fmt.Errorf("%w: ES256 signature of %d bytes", ErrSignature, len(sig))
		}
		r, s := new(big.Int).SetBytes(sig[:32]), new(big.Int).SetBytes(sig[32:])
		if !ecdsa.Verify(k.Public.(*ecdsa.PublicKey), sum[:], r, s) {
			return ErrSignature
		}
	case AlgHS256:
		mac := hmac.New(sha256.New, k.Secret)
		mac.Write(signed)
		if !hmac.Equal(mac.Sum(nil), sig) {
			return ErrSignature
		}
	default:
		return ErrAlgorithm
	}
	return nil
}

func (v *Verifier) checkTimes(c Claims) error {
	now := v.opts.Now()
	skew := v.opts.MaxSkew
	exp, hasExp, err := numericDate(c, "exp")
	if err != nil {
		return err
	}
	if !hasExp && v.opts.RequireExpiry {
		return ErrMissingExpiry
	}
	if hasExp && !now.Before(exp.Add(skew)) {
		return fmt.Errorf("%w at %s", ErrExpired, exp.UTC().Format(time.RFC3339))
	}
	nbf, hasNbf, err := numericDate(c, "nbf")
	if err != nil {
		return err
	}
	if hasNbf && now.Add(skew).Before(nbf) {
		return fmt.Errorf("%w until %s", ErrNotYetValid, nbf.UTC().Format(time.RFC3339))
	}
	iat, hasIat, err := numericDate(c, "iat")
	if err != nil {
		return err
	}
	if hasIat && now.Add(skew).Before(iat) {
		return fmt.Errorf("%w: issued in the future (%s)", ErrNotYetValid, iat.UTC().Format(time.RFC3339))
	}
	return nil
}

func (v *Verifier) checkAudience(c Claims) error {
	if len(v.opts.Audiences) == 0 {
		return nil
	}
	raw, ok := c["aud"]
	if !ok {
		return fmt.Errorf("%w: no aud claim", ErrAudience)
	}
	var auds []string
	var one string
	if json.Unmarshal(raw, &one) == nil {
		auds = []string{one}
	} else if json.Unmarshal(raw, &auds) != nil {
		return fmt.Errorf("%w: aud is neither a string nor a list of strings", ErrMalformed)
	}
	for _, a := range auds {
		for _, want := range v.opts.Audiences {
			if a == want {
				return nil
			}
		}
	}
	return fmt.Errorf("%w: %q", ErrAudience, auds)
}

// numericDate reads a NumericDate claim (seconds since the epoch, possibly
// fractional). Values beyond year 9999 or negative are malformed rather
// than silently wrapped.
func numericDate(c Claims, name string) (time.Time, bool, error) {
	raw, ok := c[name]
	if !ok {
		return time.Time{}, false, nil
	}
	var n json.Number
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	if err := dec.Decode(&n); err != nil {
		return time.Time{}, true, fmt.Errorf("%w: %s is not a number", ErrMalformed, name)
	}
	f, err := n.Float64()
	if err != nil || math.IsNaN(f) || f < 0 || f > 253402300799 {
		return time.Time{}, true, fmt.Errorf("%w: %s %s is out of range", ErrMalformed, name, n)
	}
	sec, frac := math.Modf(f)
	return time.Unix(int64(sec), int64(frac*1e9)), true, nil
}

// parse splits and decodes a compact JWS without checking the signature.
// It is the fuzzed surface: it must refuse, never panic, on any input.
func parse(raw string) (tok *Token, signed, sig []byte, err error) {
	if len(raw) > MaxTokenBytes {
		return nil, nil, nil, fmt.Errorf("%w: longer than %d bytes", ErrMalformed, MaxTokenBytes)
	}
	parts := strings.Split(raw, ".")
	if len(parts) != 3 {
		return nil, nil, nil, fmt.Errorf("%w: %d parts, want header.payload.signature", ErrMalformed, len(parts))
	}
	hb, err := b64(parts[0])
	if err != nil {
		return nil, nil, nil, fmt.Errorf("%w: header: %v", ErrMalformed, err)
	}
	pb, err := b64(parts[1])
	if err != nil {
		return nil, nil, nil, fmt.Errorf("%w: payload: %v", ErrMalformed, err)
	}
	sig, err = b64(parts[2])
	if err != nil {
		return nil, nil, nil, fmt.Errorf("%w: signature: %v", ErrMalformed, err)
	}
	header, err := object(hb)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("%w: header: %v", ErrMalformed, err)
	}
	claims, err := object(pb)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("%w: payload: %v", ErrMalformed, err)
	}
	alg, ok := header.String("alg")
	if !ok {
		return nil, nil, nil, fmt.Errorf("%w: header has no alg string", ErrMalformed)
	}
	if _, crit := header["crit"]; crit {
		// No extension is understood, so a critical one must be refused
		// (RFC 7515 §4.1.11).
		return nil, nil, nil, fmt.Errorf("%w: crit header parameters are not supported", ErrMalformed)
	}
	kid, _ := header.String("kid")
	if header.Has("kid") && kid == "" {
		return nil, nil, nil, fmt.Errorf("%w: kid is not a non-empty string", ErrMalformed)
	}
	if strings.EqualFold(alg, AlgNone) {
		alg = AlgNone // "None", "NONE": same meaning, same refusal
	}
	return &Token{Alg: alg, KID: kid, Claims: claims}, []byte(parts[0] + "." + parts[1]), sig, nil
}

// b64 decodes base64url without padding; padded input (some libraries add
// it) is accepted too.
func b64(s string) ([]byte, error) {
	return base64.RawURLEncoding.Strict().DecodeString(strings.TrimRight(s, "="))
}

// object decodes one JSON object with unique member names. Duplicate names
// are refused: two parsers reading different values for one claim is how
// identities get confused.
func object(b []byte) (Claims, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	t, err := dec.Token()
	if err != nil {
		return nil, err
	}
	if d, ok := t.(json.Delim); !ok || d != '{' {
		return nil, errors.New("not a JSON object")
	}
	out := Claims{}
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return nil, err
		}
		name, ok := t.(string)
		if !ok {
			return nil, errors.New("member name is not a string")
		}
		if _, dup := out[name]; dup {
			return nil, fmt.Errorf("member %q appears twice", name)
		}
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return nil, err
		}
		out[name] = v
	}
	if _, err := dec.Token(); err != nil {
		return nil, err
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("data after the JSON object")
	}
	return out, nil
}
