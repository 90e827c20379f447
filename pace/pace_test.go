package pace

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func newGate(t *testing.T, o Options) *Gate {
	t.Helper()
	g, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	return g
}

// clock is a manual clock for the level's arithmetic.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func TestNewRejectsLevelsOutsideRange(t *testing.T) {
	for _, o := range []Options{{MinLevel: -0.5}, {MinLevel: 1.5}, {MaxLevel: -1}} {
		if _, err := New(o); err == nil {
			t.Errorf("%+v: want an error", o)
		}
	}
}

// concurrentUnits runs n units of d each at once and reports the most that
// ran together.
func concurrentUnits(t *testing.T, g *Gate, n int, d time.Duration) int {
	t.Helper()
	var running, most atomic.Int64
	var wg sync.WaitGroup
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			done, err := g.Background(context.Background())
			if err != nil {
				t.Error(err)
				return
			}
			now := running.Add(1)
			for {
				m := most.Load()
				if now <= m || most.CompareAndSwap(m, now) {
					break
				}
			}
			time.Sleep(d)
			running.Add(-1)
			done()
		}()
	}
	wg.Wait()
	return int(most.Load())
}

func TestDeliveryRunsFreelyWhilePublishingIsQuiet(t *testing.T) {
	g := newGate(t, Options{MaxLevel: 1, Quiet: 50 * time.Millisecond})
	if most := concurrentUnits(t, g, 4, 20*time.Millisecond); most != 4 {
		t.Fatalf("quiet: %d units ran together, want all 4", most)
	}
}

func TestDeliveryIsHeldToTheLevelWhilePublishing(t *testing.T) {
	g := newGate(t, Options{MaxLevel: 2, Quiet: time.Minute})
	end := g.Publishing()
	defer end()
	g.mu.Lock()
	g.level = 2
	g.mu.Unlock()
	if !g.Busy() {
		t.Fatal("a publish request in progress: want busy")
	}
	if most := concurrentUnits(t, g, 6, 5*time.Millisecond); most != 2 {
		t.Fatalf("busy at level 2: %d units ran together, want 2", most)
	}
}

func TestLevelFollowsPublishLatency(t *testing.T) {
	c := &clock{t: time.Unix(1_000_000, 0)}
	g := newGate(t, Options{MaxLevel: 3, MinLevel: 0.1, Target: 10 * time.Millisecond, Tick: time.Hour,
		Quiet: 2 * time.Hour, Now: c.now})
	// tick runs one tick of n requests, slow of them over the target.
	tick := func(n, slow int) {
		for i := range n {
			done := g.Publishing()
			if i < slow {
				c.add(20 * time.Millisecond)
			} else {
				c.add(time.Millisecond)
			}
			done()
		}
		c.add(time.Hour)
		g.Publishing()() // closes the tick
	}
	good := func(ticks int) {
		for range ticks {
			tick(100, 0)
		}
	}
	steps := []struct {
		name      string
		run       func()
		wantLevel float64
	}{
		{"publishing resumes: one unit at a time", func() { g.Publishing()() }, 1},
		{"two slow in a hundred halve it", func() { tick(100, 2) }, 0.5},
		{"again", func() { tick(100, 10) }, 0.25},
		{"", func() { tick(100, 50) }, 0.125},
		{"clamped at MinLevel", func() { tick(100, 50) }, 0.1},
		{"one slow in a hundred is fine, but raiseAfter-1 good ticks are not enough", func() { tick(100, 1); good(raiseAfter - 2) }, 0.1},
		{"the next raises it: x1.5 below one", func() { good(1) }, 0.15},
		{"a slow tick starts the count again", func() { tick(100, 5); good(raiseAfter - 1) }, 0.1},
		{"", func() { good(1) }, 0.15},
		{"below one: x1.5 a raise", func() { good(raiseAfter * 4) }, 0.759375},
		{"capped at one", func() { good(raiseAfter) }, 1},
		{"above one: +1 a raise", func() { good(raiseAfter) }, 2},
		{"capped at MaxLevel", func() { good(raiseAfter * 3) }, 3},
	}
	for _, s := range steps {
		s.run()
		if got := g.Level(); got < s.wantLevel-1e-9 || got > s.wantLevel+1e-9 {
			t.Fatalf("%s: level %v, want %v", s.name, got, s.wantLevel)
		}
	}
}

func TestPublishingAfterQuietStartsFromOneUnit(t *testing.T) {
	c := &clock{t: time.Unix(1_000_000, 0)}
	g := newGate(t, Options{MaxLevel: 8, Quiet: time.Second, Now: c.now})
	g.mu.Lock()
	g.level = 8
	g.mu.Unlock()
	done := g.Publishing()
	if got := g.Level(); got != 1 {
		t.Fatalf("first publish after quiet: level %v, want 1", got)
	}
	g.mu.Lock()
	g.level = 4
	g.mu.Unlock()
	done()
	g.Publishing()() // still busy: the level stays
	if got := g.Level(); got != 4 {
		t.Fatalf("publish while busy: level %v, want 4", got)
	}
}

