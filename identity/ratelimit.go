package identity

import (
	"math"
	"net/http"
	"strconv"
	"sync"
	"time"
)

// Limiter is a token bucket per key: Rate tokens a second up to Burst. It
// forgets idle keys so that a flood of distinct keys cannot grow it without
// bound.
type Limiter struct {
	rate  float64
	burst float64
	now   func() time.Time

	mu      sync.Mutex
	buckets map[string]*bucket
	swept   time.Time
}

type bucket struct {
	tokens float64
	at     time.Time
}

// maxBuckets caps the keys remembered; past it the full buckets (callers
// idle long enough to have refilled) are dropped first.
const maxBuckets = 100_000

// NewLimiter returns a limiter; rate <= 0 returns nil (unlimited), which
// every method accepts.
func NewLimiter(rate float64, burst int, now func() time.Time) *Limiter {
	if rate <= 0 {
		return nil
	}
	if burst < 1 {
		burst = int(math.Ceil(rate))
	}
	if now == nil {
		now = time.Now
	}
	return &Limiter{rate: rate, burst: float64(burst), now: now, buckets: map[string]*bucket{}}
}

// Allow takes one token from key's bucket. When it is empty, it returns
// false and how long until a token is back.
func (l *Limiter) Allow(key string) (bool, time.Duration) {
	if l == nil {
		return true, 0
	}
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	b, ok := l.buckets[key]
	if !ok {
		if len(l.buckets) >= maxBuckets {
			l.sweep(now)
		}
		b = &bucket{tokens: l.burst, at: now}
		l.buckets[key] = b
	}
	b.tokens = math.Min(l.burst, b.tokens+now.Sub(b.at).Seconds()*l.rate)
	b.at = now
	if b.tokens >= 1 {
		b.tokens--
		return true, 0
	}
	wait := time.Duration((1 - b.tokens) / l.rate * float64(time.Second))
	return false, wait
}

// sweep drops buckets that have refilled: forgetting them changes nothing.
// If none has, it drops everything rather than grow: a limit briefly
// forgotten under a key flood is better than memory exhaustion.
func (l *Limiter) sweep(now time.Time) {
	for k, b := range l.buckets {
		if b.tokens+now.Sub(b.at).Seconds()*l.rate >= l.burst {
			delete(l.buckets, k)
		}
	}
	if len(l.buckets) >= maxBuckets {
		clear(l.buckets)
	}
	l.swept = now
}

// setRetryAfter sets Retry-After (whole seconds, at least 1) on the response
// of r, when the request passed through Harden.
func setRetryAfter(r *http.Request, wait time.Duration) {
	if st := stateOf(r.Context()); st != nil {
		st.header.Set("Retry-After", strconv.Itoa(retryAfterSeconds(wait)))
	}
}

func retryAfterSeconds(wait time.Duration) int {
	return max(1, int(math.Ceil(wait.Seconds())))
}
