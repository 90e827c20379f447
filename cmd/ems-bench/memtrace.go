package main

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"sync"
	"time"
)

// memSample is emsd's memory at one instant, from /proc/<pid>/status.
type memSample struct {
	at              time.Duration // since the sampler started
	rss, anon, file int64         // VmRSS, RssAnon, RssFile in bytes
}

// memSampler reads emsd's memory every interval: VmHWM is the kernel's
// peak of the total, but the anonymous part (the Go heap, what a fix of
// ours can bound) has no kernel peak, and the file-backed part (the bbolt
// map) is reclaimable page cache, so the two are tracked apart.
type memSampler struct {
	mu      sync.Mutex
	samples []memSample
	stop    context.CancelFunc
	done    chan struct{}
}

func startMemSampler(ctx context.Context, pid int, every time.Duration) *memSampler {
	ctx, cancel := context.WithCancel(ctx)
	m := &memSampler{stop: cancel, done: make(chan struct{})}
	go func() {
		defer close(m.done)
		start := time.Now()
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			if st, err := readProc(pid); err == nil {
				m.mu.Lock()
				m.samples = append(m.samples, memSample{at: time.Since(start), rss: st.rss, anon: st.anon, file: st.file})
				m.mu.Unlock()
			}
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}()
	return m
}

// finish stops sampling and returns the samples taken.
func (m *memSampler) finish() []memSample {
	m.stop()
	<-m.done
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.samples
}

// peaks are the largest anonymous and file-backed RSS sampled.
func peaks(s []memSample) (anon, file int64) {
	for _, x := range s {
		anon, file = max(anon, x.anon), max(file, x.file)
	}
	return anon, file
}

// writeMemTrace writes the samples as CSV (seconds, MiB).
func writeMemTrace(path string, s []memSample) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	w := bufio.NewWriter(f)
	fmt.Fprintln(w, "seconds,rss_mib,anon_mib,file_mib")
	for _, x := range s {
		fmt.Fprintf(w, "%.1f,%.1f,%.1f,%.1f\n", x.at.Seconds(), mib(x.rss), mib(x.anon), mib(x.file))
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return f.Close()
}

func mib(b int64) float64 { return float64(b) / (1 << 20) }
