package identity

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
)

// Sign builds a compact JWT: the client side of Verify, for tests, tools
// and clients of this service. key is an *rsa.PrivateKey (RS256), an
// *ecdsa.PrivateKey on P-256 (ES256), a []byte secret (HS256), or nil
// (alg none, empty signature). Header members other than alg and typ may
// be given in extra (kid ...).
func Sign(alg string, key any, claims map[string]any, extra map[string]any) (string, error) {
	header := map[string]any{"alg": alg, "typ": "JWT"}
	for k, v := range extra {
		header[k] = v
	}
	hb, err := json.Marshal(header)
	if err != nil {
		return "", fmt.Errorf("encoding JWT header: %w", err)
	}
	pb, err := json.Marshal(claims)
	if err != nil {
		return "", fmt.Errorf("encoding JWT claims: %w", err)
	}
	enc := base64.RawURLEncoding
	signed := enc.EncodeToString(hb) + "." + enc.EncodeToString(pb)
	sum := sha256.Sum256([]byte(signed))
	var sig []byte
	switch k := key.(type) {
	case nil:
	case *rsa.PrivateKey:
		if sig, err = rsa.SignPKCS1v15(rand.Reader, k, crypto.SHA256, sum[:]); err != nil {
			return "", fmt.Errorf("signing JWT: %w", err)
		}
	case *ecdsa.PrivateKey:
		r, s, err := ecdsa.Sign(rand.Reader, k, sum[:])
		if err != nil {
			return "", fmt.Errorf("signing JWT: %w", err)
		}
		sig = make([]byte, 64)
		r.FillBytes(sig[:32])
		s.FillBytes(sig[32:])
	case []byte:
		mac := hmac.New(sha256.New, k)
		mac.Write([]byte(signed))
		sig = mac.Sum(nil)
	default:
		return "", fmt.Errorf("signing JWT: unsupported key type %T", key)
	}
	return signed + "." + enc.EncodeToString(sig), nil
}
