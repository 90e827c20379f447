package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// tracker ties deliveries back to publishes: it keeps the send time of
// every message published in the measured window, by sequence number.
type tracker struct {
	ids    ids
	origin time.Time

	mu     sync.Mutex
	chunks [][]int64 // send time (ns since origin) + 1; 0 = not measured

	e2e            histogram
	deliveries     atomic.Int64 // of measured messages
	allDeliveries  atomic.Int64
	foreign        atomic.Int64 // deliveries this run did not publish
	lastDeliveryNS atomic.Int64
}

const chunkLen = 1 << 16

func newTracker(g ids) *tracker { return &tracker{ids: g, origin: time.Now()} }

func (t *tracker) slot(seq uint64) *int64 {
	c, i := int(seq/chunkLen), int(seq%chunkLen)
	t.mu.Lock()
	defer t.mu.Unlock()
	for len(t.chunks) <= c {
		t.chunks = append(t.chunks, nil)
	}
	if t.chunks[c] == nil {
		t.chunks[c] = make([]int64, chunkLen)
	}
	return &t.chunks[c][i]
}

func (t *tracker) sent(seq uint64, at time.Time) {
	atomic.StoreInt64(t.slot(seq), int64(at.Sub(t.origin))+1)
}

// delivered records one delivery of message seq.
func (t *tracker) delivered(seq uint64, ok bool) {
	t.allDeliveries.Add(1)
	if !ok {
		t.foreign.Add(1)
		return
	}
	sent := atomic.LoadInt64(t.slot(seq))
	if sent == 0 {
		return // warm-up, or published after the window
	}
	now := time.Since(t.origin)
	t.e2e.record(now - time.Duration(sent-1))
	t.deliveries.Add(1)
	for {
		last := t.lastDeliveryNS.Load()
		if int64(now) <= last || t.lastDeliveryNS.CompareAndSwap(last, int64(now)) {
			return
		}
	}
}

// loadConfig is how one phase publishes.
type loadConfig struct {
	url          string
	concurrency  int
	rate         float64 // events/s; 0 = flat out
	warmup, dur  time.Duration
	format       string // xml, json, mix
	patients     int
	progressName string
}

// loadResult is what one phase measured.
type loadResult struct {
	latency          histogram
	accepted, errors atomic.Int64 // in the window
	errorsTotal      atomic.Int64
	expected         atomic.Int64 // deliveries the accepted window messages must cause
	window           time.Duration
	windowStart      time.Duration // since tracker origin
	firstErr         atomic.Value
}

func newClient(conc int) *http.Client {
	return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
		MaxConnsPerHost:     conc,
		MaxIdleConnsPerHost: conc,
		DisableCompression:  true,
	}}
}

// runLoad publishes for warmup+dur. accepted is called for every message
// the server accepted, warm-up included (the consumers must drain those
// deliveries too), with the patient it named; it returns how many
// deliveries that message must cause.
func runLoad(ctx context.Context, c loadConfig, tmpls []*template, tr *tracker, accepted func(patient int) int) *loadResult {
	res := &loadResult{}
	client := newClient(c.concurrency)
	defer client.CloseIdleConnections()
	start := time.Now().Add(20 * time.Millisecond)
	winStart, winEnd := start.Add(c.warmup), start.Add(c.warmup+c.dur)
	res.window, res.windowStart = c.dur, winStart.Sub(tr.origin)
	var next atomic.Uint64
	stopProgress := progressLoop(c.progressName, winStart, func() string {
		return fmt.Sprintf("accepted %d, errors %d, deliveries %d", res.accepted.Load(), res.errorsTotal.Load(), tr.deliveries.Load())
	})
	defer stopProgress()
	var wg sync.WaitGroup
	for w := range c.concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(w)+1, uint64(time.Now().UnixNano())))
			for ctx.Err() == nil {
				seq := next.Add(1) - 1
				at := time.Now()
				if c.rate > 0 {
					// Fixed rate: message seq is due at start + seq/rate,
					// and its latency counts from then, so a stall that
					// delays later sends is charged to them (no
					// coordinated omission).
					at = start.Add(time.Duration(float64(seq) / c.rate * float64(time.Second)))
					if d := time.Until(at); d > 0 {
						select {
						case <-time.After(d):
						case <-ctx.Done():
							return
						}
					}
				}
				if !at.Before(winEnd) {
					return
				}
				measured := !at.Before(winStart)
				pt := r.IntN(c.patients)
				f := 0
				switch c.format {
				case "json":
					f = 1
				case "mix":
					f = r.IntN(2)
				}
				tm := tmpls[eventOf(pt)*2+f]
				bp := bufPool.Get().(*[]byte)
				body := tm.render((*bp)[:0], tr.ids.make(seq), nhsNumber(pt))
				if measured {
					tr.sent(seq, at)
				}
				status, err := post(ctx, client, c.url, tm.contentType, body)
				lat := time.Since(at)
				*bp = body
				bufPool.Put(bp)
				ok := err == nil && status == http.StatusAccepted
				if !ok {
					res.errorsTotal.Add(1)
					if err == nil {
						err = fmt.Errorf("HTTP %d", status)
					}
					res.firstErr.CompareAndSwap(nil, err.Error())
				}
				deliveries := 0
				if ok {
					deliveries = accepted(pt)
				}
				if !measured {
					continue
				}
				res.latency.record(lat)
				if ok {
					res.accepted.Add(1)
					res.expected.Add(int64(deliveries))
				} else {
					res.errors.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	return res
}

func post(ctx context.Context, client *http.Client, url, ct string, body []byte) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Content-Type", ct)
	req.Header.Set("fromASID", publisherASID)
	resp, err := client.Do(req)
	if err != nil {
		return 0, err
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		return resp.StatusCode, fmt.Errorf("HTTP %d: %.300s", resp.StatusCode, b)
	}
	return resp.StatusCode, nil
}

// waitDelivered waits until the window's expected deliveries have all
// arrived, or timeout; it returns how long after the window they took.
func waitDelivered(ctx context.Context, tr *tracker, want int64, timeout time.Duration, name string) bool {
	deadline := time.Now().Add(timeout)
	for tr.deliveries.Load() < want {
		if time.Now().After(deadline) || ctx.Err() != nil {
			return false
		}
		progressf("%s: draining deliveries %d/%d", name, tr.deliveries.Load(), want)
		time.Sleep(100 * time.Millisecond)
	}
	return true
}

var stderrIsTerminal = func() bool {
	fi, err := os.Stderr.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}()

var lastProgress atomic.Int64

// progressf prints a progress line: rewritten in place on a terminal, at
// most every five seconds otherwise (CI logs).
func progressf(format string, args ...any) {
	now := time.Now().UnixNano()
	if stderrIsTerminal {
		fmt.Fprintf(os.Stderr, "\r\033[K"+format, args...)
		return
	}
	if last := lastProgress.Load(); now-last < int64(5*time.Second) || !lastProgress.CompareAndSwap(last, now) {
		return
	}
	fmt.Fprintf(os.Stderr, format+"\n", args...)
}

func progressDone() {
	if stderrIsTerminal {
		fmt.Fprint(os.Stderr, "\r\033[K")
	}
}

func progressLoop(name string, winStart time.Time, status func() string) func() {
	done := make(chan struct{})
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-done:
				progressDone()
				return
			case <-t.C:
				phase := "measuring"
				el := time.Since(winStart)
				if el < 0 {
					phase = "warm-up"
				}
				progressf("%s %s %5.1fs | load %s | %s", name, phase, el.Seconds(), loadAvg(), status())
			}
		}
	}()
	return func() { close(done); <-stopped }
}
