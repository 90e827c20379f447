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

func newGate(t *testing.T, share float64, quiet time.Duration) *Gate {
	t.Helper()
	g, err := New(Options{Share: share, Quiet: quiet})
	if err != nil {
		t.Fatal(err)
	}
	return g
}

func TestNewRejectsShareOutsideRange(t *testing.T) {
	for _, share := range []float64{0, -0.5, 1.01} {
		if _, err := New(Options{Share: share}); err == nil {
			t.Errorf("share %v: want an error", share)
		}
	}
}

// concurrentUnits runs n background units of d each at once and reports
// the most that ran together.
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

func TestBackgroundRunsFreelyWhilePublishingIsQuiet(t *testing.T) {
	g := newGate(t, 0.25, 50*time.Millisecond)
	if most := concurrentUnits(t, g, 4, 20*time.Millisecond); most != 4 {
		t.Fatalf("quiet: %d units ran together, want all 4", most)
	}
}

func TestBackgroundRunsOneAtATimeWhilePublishing(t *testing.T) {
	g := newGate(t, 0.5, time.Minute)
	end := g.Publishing()
	defer end()
	if !g.Busy() {
		t.Fatal("a publish request in progress: want busy")
	}
	if most := concurrentUnits(t, g, 4, 5*time.Millisecond); most != 1 {
		t.Fatalf("busy: %d units ran together, want 1", most)
	}
}

func TestBackgroundRestsInProportionToItsShare(t *testing.T) {
	// Share 0.5: a unit of 20ms earns the next unit a 20ms wait.
	g := newGate(t, 0.5, time.Minute)
	defer g.Publishing()()
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
}

func TestRestIsBounded(t *testing.T) {
	g, err := New(Options{Share: 0.01, Quiet: time.Minute, MaxRest: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Publishing()()
	done, _ := g.Background(context.Background())
	time.Sleep(20 * time.Millisecond) // earns 1.98s at share 0.01
	done()
	began := time.Now()
	done, _ = g.Background(context.Background())
	done()
	if waited := time.Since(began); waited > 500*time.Millisecond {
		t.Fatalf("waited %v, want at most about MaxRest", waited)
	}
}

func TestBusyEndsAfterQuiet(t *testing.T) {
	g := newGate(t, 0.25, 30*time.Millisecond)
	if g.Busy() {
		t.Fatal("new gate: want quiet")
	}
	g.Publishing()()
	if !g.Busy() {
		t.Fatal("just after a publish: want busy")
	}
	time.Sleep(60 * time.Millisecond)
	if g.Busy() {
		t.Fatal("after the quiet period: want quiet")
	}
}

func TestBackgroundGivesUpWithItsContext(t *testing.T) {
	g := newGate(t, 0.25, time.Minute)
	defer g.Publishing()()
	hold, _ := g.Background(context.Background())
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if _, err := g.Background(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("waiting behind a held slot: err %v, want the context's", err)
	}
	hold()
	// The slot was not leaked by the unit that gave up.
	ctx2, cancel2 := context.WithTimeout(context.Background(), time.Second)
	defer cancel2()
	done, err := g.Background(ctx2)
	if err != nil {
		t.Fatalf("after the holder finished: %v", err)
	}
	done()
}

func TestOffNeverHolds(t *testing.T) {
	var nilGate *Gate
	for name, g := range map[string]*Gate{"nil": nilGate, "share 1": newGate(t, 1, time.Minute)} {
		end := g.Publishing()
		if g.Busy() {
			t.Errorf("%s: want never busy", name)
		}
		if most := concurrentUnits(t, g, 3, 10*time.Millisecond); most != 3 {
			t.Errorf("%s: %d units ran together, want 3", name, most)
		}
		end()
	}
}

func TestHandlersMarkAndYield(t *testing.T) {
	g := newGate(t, 0.25, time.Minute)
	var busyInside bool
	fg := g.Foreground(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { busyInside = g.Busy() }))
	fg.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("POST", "/", nil))
	if !busyInside {
		t.Fatal("inside the publish handler: want busy")
	}

	// A background request waits while another unit holds the slot.
	hold, _ := g.Background(context.Background())
	served := make(chan struct{})
	bg := g.BackgroundHandler(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { close(served) }))
	go bg.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/", nil))
	select {
	case <-served:
		t.Fatal("background request served while the slot was held")
	case <-time.After(30 * time.Millisecond):
	}
	hold()
	select {
	case <-served:
	case <-time.After(2 * time.Second):
		t.Fatal("background request not served after the slot was freed")
	}
}
