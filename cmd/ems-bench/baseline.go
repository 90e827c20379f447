package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

	natsserver "github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ems-broker/ems/fhir"
)

// baseline is the bare pipeline on the same machine: an HTTP handler that
// decodes the bundle with the same codec as emsd and does one JetStream
// publish (in-process embedded server, file storage, same sync setting,
// same de-duplication id), and a consumer that only acknowledges. Every
// emsd figure is reported as a ratio to it.
type baseline struct {
	srv  *natsserver.Server
	nc   *nats.Conn
	http *http.Server
	url  string
	cons jetstream.ConsumeContext
}

func startBaseline(ctx context.Context, storeDir, sync string, tr *tracker) (*baseline, error) {
	s, err := natsserver.NewServer(&natsserver.Options{
		ServerName: "ems-bench-baseline", JetStream: true, StoreDir: storeDir,
		SyncAlways: sync == "always", NoSigs: true, NoLog: true, DontListen: true, MaxPayload: 8 << 20,
	})
	if err != nil {
		return nil, fmt.Errorf("baseline NATS: %w", err)
	}
	go s.Start()
	if !s.ReadyForConnections(30 * time.Second) {
		s.Shutdown()
		return nil, errors.New("baseline NATS not ready")
	}
	b := &baseline{srv: s}
	b.nc, err = nats.Connect("", nats.InProcessServer(s))
	if err != nil {
		b.stop()
		return nil, fmt.Errorf("baseline NATS connect: %w", err)
	}
	js, err := jetstream.New(b.nc)
	if err != nil {
		b.stop()
		return nil, err
	}
	stream, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{Name: "BASELINE", Subjects: []string{fhir.EventSubjectPrefix + ">"},
		Storage: jetstream.FileStorage, Retention: jetstream.LimitsPolicy, Duplicates: 24 * time.Hour, MaxBytes: -1})
	if err != nil {
		b.stop()
		return nil, fmt.Errorf("baseline stream: %w", err)
	}
	cons, err := stream.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{Durable: "acker", AckPolicy: jetstream.AckExplicitPolicy, MaxAckPending: 10_000})
	if err != nil {
		b.stop()
		return nil, fmt.Errorf("baseline consumer: %w", err)
	}
	b.cons, err = cons.Consume(func(m jetstream.Msg) {
		if err := m.Ack(); err != nil {
			return
		}
		seq, ok := tr.ids.seqOf([]byte(m.Headers().Get(fhir.HeaderMessageID)))
		tr.delivered(seq, ok)
	})
	if err != nil {
		b.stop()
		return nil, fmt.Errorf("baseline consume: %w", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /publish", func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(io.LimitReader(r.Body, 10<<20))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		f, _ := fhir.FormatForContentType(r.Header.Get("Content-Type"))
		root, err := fhir.Parse(body, f, fhir.DefaultLimits())
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		id, event, nhs := routing(root)
		msg := &nats.Msg{Subject: fhir.EventSubject(event, nhs), Data: body, Header: nats.Header{}}
		msg.Header.Set(fhir.HeaderMessageID, id)
		if _, err := js.PublishMsg(r.Context(), msg, jetstream.WithMsgID(id)); err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		w.WriteHeader(http.StatusAccepted)
	})
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.stop()
		return nil, err
	}
	b.url = "http://" + l.Addr().String() + "/publish"
	b.http = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = b.http.Serve(l) }()
	return b, nil
}

// routing reads MessageHeader.id, the event code and the routing NHS
// number: what a subject and a de-duplication id need, nothing more.
func routing(root *fhir.Node) (id, event, nhs string) {
	entries := root.ChildrenNamed("entry")
	if len(entries) == 0 {
		return "", "unknown", ""
	}
	h := entries[0].Child("resource").Resource()
	if h == nil {
		return "", "unknown", ""
	}
	for _, ext := range h.ChildrenNamed("extension") {
		for _, sub := range ext.ChildrenNamed("extension") {
			if sub.Str("url") == "nhsNumber" {
				nhs = sub.Str("valueIdentifier", "value")
			}
		}
	}
	return h.Str("id"), h.Str("event", "code"), nhs
}

func (b *baseline) stop() {
	if b.http != nil {
		_ = b.http.Close()
	}
	if b.cons != nil {
		b.cons.Stop()
	}
	if b.nc != nil {
		b.nc.Close()
	}
	b.srv.Shutdown()
	b.srv.WaitForShutdown()
}
