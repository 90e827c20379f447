// Package pace gives publishing precedence over delivery for the CPU.
//
// A publisher waits on $process-message; a subscriber does not wait on a
// delivery (MESH is polled, webhooks are retried, and every accepted event
// is already durable in JetStream). When one machine cannot do both at the
// rate asked of it, the broker should keep answering publishers promptly
// and let deliveries lag, then catch up when publishing eases.
//
// Go's scheduler has no priorities, so the Gate works by admission, and
// adapts to what the machine can do rather than to a fixed share: every
// tenth of a second in which publishing is busy it looks at how many
// publish requests took longer than a target, and moves a level (additive
// increase after five seconds without slow requests, multiplicative
// decrease at once, as TCP does for a congestion window; publishing that
// resumes after a quiet spell starts it from one). A level of n ≥ 1 lets n
// units of delivery work run at once; a level below 1 lets one unit run at
// a time and rests after it, so that
// delivery takes that fraction of the wall clock. When publishing is quiet
// nothing is held back.
package pace

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Options configure a Gate.
type Options struct {
	// Target is the publish latency the gate defends, above the fastest
	// publish of the last few seconds (the floor: what a publish costs
	// here with nothing in its way, a disk's fsync for one): a tick in
	// which more than one request in a hundred took longer than floor +
	// Target halves the level (default 10ms). Measuring from the floor
	// keeps a slow disk, which holding delivery back cannot speed up, from
	// holding delivery back for ever.
	Target time.Duration
	// MinLevel is the least delivery is held to while publishing is busy:
	// the fraction of the wall clock one unit at a time may take, in
	// (0, 1] (default 0.05). It keeps deliveries moving, slowly, under
	// any publishing load.
	MinLevel float64
	// MaxLevel is the most units that run at once while publishing is busy
	// and fast (default 64).
	MaxLevel int
	// Quiet is how long after the last publish request publishing counts
	// as quiet again (default 250ms).
	Quiet time.Duration
	// Tick is how often the level moves (default 100ms).
	Tick time.Duration
	// MaxRest bounds the rest after one unit (default 100ms), so that one
	// slow unit (a disk stall) does not stop delivery for long.
	MaxRest time.Duration
	// Registerer, when set, receives the gate's metrics.
	Registerer prometheus.Registerer
	// Now is the clock (tests).
	Now func() time.Time
}

// Gate admits delivery work. A nil *Gate admits everything at once.
type Gate struct {
	o Options

	inFlight  atomic.Int64
	lastEnded atomic.Int64 // unix nanos of the last publish request's end

	mu        sync.Mutex
	level     float64
	running   int             // paced units admitted and not done
	waiters   []chan struct{} // FIFO
	restUntil time.Time       // level < 1: when the next unit may start
	tickStart time.Time
	published int // requests ended in this tick
	slow      int // of which slower than floor + Target
	fastest   time.Duration
	goodTicks int // ticks in a row without too many slow requests
	// floors are the fastest publish of each of the last len(floors)
	// ticks; floor is their minimum.
	floors [floorTicks]time.Duration
	nextFl int
	floor  time.Duration

	levelGauge prometheus.Gauge
	waited     prometheus.Histogram
	admitted   *prometheus.CounterVec
	// free and paced are admitted's two series, resolved once: Background
	// runs for every fan-out event and MESH request.
	free, paced prometheus.Counter
}

// raiseAfter is how many good ticks in a row raise the level (5 s); one
// bad tick lowers it. Each raise is a probe, and a probe that finds the
// machine full costs the publishes of one slow tick: probing every tick
// let delivery back in bursts (p99 103 ms at 1,000 events/s), every
// second left p99 at 21 ms, every five seconds at 17 ms (BENCHMARKS.md).
const raiseAfter = 50

// floorTicks is how many ticks the floor remembers (5 s at the default
// tick).
const floorTicks = 50

// New returns a gate.
func New(o Options) (*Gate, error) {
	if o.Target <= 0 {
		o.Target = 10 * time.Millisecond
	}
	if o.MinLevel == 0 {
		o.MinLevel = 0.05
	}
	if o.MinLevel <= 0 || o.MinLevel > 1 {
		return nil, fmt.Errorf("pace: minimum level %v is not in (0, 1]", o.MinLevel)
	}
	if o.MaxLevel == 0 {
		o.MaxLevel = 64
	}
	if o.MaxLevel < 1 {
		return nil, fmt.Errorf("pace: maximum level %d is below 1", o.MaxLevel)
	}
	if o.Quiet <= 0 {
		o.Quiet = 250 * time.Millisecond
	}
	if o.Tick <= 0 {
		o.Tick = 100 * time.Millisecond
	}
	if o.MaxRest <= 0 {
		o.MaxRest = 100 * time.Millisecond
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	g := &Gate{o: o, level: float64(o.MaxLevel), tickStart: o.Now(),
		levelGauge: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "ems", Subsystem: "pace", Name: "level",
			Help: "Delivery work admitted while publishing is busy: units at once (≥ 1), or the share of time one unit may take (< 1).",
		}),
		waited: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: "ems", Subsystem: "pace", Name: "delivery_wait_seconds",
			Help:    "Time a unit of delivery work waited for its turn while publishing was busy.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
		}),
		admitted: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "ems", Subsystem: "pace", Name: "delivery_units_total",
			Help: "Units of delivery work admitted, by whether publishing was busy (paced) or quiet (free).",
		}, []string{"mode"}),
	}
	g.free, g.paced = g.admitted.WithLabelValues("free"), g.admitted.WithLabelValues("paced")
	g.levelGauge.Set(g.level)
	if o.Registerer != nil {
		for _, c := range []prometheus.Collector{g.levelGauge, g.waited, g.admitted} {
			if err := o.Registerer.Register(c); err != nil {
				return nil, fmt.Errorf("registering pace metrics: %w", err)
			}
		}
	}
	return g, nil
}

