// Package pace gives publishing precedence over delivery for the CPU.
//
// A publisher waits on $process-message; a subscriber does not wait on a
// delivery (MESH is polled, webhooks are retried, and every accepted event
// is already durable in JetStream). When one machine cannot do both at the
// rate asked of it, the broker should keep accepting events promptly and
// let deliveries lag, then catch up when publishing eases. Go's scheduler
// has no priorities, so the Gate does it by admission: while publishing is
// busy, background (delivery) work runs one unit at a time and rests after
// each unit in proportion to the time it took, so that it takes at most a
// configured share of the wall clock. When publishing is quiet, background
// work is not held at all.
package pace

import (
	"context"
	"fmt"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Options configure a Gate.
type Options struct {
	// Share is the fraction of wall-clock time background work may take
	// while publishing is busy, in (0, 1]. 1 switches pacing off.
	Share float64
	// Quiet is how long after the last publish request publishing counts
	// as quiet again (default 250ms).
	Quiet time.Duration
	// MaxRest bounds the rest after one unit (default 50ms), so that one
	// slow unit (a disk stall) does not stop background work for long.
	MaxRest time.Duration
	// Registerer, when set, receives the gate's metrics.
	Registerer prometheus.Registerer
	// Now is the clock (tests).
	Now func() time.Time
}

// Gate admits background work. The zero value and a nil *Gate admit
// everything at once.
type Gate struct {
	share   float64
	quiet   time.Duration
	maxRest time.Duration
	now     func() time.Time

	inFlight  atomic.Int64
	lastEnded atomic.Int64 // unix nanos of the last publish request's end

	// slot is held by the one background unit running while publishing is
	// busy; restUntil is only read and written by the slot's holder.
	slot      chan struct{}
	restUntil time.Time

	waited   prometheus.Histogram
	admitted *prometheus.CounterVec
}

// New returns a gate; Share ≥ 1 returns one that never holds work back.
func New(o Options) (*Gate, error) {
	if o.Share <= 0 || o.Share > 1 {
		return nil, fmt.Errorf("pace: share %v is not in (0, 1]", o.Share)
	}
	if o.Quiet <= 0 {
		o.Quiet = 250 * time.Millisecond
	}
	if o.MaxRest <= 0 {
		o.MaxRest = 50 * time.Millisecond
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	g := &Gate{share: o.Share, quiet: o.Quiet, maxRest: o.MaxRest, now: o.Now, slot: make(chan struct{}, 1),
		waited: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: "ems", Subsystem: "pace", Name: "background_wait_seconds",
			Help:    "Time a unit of delivery work waited for its turn while publishing was busy.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
		}),
		admitted: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "ems", Subsystem: "pace", Name: "background_units_total",
			Help: "Units of delivery work admitted, by whether publishing was busy (paced) or quiet (free).",
		}, []string{"mode"}),
	}
	if o.Registerer != nil {
		for _, c := range []prometheus.Collector{g.waited, g.admitted} {
			if err := o.Registerer.Register(c); err != nil {
				return nil, fmt.Errorf("registering pace metrics: %w", err)
			}
		}
	}
	return g, nil
}

func (g *Gate) off() bool { return g == nil || g.slot == nil || g.share >= 1 }

// Busy reports whether publishing is busy: a request in progress, or one
// that ended less than Quiet ago.
func (g *Gate) Busy() bool {
	if g.off() {
		return false
	}
	if g.inFlight.Load() > 0 {
		return true
	}
	return g.now().UnixNano()-g.lastEnded.Load() < int64(g.quiet)
}

// Publishing marks one publish request; call the returned func when it
// has been answered.
func (g *Gate) Publishing() (done func()) {
	if g.off() {
		return func() {}
	}
	g.inFlight.Add(1)
	return func() {
		g.lastEnded.Store(g.now().UnixNano())
		g.inFlight.Add(-1)
	}
}

// Foreground wraps the publish handler.
func (g *Gate) Foreground(next http.Handler) http.Handler {
	if g.off() {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer g.Publishing()()
		next.ServeHTTP(w, r)
	})
}

// Background waits for a unit of background work's turn; call done when
// the unit has finished. Units must not nest: a unit that waited for
// another unit's turn would wait for itself.
func (g *Gate) Background(ctx context.Context) (done func(), err error) {
	if g.off() || !g.Busy() {
		if !g.off() {
			g.admitted.WithLabelValues("free").Inc()
		}
		return func() {}, nil
	}
	asked := g.now()
	select {
	case g.slot <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	if rest := g.restUntil.Sub(g.now()); rest > 0 && g.Busy() {
		t := time.NewTimer(rest)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			<-g.slot
			return nil, ctx.Err()
		}
	}
	began := g.now()
	g.waited.Observe(began.Sub(asked).Seconds())
	g.admitted.WithLabelValues("paced").Inc()
	return func() {
		ended := g.now()
		rest := time.Duration(float64(ended.Sub(began)) * (1 - g.share) / g.share)
		g.restUntil = ended.Add(min(rest, g.maxRest))
		<-g.slot
	}, nil
}

// BackgroundHandler wraps a handler whose requests are background work
// (the MESH inbox API: its clients poll and do not wait on a publisher).
func (g *Gate) BackgroundHandler(next http.Handler) http.Handler {
	if g.off() {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		done, err := g.Background(r.Context())
		if err != nil {
			return // the client has gone
		}
		defer done()
		next.ServeHTTP(w, r)
	})
}
