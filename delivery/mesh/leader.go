package mesh

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// The inbox stream allows direct gets, so a read of a message is answered
// by the replica on the NATS server this node is connected to. In a
// cluster that replica may not have stored yet a message the stream's
// leader has already acknowledged to the fan-out and that the index
// (fed by a consumer) lists, or that another node lists. A miss there is
// confirmed with the leader before it becomes a 404: a listed message is
// retrievable (mesh.md), and a miss for an indexed message would also
// drop it from this node's lists for good (Get's forget).

// readMsg reads the inbox message at seq, or when subject is set the last
// one on subject, from this server's replica and, on a miss, from the
// stream's leader.
func (s *Store) readMsg(ctx context.Context, seq uint64, subject string) (*jetstream.RawStreamMsg, error) {
	var (
		m   *jetstream.RawStreamMsg
		err error
	)
	if subject != "" {
		m, err = s.stream.GetLastMsgForSubject(ctx, subject)
	} else {
		m, err = s.stream.GetMsg(ctx, seq)
	}
	if !errors.Is(err, jetstream.ErrMsgNotFound) || s.stream.CachedInfo().Config.Replicas <= 1 {
		return m, err
	}
	return s.readLeader(ctx, seq, subject)
}

// readLeader reads as readMsg does through the stream's leader: the
// JetStream API's message get, which only the leader answers (jetstream's
// Stream always gets directly when the stream allows it).
func (s *Store) readLeader(ctx context.Context, seq uint64, subject string) (*jetstream.RawStreamMsg, error) {
	o := s.js.Options()
	prefix := nats.APIPrefix(o.APIPrefix)
	if o.Domain != "" {
		prefix = nats.Domain(o.Domain)
	}
	js, err := s.js.Conn().JetStream(prefix)
	if err != nil {
		return nil, fmt.Errorf("reading from the inbox stream's leader: %w", err)
	}
	name := s.stream.CachedInfo().Config.Name
	var m *nats.RawStreamMsg
	if subject != "" {
		m, err = js.GetLastMsg(name, subject, nats.Context(ctx))
	} else {
		m, err = js.GetMsg(name, seq, nats.Context(ctx))
	}
	switch {
	case errors.Is(err, nats.ErrMsgNotFound):
		return nil, jetstream.ErrMsgNotFound
	case err != nil:
		return nil, fmt.Errorf("reading from the inbox stream's leader: %w", err)
	}
	return &jetstream.RawStreamMsg{Subject: m.Subject, Sequence: m.Sequence, Header: m.Header, Data: m.Data, Time: m.Time}, nil
}
