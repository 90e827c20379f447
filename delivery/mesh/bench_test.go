package mesh

import (
	"context"
	"fmt"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ems-broker/ems/delivery/internal/testnats"
)

// BenchmarkListRetrieveAck is one consumer poll as ems-bench's consumers do
// it: list a mailbox, retrieve its oldest message, acknowledge it. The store
// (a single node's) holds 20k messages spread over 10k mailboxes; each op's
// mailbox gets a new message (outside the timer) so the backlog stays the
// same. Mailboxes are visited out of order (order=random: a prime stride),
// or in the order they were delivered to (order=delivery), as ems-bench's
// consumers poll a mailbox when a delivery to it is due. cpu-ns/op is the
// process's CPU per op, the embedded server's and the background deleter's
// included (the puts' too: the same in every variant).
func BenchmarkListRetrieveAck(b *testing.B) {
	for _, c := range []struct {
		order  string
		stride int
	}{{"random", 7919}, {"delivery", 1}} {
		b.Run("order="+c.order, func(b *testing.B) { benchListRetrieveAck(b, c.stride) })
	}
}

func benchListRetrieveAck(b *testing.B, stride int) {
	const mailboxes, backlog = 10_000, 20_000
	ns := testnats.Start(b, "")
	ctx := context.Background()
	s, err := NewStore(ctx, ns.JS, StreamConfig{SingleNode: true})
	if err != nil {
		b.Fatal(err)
	}
	at := time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)
	n := 0
	put := func(mb string) {
		n++
		id := MessageID(at.Add(time.Duration(n)*time.Microsecond), fmt.Sprint("ev", n), mb)
		h := nats.Header{}
		h.Set("Mex-To", mb)
		h.Set("Mex-WorkflowID", "CHANGEOFGP_1")
		f, err := ns.JS.PublishMsgAsync(&nats.Msg{Subject: Subject(mb, id), Header: h, Data: make([]byte, 2048)}, jetstream.WithMsgID(id))
		if err != nil {
			b.Fatal(err)
		}
		_ = f
	}
	mbName := func(i int) string { return fmt.Sprintf("MB%05d", i%mailboxes) }
	for i := range backlog {
		put(mbName(i))
	}
	select {
	case <-ns.JS.PublishAsyncComplete():
	case <-time.After(time.Minute):
		b.Fatal("backlog not stored")
	}
	runCtx, stop := context.WithCancel(ctx)
	stopped := make(chan struct{})
	go func() { defer close(stopped); _ = s.RunIndex(runCtx) }()
	defer func() { stop(); <-stopped }()
	for !s.Ready() {
		time.Sleep(2 * time.Millisecond)
	}
	b.ReportAllocs()
	cpu0 := processCPU()
	for i := 0; b.Loop(); i++ {
		mb := mbName(i * stride)
		msgs, _, err := s.List(ctx, mb, "", 500, nil)
		if err != nil || len(msgs) == 0 {
			b.Fatalf("list %s: %d %v", mb, len(msgs), err)
		}
		if _, err := s.Get(ctx, mb, msgs[0].ID); err != nil {
			b.Fatalf("get: %v", err)
		}
		if err := s.Ack(ctx, mb, msgs[0].ID, at); err != nil {
			b.Fatalf("ack: %v", err)
		}
		b.StopTimer()
		put(mb)
		<-ns.JS.PublishAsyncComplete()
		b.StartTimer()
	}
	// The deletes still queued are part of the ops' cost.
	stop()
	<-stopped
	b.ReportMetric(float64(processCPU()-cpu0)/float64(b.N), "cpu-ns/op")
}

func processCPU() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkAuthCheck is the NHSMESH token check every MESH request makes
// (a new count each time: a repeat is refused as a replay).
func BenchmarkAuthCheck(b *testing.B) {
	now := time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)
	a := NewAuthenticator(AuthOptions{SharedKey: "shared", Passwords: map[string]string{"MB00001": "pw"}, Now: func() time.Time { return now }})
	tokens := make([]string, 100_000)
	for i := range tokens {
		tokens[i] = Token("shared", "MB00001", "pw", "nonce", i, now)
	}
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		if i == len(tokens) {
			b.StopTimer()
			a = NewAuthenticator(AuthOptions{SharedKey: "shared", Passwords: map[string]string{"MB00001": "pw"}, Now: func() time.Time { return now }})
			i = 0
			b.StartTimer()
		}
		if err := a.Check(tokens[i], "MB00001"); err != nil {
			b.Fatal(err)
		}
	}
}
