package mesh

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"hash"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Authenticator checks NHSMESH Authorization headers.
type Authenticator struct {
	sharedKey []byte
	passwords map[string]string // mailbox → password
	skew      time.Duration
	now       func() time.Time

	mu    sync.Mutex
	seen  map[string]time.Time // mailbox:nonce:count → when it may be forgotten
	swept time.Time
	// macs reuses keyed HMACs: keying one (two SHA-256 blocks) cost more
	// than the rest of a check.
	macs sync.Pool
}

// AuthOptions configure an Authenticator.
type AuthOptions struct {
	SharedKey string
	// Passwords maps each mailbox to its password.
	Passwords map[string]string
	// MaxSkew bounds how far the token's timestamp may be from now
	// (default 2 h, which is what real MESH tolerates).
	MaxSkew time.Duration
	Now     func() time.Time
}

// NewAuthenticator returns an Authenticator.
func NewAuthenticator(o AuthOptions) *Authenticator {
	a := &Authenticator{sharedKey: []byte(o.SharedKey), passwords: o.Passwords, skew: o.MaxSkew, now: o.Now,
		seen: map[string]time.Time{}}
	if a.skew <= 0 {
		a.skew = 2 * time.Hour
	}
	if a.now == nil {
		a.now = time.Now
	}
	a.macs.New = func() any { return hmac.New(sha256.New, a.sharedKey) }
	return a
}

// Token builds an Authorization header value: the client side, for tests
// and tools.
func Token(sharedKey, mailbox, password, nonce string, count int, at time.Time) string {
	ts := at.UTC().Format("200601021504")
	c := strconv.Itoa(count)
	mac := hmac.New(sha256.New, []byte(sharedKey))
	mac.Write([]byte(mailbox + ":" + nonce + ":" + c + ":" + password + ":" + ts))
	return "NHSMESH " + mailbox + ":" + nonce + ":" + c + ":" + ts + ":" + hex.EncodeToString(mac.Sum(nil))
}

var (
	errAuthMissing   = errors.New("no NHSMESH authorization")
	errAuthMalformed = errors.New("malformed NHSMESH authorization")
	errAuthMailbox   = errors.New("token mailbox is not the path mailbox")
	errAuthUnknown   = errors.New("unknown mailbox")
	errAuthHMAC      = errors.New("bad HMAC")
	errAuthSkew      = errors.New("timestamp outside the allowed skew")
	errAuthReplay    = errors.New("nonce and count already used")
)

// Check verifies header for mailbox.
func (a *Authenticator) Check(header, mailbox string) error {
	rest, ok := strings.CutPrefix(header, "NHSMESH ")
	if !ok {
		return errAuthMissing
	}
	parts := strings.Split(rest, ":")
	if len(parts) != 5 {
		return errAuthMalformed
	}
	mb, nonce, count, ts, mac := parts[0], parts[1], parts[2], parts[3], parts[4]
	if _, err := strconv.ParseUint(count, 10, 32); err != nil || nonce == "" {
		return errAuthMalformed
	}
	if mb != mailbox {
		return errAuthMailbox
	}
	pw, ok := a.passwords[mb]
	if !ok {
		return errAuthUnknown
	}
	var sum, got [sha256.Size]byte
	msg := make([]byte, 0, 128)
	for _, p := range [...]string{mb, ":", nonce, ":", count, ":", pw, ":", ts} {
		msg = append(msg, p...)
	}
	h := a.macs.Get().(hash.Hash)
	h.Reset()
	h.Write(msg)
	h.Sum(sum[:0])
	a.macs.Put(h)
	if len(mac) != hex.EncodedLen(len(got)) {
		return errAuthHMAC
	}
	if _, err := hex.Decode(got[:], []byte(mac)); err != nil || !hmac.Equal(got[:], sum[:]) {
		return errAuthHMAC
	}
	at, err := time.Parse("200601021504", ts)
	if err != nil {
		return errAuthMalformed
	}
	now := a.now()
	if d := now.Sub(at); d > a.skew || d < -a.skew {
		return errAuthSkew
	}
	// A (nonce, count) pair is remembered for as long as its timestamp is
	// acceptable: after that the skew check rejects it anyway.
	key := mb + ":" + nonce + ":" + count
	a.mu.Lock()
	defer a.mu.Unlock()
	// Forget expired pairs now and then, not on every call: the sweep
	// is linear in the pairs remembered.
	if now.Sub(a.swept) > time.Minute {
		for k, until := range a.seen {
			if now.After(until) {
				delete(a.seen, k)
			}
		}
		a.swept = now
	}
	if until, dup := a.seen[key]; dup && !now.After(until) {
		return errAuthReplay
	}
	a.seen[key] = at.Add(a.skew + time.Minute)
	return nil
}
