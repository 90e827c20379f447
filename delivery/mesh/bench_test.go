package mesh

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ems-broker/ems/delivery/internal/testnats"
)

// BenchmarkListRetrieveAck is one consumer poll as ems-bench's consumers do
// it: list a mailbox, retrieve its oldest message, acknowledge it. The store
// holds 20k messages spread over 10k mailboxes; each op's mailbox gets a new
// message (outside the timer) so the backlog stays the same.
func BenchmarkListRetrieveAck(b *testing.B) {
	const mailboxes, backlog = 10_000, 20_000
	ns := testnats.Start(b, "")
	ctx := context.Background()
	s, err := NewStore(ctx, ns.JS, StreamConfig{})
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
	runIndex(b, s)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		mb := mbName(i * 7919) // a prime stride: mailboxes visited out of order
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
}