// Busy reports whether publishing is busy: a request in progress, or one
// that ended less than Quiet ago.
func (g *Gate) Busy() bool {
	if g == nil {
		return false
	}
	if g.inFlight.Load() > 0 {
		return true
	}
	return g.o.Now().UnixNano()-g.lastEnded.Load() < int64(g.o.Quiet)
}

// Level is the current level (see the package comment).
func (g *Gate) Level() float64 {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.level
}

// Publishing marks one publish request; call the returned func when it
// has been answered.
func (g *Gate) Publishing() (done func()) {
	if g == nil {
		return func() {}
	}
	if !g.Busy() {
		// Publishing resumes: delivery may have been running freely, so
		// it starts again from one unit at a time rather than from where
		// it was when publishing last went quiet.
		g.mu.Lock()
		g.level = min(g.level, 1)
		g.levelGauge.Set(g.level)
		g.goodTicks = 0
		g.mu.Unlock()
	}
	began := g.o.Now()
	g.inFlight.Add(1)
	return func() {
		ended := g.o.Now()
		g.lastEnded.Store(ended.UnixNano())
		g.inFlight.Add(-1)
		g.observe(ended, ended.Sub(began))
	}
}

// observe counts one answered publish request and, once a tick has passed,
// moves the level.
func (g *Gate) observe(now time.Time, took time.Duration) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.published++
	if took > g.floor+g.o.Target {
		g.slow++
	}
	if g.fastest == 0 || took < g.fastest {
		g.fastest = took
	}
	if now.Sub(g.tickStart) < g.o.Tick {
		return
	}
	g.floors[g.nextFl] = g.fastest
	g.nextFl = (g.nextFl + 1) % floorTicks
	g.floor = 0
	for _, f := range g.floors {
		if f > 0 && (g.floor == 0 || f < g.floor) {
			g.floor = f
		}
	}
	switch {
	case g.slow*100 > g.published:
		g.level = max(g.o.MinLevel, g.level/2)
		g.goodTicks = 0
	case g.goodTicks+1 < raiseAfter:
		g.goodTicks++
	case g.level < 1:
		g.level = min(1, g.level*1.5)
		g.goodTicks = 0
	default:
		g.level = min(float64(g.o.MaxLevel), g.level+1)
		g.goodTicks = 0
	}
	g.levelGauge.Set(g.level)
	g.tickStart, g.published, g.slow, g.fastest = now, 0, 0, 0
	g.wakeLocked()
}

// limitLocked is how many paced units may run at once.
func (g *Gate) limitLocked() int {
	if g.level < 1 {
		return 1
	}
	return int(g.level)
}

func (g *Gate) wakeLocked() {
	for g.running < g.limitLocked() && len(g.waiters) > 0 {
		close(g.waiters[0])
		g.waiters = g.waiters[1:]
		g.running++
	}
}

// Foreground wraps the publish handler.
func (g *Gate) Foreground(next http.Handler) http.Handler {
	if g == nil {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer g.Publishing()()
		next.ServeHTTP(w, r)
	})
}

// Background waits for a unit of delivery work's turn; call done when the
// unit has finished. Units must not nest: a unit waiting for another
// unit's turn could wait for itself.
func (g *Gate) Background(ctx context.Context) (done func(), err error) {
	if g == nil {
		return func() {}, nil
	}
	if !g.Busy() {
		g.free.Inc()
		return func() {}, nil
	}
	asked := g.o.Now()
	g.mu.Lock()
	if g.running < g.limitLocked() && len(g.waiters) == 0 {
		g.running++
		g.mu.Unlock()
	} else {
		turn := make(chan struct{})
		g.waiters = append(g.waiters, turn)
		g.mu.Unlock()
		select {
		case <-turn:
		case <-ctx.Done():
			g.mu.Lock()
			defer g.mu.Unlock()
			for i, w := range g.waiters {
				if w == turn {
					g.waiters = append(g.waiters[:i], g.waiters[i+1:]...)
					return nil, ctx.Err()
				}
			}
			// The turn came as the context ended: hand it on.
			g.running--
			g.wakeLocked()
			return nil, ctx.Err()
		}
	}
	g.mu.Lock()
	rest := g.restUntil.Sub(g.o.Now())
	resting := g.level < 1 && rest > 0
	g.mu.Unlock()
	if resting && g.Busy() {
		t := time.NewTimer(rest)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			g.release(time.Time{})
			return nil, ctx.Err()
		}
	}
	began := g.o.Now()
	g.waited.Observe(began.Sub(asked).Seconds())
	g.paced.Inc()
	return func() { g.release(began) }, nil
}

// release ends a paced unit that began at began (zero: it never ran).
func (g *Gate) release(began time.Time) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if !began.IsZero() && g.level < 1 {
		ended := g.o.Now()
		rest := time.Duration(float64(ended.Sub(began)) * (1 - g.level) / g.level)
		g.restUntil = ended.Add(min(rest, g.o.MaxRest))
	}
	g.running--
	g.wakeLocked()
}

// BackgroundHandler wraps a handler whose requests are delivery work (the
// MESH inbox API: its clients poll and do not wait on a publisher).
func (g *Gate) BackgroundHandler(next http.Handler) http.Handler {
	if g == nil {
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
