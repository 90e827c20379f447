package delivery

import (
	"math"
	"math/rand/v2"
	"net/http"
	"strconv"
	"time"
)

// Backoff is a capped exponential schedule with full jitter: the delay
// before attempt n+1 is uniform in [0, min(Max, Initial·Multiplier^(n-1))].
// Full jitter spreads a burst of failures so that an endpoint coming back is
// not hit by every retry at once; the cap keeps the schedule from growing
// into days per step (Knative's uncapped backoff).
type Backoff struct {
	Initial    time.Duration
	Max        time.Duration
	Multiplier float64
}

// Ceiling is the delay before jitter after the n-th failed attempt (n ≥ 1).
func (b Backoff) Ceiling(n int) time.Duration {
	if n < 1 {
		n = 1
	}
	mult := b.Multiplier
	if mult < 1 {
		mult = 2
	}
	d := float64(b.Initial) * math.Pow(mult, float64(n-1))
	if d > float64(b.Max) || math.IsInf(d, 0) || math.IsNaN(d) {
		return b.Max
	}
	return time.Duration(d)
}

// Delay draws the delay after the n-th failed attempt; rnd (nil: the
// global source) returns a float in [0,1).
func (b Backoff) Delay(n int, rnd func() float64) time.Duration {
	if rnd == nil {
		rnd = rand.Float64
	}
	c := b.Ceiling(n)
	// Full jitter, but never below a floor so a run of near-zero draws
	// cannot turn into a hot loop.
	return max(time.Duration(rnd()*float64(c)), min(c, 100*time.Millisecond))
}

// ScheduleSpan is the worst-case time from the first attempt to the last
// (every draw at its ceiling) for attempts attempts.
func (b Backoff) ScheduleSpan(attempts int) time.Duration {
	var total time.Duration
	for n := 1; n < attempts; n++ {
		total += b.Ceiling(n)
	}
	return total
}

// RetryAfter parses a Retry-After header (seconds or HTTP date) relative to
// now; ok is false when absent or unparseable.
func RetryAfter(v string, now time.Time) (time.Duration, bool) {
	if v == "" {
		return 0, false
	}
	if s, err := strconv.Atoi(v); err == nil && s >= 0 {
		return time.Duration(s) * time.Second, true
	}
	if t, err := http.ParseTime(v); err == nil {
		return max(t.Sub(now), 0), true
	}
	return 0, false
}
