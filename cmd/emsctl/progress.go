package main

import (
	"bytes"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"
)

// progress counts what an upload has read and, on a terminal, redraws one
// status line: a bar, rows read, rows per second and the time left.
// Rows are newline-terminated lines; the time left comes from the byte
// rate, which is known against the file's size where the row total is not.
type progress struct {
	r     io.Reader
	total int64 // bytes; 0 when unknown
	out   io.Writer
	now   func() time.Time

	mu    sync.Mutex
	read  int64
	rows  int64
	start time.Time
	stop  chan struct{}
	done  chan struct{}
}

func newProgress(r io.Reader, total int64, out io.Writer) *progress {
	return &progress{r: r, total: total, out: out, now: time.Now}
}

func (p *progress) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	p.mu.Lock()
	p.read += int64(n)
	p.rows += int64(bytes.Count(b[:n], []byte{'\n'}))
	p.mu.Unlock()
	return n, err
}

// counts returns the bytes and rows read so far.
func (p *progress) counts() (int64, int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.read, p.rows
}

// draw starts redrawing every interval until finish.
func (p *progress) draw(interval time.Duration) {
	p.start = p.now()
	p.stop, p.done = make(chan struct{}), make(chan struct{})
	go func() {
		defer close(p.done)
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-p.stop:
				return
			case <-t.C:
				fmt.Fprint(p.out, "\r"+p.line()+"\x1b[K")
			}
		}
	}()
}

// finish stops redrawing and leaves the final line.
func (p *progress) finish() {
	if p.stop == nil {
		return
	}
	close(p.stop)
	<-p.done
	fmt.Fprint(p.out, "\r"+p.line()+"\x1b[K\n")
}

const barWidth = 30

func (p *progress) line() string {
	read, rows := p.counts()
	elapsed := p.now().Sub(p.start)
	rate := 0.0
	if s := elapsed.Seconds(); s > 0 {
		rate = float64(rows) / s
	}
	var b strings.Builder
	if p.total > 0 {
		frac := min(float64(read)/float64(p.total), 1)
		fill := int(frac * barWidth)
		b.WriteString("[" + strings.Repeat("=", fill) + strings.Repeat(" ", barWidth-fill) + "]")
		fmt.Fprintf(&b, " %3.0f%%", frac*100)
	}
	fmt.Fprintf(&b, " %d rows  %.0f rows/s", rows, rate)
	if p.total > 0 && read > 0 && read < p.total {
		left := time.Duration(float64(elapsed) * float64(p.total-read) / float64(read))
		fmt.Fprintf(&b, "  ETA %s", left.Round(time.Second))
	} else if read >= p.total && p.total > 0 {
		fmt.Fprintf(&b, "  %s", elapsed.Round(100*time.Millisecond))
	}
	return b.String()
}