func TestBelowOneDeliveryRestsInProportion(t *testing.T) {
	g := newGate(t, Options{MaxLevel: 1, MinLevel: 0.5, Quiet: time.Minute})
	defer g.Publishing()()
	g.mu.Lock()
	g.level = 0.5 // one unit at a time, half the time
	g.mu.Unlock()
	done, err := g.Background(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(20 * time.Millisecond)
	done()
	began := time.Now()
	done, err = g.Background(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	done()
	if waited := time.Since(began); waited < 15*time.Millisecond {
		t.Fatalf("second unit waited %v, want about 20ms", waited)
	}
	if most := concurrentUnits(t, g, 3, time.Millisecond); most != 1 {
		t.Fatalf("below one: %d units ran together, want 1", most)
	}
}

func TestRestIsBounded(t *testing.T) {
	g := newGate(t, Options{MaxLevel: 1, MinLevel: 0.01, Quiet: time.Minute, MaxRest: 10 * time.Millisecond})
	defer g.Publishing()()
	g.mu.Lock()
	g.level = 0.01
	g.mu.Unlock()
	done, _ := g.Background(context.Background())
	time.Sleep(20 * time.Millisecond) // earns 1.98s at 0.01
	done()
	began := time.Now()
	done, _ = g.Background(context.Background())
	done()
	if waited := time.Since(began); waited > 500*time.Millisecond {
		t.Fatalf("waited %v, want at most about MaxRest", waited)
	}
}

func TestBusyEndsAfterQuiet(t *testing.T) {
	c := &clock{t: time.Unix(1_000_000, 0)}
	g := newGate(t, Options{Quiet: 30 * time.Millisecond, Now: c.now})
	if g.Busy() {
		t.Fatal("new gate: want quiet")
	}
	done := g.Publishing()
	c.add(time.Hour)
	if !g.Busy() {
		t.Fatal("a request in progress: want busy however long it takes")
	}
	done()
	c.add(29 * time.Millisecond)
	if !g.Busy() {
		t.Fatal("within the quiet period: want busy")
	}
	c.add(time.Millisecond)
	if g.Busy() {
		t.Fatal("after the quiet period: want quiet")
	}
}

func TestWaitingDeliveryGivesUpWithItsContext(t *testing.T) {
	g := newGate(t, Options{MaxLevel: 1, Quiet: time.Minute})
	defer g.Publishing()()
	hold, _ := g.Background(context.Background())
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if _, err := g.Background(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("waiting behind a held turn: err %v, want the context's", err)
	}
	hold()
	// The unit that gave up left neither a waiter nor a turn behind.
	ctx2, cancel2 := context.WithTimeout(context.Background(), time.Second)
	defer cancel2()
	done, err := g.Background(ctx2)
	if err != nil {
		t.Fatalf("after the holder finished: %v", err)
	}
	done()
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.running != 0 || len(g.waiters) != 0 {
		t.Fatalf("running %d, waiters %d; want 0 and 0", g.running, len(g.waiters))
	}
}

func TestNilGateNeverHolds(t *testing.T) {
	var g *Gate
	end := g.Publishing()
	if g.Busy() {
		t.Error("nil gate: want never busy")
	}
	if most := concurrentUnits(t, g, 3, 10*time.Millisecond); most != 3 {
		t.Errorf("nil gate: %d units ran together, want 3", most)
	}
	end()
}

func TestHandlersMarkAndYield(t *testing.T) {
	g := newGate(t, Options{MaxLevel: 1, Quiet: time.Minute})
	var busyInside bool
	fg := g.Foreground(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { busyInside = g.Busy() }))
	fg.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("POST", "/", nil))
	if !busyInside {
		t.Fatal("inside the publish handler: want busy")
	}

	// A delivery request waits while another unit holds the only turn.
	hold, _ := g.Background(context.Background())
	served := make(chan struct{})
	bg := g.BackgroundHandler(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { close(served) }))
	go bg.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/", nil))
	select {
	case <-served:
		t.Fatal("delivery request served while the only turn was held")
	case <-time.After(30 * time.Millisecond):
	}
	hold()
	select {
	case <-served:
	case <-time.After(2 * time.Second):
		t.Fatal("delivery request not served after the turn was freed")
	}
}

// A disk that makes every publish slow is not a reason to hold delivery
// back: slowness is measured from the fastest recent publish.
func TestLevelMeasuresFromTheFloor(t *testing.T) {
	c := &clock{t: time.Unix(1_000_000, 0)}
	g := newGate(t, Options{MaxLevel: 4, Target: 10 * time.Millisecond, Tick: time.Hour, Now: c.now})
	tick := func(took ...time.Duration) {
		for _, d := range took {
			done := g.Publishing()
			c.add(d)
			done()
		}
		c.add(time.Hour)
		done := g.Publishing()
		c.add(25 * time.Millisecond) // the tick's closing request, as slow as the disk
		done()
	}
	slowDisk := make([]time.Duration, 100)
	for i := range slowDisk {
		slowDisk[i] = 25 * time.Millisecond
	}
	tick(slowDisk...) // learns the floor; the level may drop once
	start := g.Level()
	for range 5 {
		tick(slowDisk...)
	}
	if got := g.Level(); got < start {
		t.Fatalf("every publish 25ms (the floor): level fell from %v to %v", start, got)
	}
	contended := append([]time.Duration{}, slowDisk...)
	for i := range 10 {
		contended[i] = 60 * time.Millisecond // floor + 35ms
	}
	before := g.Level()
	tick(contended...)
	if got := g.Level(); got >= before {
		t.Fatalf("one in ten 35ms above the floor: level %v, want below %v", got, before)
	}
}
