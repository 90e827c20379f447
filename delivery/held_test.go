package delivery

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ems-broker/ems/delivery/internal/testnats"
)

// TestHeldEventsAreNotDeliveredAgain holds one pulled event for three ack
// waits: reported in progress it is not redelivered; without the reports
// (the control) JetStream delivers it again, so the test can fail.
func TestHeldEventsAreNotDeliveredAgain(t *testing.T) {
	for _, keepAlive := range []bool{true, false} {
		ns := testnats.Start(t, "")
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		if _, err := ns.JS.CreateStream(ctx, jetstream.StreamConfig{Name: "EV", Subjects: []string{"ev.>"}}); err != nil {
			t.Fatal(err)
		}
		if _, err := ns.JS.Publish(ctx, "ev.1", []byte("x")); err != nil {
			t.Fatal(err)
		}
		const ackWait = 600 * time.Millisecond
		cons, err := ns.JS.CreateOrUpdateConsumer(ctx, "EV", jetstream.ConsumerConfig{Durable: "f",
			AckPolicy: jetstream.AckExplicitPolicy, AckWait: ackWait})
		if err != nil {
			t.Fatal(err)
		}
		msg, err := cons.Next(jetstream.FetchMaxWait(5 * time.Second))
		if err != nil {
			t.Fatal(err)
		}
		held := newHeldEvents()
		held.add(msg, time.Now())
		var reports atomic.Int64
		if keepAlive {
			kctx, stop := context.WithCancel(ctx)
			defer stop()
			go held.keepAlive(kctx, ackWait, time.Now, func(n int) { reports.Add(int64(n)) })
		}
		time.Sleep(3 * ackWait)
		again, err := cons.Next(jetstream.FetchMaxWait(300 * time.Millisecond))
		switch {
		case keepAlive && err == nil:
			md, _ := again.Metadata()
			t.Fatalf("kept in progress: delivered again (delivery %d)", md.NumDelivered)
		case !keepAlive && err != nil:
			t.Fatalf("control: not delivered again after %v without reports: %v", 3*ackWait, err)
		}
		if keepAlive && reports.Load() == 0 {
			t.Fatal("kept in progress: no reports counted")
		}
		held.done(msg)
		if err := msg.Ack(); err != nil && keepAlive {
			t.Fatal(err)
		}
		held.mu.Lock()
		left := len(held.held)
		held.mu.Unlock()
		if left != 0 {
			t.Fatalf("%d events still held after done", left)
		}
		cancel()
	}
}
