package delivery

import (
	"testing"
	"time"
)

func TestBreaker(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var changes []BreakerState
	b := newBreaker(BreakerConfig{Failures: 3, Cooldown: time.Second, MaxCooldown: 3 * time.Second}, func(s BreakerState) { changes = append(changes, s) })
	allow := func(at time.Duration) bool { ok, _ := b.Allow(t0.Add(at)); return ok }

	for range 2 {
		b.Record(false, t0)
	}
	if !allow(0) || b.State() != Closed {
		t.Fatal("opened before 3 failures in a row")
	}
	b.Record(true, t0) // a success resets the count
	for range 3 {
		b.Record(false, t0)
	}
	if b.State() != Open || allow(500*time.Millisecond) {
		t.Fatal("not open after 3 failures")
	}
	if _, wait := b.Allow(t0.Add(400 * time.Millisecond)); wait != 600*time.Millisecond {
		t.Fatalf("wait %v", wait)
	}
	// Half-open after the cool-down: one probe, not two.
	if !allow(time.Second) || allow(time.Second) {
		t.Fatal("half-open must let exactly one probe through")
	}
	b.Record(false, t0.Add(time.Second)) // probe fails: open for 2 s
	if allow(2500*time.Millisecond) || !allow(3*time.Second) {
		t.Fatal("cool-down did not double")
	}
	b.Record(true, t0.Add(3*time.Second))
	if b.State() != Closed {
		t.Fatal("a successful probe must close")
	}
	for range 3 {
		b.Record(false, t0.Add(4*time.Second))
	}
	b.Reset()
	if b.State() != Closed || !allow(4*time.Second) {
		t.Fatal("reset must close")
	}
	want := []BreakerState{Open, HalfOpen, Open, HalfOpen, Closed, Open, Closed}
	if len(changes) != len(want) {
		t.Fatalf("transitions %v, want %v", changes, want)
	}
	for i := range want {
		if changes[i] != want[i] {
			t.Fatalf("transitions %v, want %v", changes, want)
		}
	}
}

func TestBreakerFailureRate(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	b := newBreaker(BreakerConfig{Failures: 100, Cooldown: time.Second, Window: 10, FailurePercent: 50}, nil)
	// Alternating failures never make 100 in a row, but half of the window.
	for i := range 9 {
		b.Record(i%2 == 0, t0)
		if b.State() != Closed {
			t.Fatalf("opened before the window filled (after %d)", i+1)
		}
	}
	b.Record(false, t0) // 10th: 5 of 10 failed
	if b.State() != Open {
		t.Fatal("a 50 % failure rate over the window must open")
	}
}
