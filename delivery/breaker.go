package delivery

import (
	"sync"
	"time"
)

// BreakerState is a circuit breaker's state.
type BreakerState int

// Breaker states.
const (
	Closed BreakerState = iota
	HalfOpen
	Open
)

func (s BreakerState) String() string { return [...]string{"closed", "half-open", "open"}[s] }

// BreakerConfig configures the per-endpoint circuit breakers.
type BreakerConfig struct {
	// Failures in a row that open the breaker (default 5).
	Failures int
	// Cooldown before a half-open probe (default 30 s); doubles each time
	// a probe fails, up to MaxCooldown (default 10 min).
	Cooldown, MaxCooldown time.Duration
	// Window and FailurePercent also open the breaker when at least
	// FailurePercent of the last Window attempts failed (defaults 20 and
	// 50): an endpoint failing every other request never fails N in a row.
	Window, FailurePercent int
}

// breaker stops hammering a dead endpoint: while open, jobs wait (without
// spending attempts) until a single probe is allowed through.
type breaker struct {
	cfg      BreakerConfig
	mu       sync.Mutex
	state    BreakerState
	failures int
	cooldown time.Duration
	until    time.Time // open until
	probing  bool
	onChange func(BreakerState)
	recent   []bool // ring of the last Window outcomes, true = failure
	next     int
	filled   int
}

func newBreaker(cfg BreakerConfig, onChange func(BreakerState)) *breaker {
	if cfg.Failures <= 0 {
		cfg.Failures = 5
	}
	if cfg.Cooldown <= 0 {
		cfg.Cooldown = 30 * time.Second
	}
	if cfg.MaxCooldown < cfg.Cooldown {
		cfg.MaxCooldown = max(10*time.Minute, cfg.Cooldown)
	}
	if cfg.Window <= 0 {
		cfg.Window = 20
	}
	if cfg.FailurePercent <= 0 {
		cfg.FailurePercent = 50
	}
	return &breaker{cfg: cfg, cooldown: cfg.Cooldown, onChange: onChange, recent: make([]bool, cfg.Window)}
}

// Allow says whether an attempt may go now; if not, wait is how long until
// it is worth asking again.
func (b *breaker) Allow(now time.Time) (ok bool, wait time.Duration) {
	b.mu.Lock()
	defer b.mu.Unlock()
	switch b.state {
	case Closed:
		return true, 0
	case Open:
		if now.Before(b.until) {
			return false, b.until.Sub(now)
		}
		b.set(HalfOpen)
		fallthrough
	default: // half-open: one probe at a time
		if b.probing {
			return false, max(b.cfg.Cooldown/4, 50*time.Millisecond)
		}
		b.probing = true
		return true, 0
	}
}

// Record feeds an attempt's outcome back.
func (b *breaker) Record(success bool, now time.Time) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.recent[b.next] = !success
	b.next = (b.next + 1) % len(b.recent)
	b.filled = min(b.filled+1, len(b.recent))
	if success {
		b.failures, b.probing, b.cooldown = 0, false, b.cfg.Cooldown
		if b.state != Closed {
			// A recovered endpoint starts with a clean window.
			clear(b.recent)
			b.filled = 0
			b.set(Closed)
		}
		return
	}
	b.failures++
	switch {
	case b.state == HalfOpen:
		b.probing = false
		b.cooldown = min(b.cooldown*2, b.cfg.MaxCooldown)
		b.until = now.Add(b.cooldown)
		b.set(Open)
	case b.state == Closed && (b.failures >= b.cfg.Failures || b.rateExceeded()):
		b.until = now.Add(b.cooldown)
		b.set(Open)
	}
}

// rateExceeded: the window is full and too many of it failed.
func (b *breaker) rateExceeded() bool {
	if b.filled < len(b.recent) {
		return false
	}
	failed := 0
	for _, f := range b.recent {
		if f {
			failed++
		}
	}
	return failed*100 >= b.cfg.FailurePercent*len(b.recent)
}

// State returns the current state.
func (b *breaker) State() BreakerState {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.state
}

func (b *breaker) set(s BreakerState) {
	b.state = s
	if b.onChange != nil {
		b.onChange(s)
	}
}

// release gives back a probe slot that was granted but not used.
func (b *breaker) release() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.probing = false
}

// Reset closes the breaker (an operator's "try it now").
func (b *breaker) Reset() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.failures, b.probing, b.cooldown = 0, false, b.cfg.Cooldown
	clear(b.recent)
	b.filled = 0
	if b.state != Closed {
		b.set(Closed)
	}
}
