// Package mesh is the built-in MESH mailbox: the inbox side of the MESH API
// (mesh.md) over mailboxes whose messages live in a JetStream stream.
//
// A message is delivered once it is stored on its mailbox's subject; it is
// listed until the recipient acknowledges it. Acknowledgement records the id
// on an acknowledgements stream before the message is deleted from the
// inbox, so a crash in between, or a fan-out that re-runs after the inbox's
// duplicate window, never brings an acknowledged message back. Both live in
// JetStream, so an acknowledgement costs no fsync of its own and has the
// same durability as the message it acknowledges. On a single node the
// delete itself is done in the background, in bulk (deletes.go).
//
// Each node keeps an index of the unacknowledged messages in memory (id,
// sequence, store time, workflow; no bodies), fed from both streams
// (feed.go), so that listing and counting read no stream and retrieve and
// acknowledge address a message by its sequence. An acknowledgement made on
// another node reaches the index through the acknowledgements stream within
// moments; until then a list there may still show the message, and its
// retrieve answers 410.
package mesh

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
)

// SubjectPrefix starts every inbox subject: ems.mesh.<mailbox>.<message-id>.
const SubjectPrefix = "ems.mesh."

// AckSubjectPrefix starts acknowledgement subjects:
// ems.meshack.<mailbox>.<message-id>.
const AckSubjectPrefix = "ems.meshack."

// DefaultStream is the stream holding every mailbox's inbox.
const DefaultStream = "EMS_MESH"

// Header names stored with an inbox message beyond the Mex-* ones.
const (
	// HeaderMatch is the JSON match explanation (subscription ids, kinds,
	// rules, tags) of the delivery.
	HeaderMatch = "Ems-Match"
	// HeaderEventID is the event's MessageHeader.id.
	HeaderEventID = "Ems-Message-Id"
	// HeaderInboxSeq, on an acknowledgement, is the inbox stream sequence
	// of the message acknowledged: another node's index tells that message
	// from a later re-store of the same id.
	HeaderInboxSeq = "Ems-Inbox-Seq"
)

// ValidMailbox reports whether mb can name a mailbox (and a subject
// token): 1 to 64 of A-Z a-z 0-9 _ -. Message ids have the same shape. A
// loop, not a regexp: it runs on every MESH request and fan-out.
func ValidMailbox(mb string) bool {
	if len(mb) == 0 || len(mb) > 64 {
		return false
	}
	for i := 0; i < len(mb); i++ {
		switch c := mb[i]; {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '_', c == '-':
		default:
			return false
		}
	}
	return true
}

// Subject is the subject of one message in a mailbox.
func Subject(mailbox, messageID string) string {
	return SubjectPrefix + mailbox + "." + messageID
}

// MessageID is the MESH message id of the delivery of one event to one
// mailbox. It is derived, not drawn, so that a fan-out that runs again after
// a crash produces the same id and the receiver can drop the duplicate. The
// shape follows real MESH ids (timestamp + suffix).
func MessageID(receivedAt time.Time, eventID, mailbox string) string {
	h := sha256.Sum256([]byte(eventID + "\x00" + mailbox))
	ts := receivedAt.UTC()
	return fmt.Sprintf("%s%06d_%s", ts.Format("20060102150405"), ts.Nanosecond()/1000, hex.EncodeToString(h[:5]))
}

// StreamConfig configures the inbox streams.
type StreamConfig struct {
	Name     string // inbox stream (default EMS_MESH); acknowledgements go to Name+"_ACKS"
	Replicas int
	// DuplicateWindow bounds JetStream's de-duplication of re-run fan-outs.
	DuplicateWindow time.Duration
	// AckRetention is how long acknowledgements are remembered (default
	// 30 days): a fan-out re-run later than that could deliver again, so
	// it should be at least the events stream's retention, and need be no
	// more (each one costs nats-server ~90 bytes of memory while kept).
	AckRetention time.Duration
	// Logger reports the index feeds' restarts and lag; zero value
	// discards.
	Logger *slog.Logger
	// Registerer takes the index metrics; nil: not registered.
	Registerer prometheus.Registerer
	// SingleNode says no other node serves these inboxes. An
	// acknowledged message's delete is then left to a background
	// deleter, which purges runs of them in one request (deletes.go):
	// this node's index hides it at once, and its retrieve answers 410
	// from the acknowledgement. With other nodes, whose retrieve reads
	// the message by sequence until their index hears of the
	// acknowledgement, the delete is done before Ack returns.
	SingleNode bool
}

// Store is the mailboxes' inboxes.
//
// Once RunIndex has caught up with the streams, listing and counting are
// answered from an in-memory index of the unacknowledged messages, and
// retrieve and acknowledge address a listed message by its stream
// sequence. Until then, and for ids the index does not know (yet), every
// call reads the streams as they are.
type Store struct {
	stream, acks jetstream.Stream
	js           jetstream.JetStream

	idx     *index
	readyMu sync.Mutex
	gen     uint64 // of the current follow; readyMu
	ready   atomic.Bool
	log     *slog.Logger
	metrics *indexMetrics
	// ackCursor is the last acknowledgements stream sequence the index
	// has applied (or, before any, the stream's last at the first start).
	ackCursor   atomic.Uint64
	ackFollowed bool // ackCursor is set; RunIndex's goroutine only

	// deletes queues acknowledged messages' sequences for the deleter
	// (deletes.go) while deferring (SingleNode, and RunIndex running).
	single    bool
	deletes   chan uint64
	deferMu   sync.RWMutex
	deferring bool // deferMu
	// purges and singleDeletes count the deleter's requests.
	purges, singleDeletes atomic.Int64
	// created is the inbox stream's creation time (unix ns) when the
	// index began from scratch: the deleter purges only that stream.
	created atomic.Int64
}

// NewStore creates or updates the inbox and acknowledgement streams.
func NewStore(ctx context.Context, js jetstream.JetStream, c StreamConfig) (*Store, error) {
	if c.Name == "" {
		c.Name = DefaultStream
	}
	if c.DuplicateWindow == 0 {
		c.DuplicateWindow = 10 * time.Minute
	}
	if c.AckRetention == 0 {
		c.AckRetention = 30 * 24 * time.Hour
	}
	s, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:        c.Name,
		Description: "EMS built-in MESH mailboxes: one subject per message, deleted on acknowledgement",
		Subjects:    []string{SubjectPrefix + ">"},
		Storage:     jetstream.FileStorage,
		Retention:   jetstream.LimitsPolicy,
		Replicas:    max(c.Replicas, 1),
		Duplicates:  c.DuplicateWindow,
		AllowDirect: true,
		Discard:     jetstream.DiscardNew, // never silently drop an undelivered message
		// A message id names one delivery: a second store of it (a
		// fan-out re-run) replaces the first, so a mailbox never lists
		// the same delivery twice.
		MaxMsgsPerSubject: 1,
	})
	if err != nil {
		return nil, fmt.Errorf("creating MESH inbox stream %s: %w", c.Name, err)
	}
	acks, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:              c.Name + "_ACKS",
		Description:       "EMS built-in MESH mailboxes: acknowledged message ids",
		Subjects:          []string{AckSubjectPrefix + ">"},
		Storage:           jetstream.FileStorage,
		Retention:         jetstream.LimitsPolicy,
		Replicas:          max(c.Replicas, 1),
		MaxAge:            c.AckRetention,
		MaxMsgsPerSubject: 1,
		AllowDirect:       true,
	})
	if err != nil {
		return nil, fmt.Errorf("creating MESH acknowledgement stream: %w", err)
	}
	log := c.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Store{stream: s, acks: acks, js: js, idx: newIndex(), log: log, metrics: newIndexMetrics(c.Registerer),
		deletes: make(chan uint64, deleteQueue), single: c.SingleNode}, nil
}

// Message is one stored inbox message. Listing returns them without
// Header and Body.
type Message struct {
	ID       string
	Mailbox  string
	Seq      uint64
	Stored   time.Time
	Header   nats.Header
	Body     []byte
	Workflow string
}

// ErrNotFound: no such message in the mailbox.
var ErrNotFound = errors.New("message not found")

// ErrGone: the message was acknowledged.
var ErrGone = errors.New("message acknowledged")

func (s *Store) acked(ctx context.Context, mailbox, id string) (bool, error) {
	_, err := s.acks.GetLastMsgForSubject(ctx, AckSubjectPrefix+mailbox+"."+id)
	switch {
	case errors.Is(err, jetstream.ErrMsgNotFound):
		return false, nil
	case err != nil:
		return false, fmt.Errorf("checking acknowledgement of %s: %w", id, err)
	}
	return true, nil
}

// toMessage is a stored message without its body (what listing needs).
func toMessage(mb string, m *jetstream.RawStreamMsg) *Message {
	id := m.Subject[len(SubjectPrefix)+len(mb)+1:]
	return &Message{ID: id, Mailbox: mb, Seq: m.Sequence, Stored: m.Time, Header: m.Header,
		Workflow: m.Header.Get("Mex-WorkflowID")}
}

// toMessageWithBody is a stored message with its body as published.
func toMessageWithBody(mb string, m *jetstream.RawStreamMsg) (*Message, error) {
	msg := toMessage(mb, m)
	body, err := decodeBody(m.Header, m.Data)
	if err != nil {
		return nil, fmt.Errorf("reading message %s of %s: %w", msg.ID, mb, err)
	}
	msg.Body = body
	return msg, nil
}

// Get returns one message of a mailbox.
func (s *Store) Get(ctx context.Context, mailbox, id string) (*Message, error) {
	if !ValidMailbox(mailbox) || !ValidMailbox(id) {
		return nil, ErrNotFound
	}
	var e *entry
	if s.ready.Load() {
		var checked bool
		if e, checked = s.idx.lookup(mailbox, id); e != nil {
			m, err := s.getIndexed(ctx, e, checked)
			if m != nil || err != nil {
				return m, err
			}
			// Not at the sequence the index knows: read the streams as
			// they are.
		}
	}
	m, err := s.getStreams(ctx, mailbox, id)
	if e != nil {
		switch {
		case errors.Is(err, ErrGone):
			// Acknowledged on another node, or re-stored after its
			// acknowledgement: the next list checks it again (and
			// finishes its delete).
			s.idx.uncheck(e)
		case errors.Is(err, ErrNotFound):
			// Neither stored nor acknowledged (an operator purged it):
			// not to be listed.
			s.idx.forget(e)
		}
	}
	return m, err
}

func (s *Store) getStreams(ctx context.Context, mailbox, id string) (*Message, error) {
	if gone, err := s.acked(ctx, mailbox, id); err != nil {
		return nil, err
	} else if gone {
		return nil, ErrGone
	}
	m, err := s.readMsg(ctx, 0, Subject(mailbox, id))
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("reading message %s of %s: %w", id, mailbox, err)
	}
	return toMessageWithBody(mailbox, m)
}

// getIndexed reads the message of e by its sequence; nil, nil when it is not
// there (acknowledged on another node, re-stored, purged).
func (s *Store) getIndexed(ctx context.Context, e *entry, checked bool) (*Message, error) {
	mailbox := e.box.name
	if !checked {
		if gone, err := s.check(ctx, e); err != nil {
			return nil, err
		} else if gone {
			return nil, ErrGone
		}
	}
	raw, err := s.readMsg(ctx, e.seq, "")
	if err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil, fmt.Errorf("reading message %s of %s: %w", e.id, mailbox, err)
	}
	if err != nil || raw.Subject != Subject(mailbox, e.id) {
		return nil, nil
	}
	return toMessageWithBody(mailbox, raw)
}

// check reads the acknowledgements stream once for e: an acknowledged
// message still stored (a crash between Ack's two steps, or a fan-out re-run
// after the duplicate window) has its delete finished and leaves the index.
func (s *Store) check(ctx context.Context, e *entry) (gone bool, err error) {
	gone, err = s.acked(ctx, e.box.name, e.id)
	if err != nil {
		return false, err
	}
	if gone {
		_ = s.stream.DeleteMsg(ctx, e.seq) // best effort: the next start checks again
		s.idx.remove(e)
		return true, nil
	}
	s.idx.markChecked(e)
	return false, nil
}

// checkAll checks entries, a few at a time: they are independent requests.
func (s *Store) checkAll(ctx context.Context, es []*entry) error {
	if len(es) == 1 {
		_, err := s.check(ctx, es[0])
		return err
	}
	var (
		wg    sync.WaitGroup
		first atomic.Pointer[error]
		sem   = make(chan struct{}, 8)
	)
	for _, e := range es {
		if first.Load() != nil {
			break
		}
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			if _, err := s.check(ctx, e); err != nil {
				first.CompareAndSwap(nil, &err)
			}
		})
	}
	wg.Wait()
	if err := first.Load(); err != nil {
		return *err
	}
	return nil
}

// Filter selects messages while listing. It must not keep m: the index
// reuses it.
type Filter func(m *Message) bool

// List returns up to limit unacknowledged messages of a mailbox, oldest
// first, starting after the message with id after ("" = from the start).
// more says whether further messages remain.
func (s *Store) List(ctx context.Context, mailbox, after string, limit int, keep Filter) (msgs []*Message, more bool, err error) {
	if !ValidMailbox(mailbox) {
		return nil, false, nil
	}
	if s.ready.Load() {
		for {
			msgs, more, unchecked := s.idx.page(mailbox, after, limit, keep)
			if len(unchecked) == 0 {
				return msgs, more, nil
			}
			if err := s.checkAll(ctx, unchecked); err != nil {
				return nil, false, fmt.Errorf("listing inbox %s: %w", mailbox, err)
			}
		}
	}
	return s.listStreams(ctx, mailbox, after, limit, keep)
}

// listStreams is List reading the streams as they are: the fallback while
// the index has not caught up, and the reference the index is tested
// against.
func (s *Store) listStreams(ctx context.Context, mailbox, after string, limit int, keep Filter) (msgs []*Message, more bool, err error) {
	seq := uint64(1)
	if after != "" {
		m, err := s.stream.GetLastMsgForSubject(ctx, Subject(mailbox, after))
		switch {
		case errors.Is(err, jetstream.ErrMsgNotFound):
			// continue_from names a message acknowledged meanwhile: the
			// client still wants what followed it, so search by id order,
			// which is time order.
			return s.listAfterID(ctx, mailbox, after, limit, keep)
		case err != nil:
			return nil, false, fmt.Errorf("finding continue_from %s: %w", after, err)
		}
		seq = m.Sequence + 1
	}
	return s.scan(ctx, mailbox, seq, limit, keep, func(*Message) bool { return true })
}

func (s *Store) listAfterID(ctx context.Context, mailbox, after string, limit int, keep Filter) ([]*Message, bool, error) {
	return s.scan(ctx, mailbox, 1, limit, keep, func(m *Message) bool { return m.ID > after })
}

func (s *Store) scan(ctx context.Context, mailbox string, seq uint64, limit int, keep, from Filter) (msgs []*Message, more bool, err error) {
	filter := SubjectPrefix + mailbox + ".*"
	for {
		raw, err := s.stream.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(filter))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return msgs, false, nil
		}
		if err != nil {
			return nil, false, fmt.Errorf("listing inbox %s: %w", mailbox, err)
		}
		seq = raw.Sequence + 1
		m := toMessage(mailbox, raw)
		if !from(m) {
			continue
		}
		gone, err := s.acked(ctx, mailbox, m.ID)
		if err != nil {
			return nil, false, err
		}
		if gone {
			// Acknowledged but not yet deleted (a crash in Ack), or
			// re-created by a late fan-out re-run: finish the delete.
			_ = s.stream.DeleteMsg(ctx, m.Seq)
			continue
		}
		if keep != nil && !keep(m) {
			continue
		}
		if len(msgs) == limit {
			return msgs, true, nil
		}
		msgs = append(msgs, m)
	}
}

// Count returns the approximate number of unacknowledged messages.
func (s *Store) Count(ctx context.Context, mailbox string) (int, error) {
	if !ValidMailbox(mailbox) {
		return 0, nil
	}
	if s.ready.Load() {
		return s.idx.count(mailbox), nil
	}
	info, err := s.stream.Info(ctx, jetstream.WithSubjectFilter(SubjectPrefix+mailbox+".*"))
	if err != nil {
		return 0, fmt.Errorf("counting inbox %s: %w", mailbox, err)
	}
	return len(info.State.Subjects), nil
}

// Ack acknowledges a message: idempotent; unknown ids are ErrNotFound.
func (s *Store) Ack(ctx context.Context, mailbox, id string, now time.Time) error {
	_, err := s.ackFirst(ctx, mailbox, id, now)
	return err
}

// ackFirst acknowledges and says whether this was the first time.
func (s *Store) ackFirst(ctx context.Context, mailbox, id string, now time.Time) (bool, error) {
	if !ValidMailbox(mailbox) || !ValidMailbox(id) {
		return false, ErrNotFound
	}
	var (
		seq uint64
		e   *entry
	)
	if s.ready.Load() {
		if e, _ = s.idx.lookup(mailbox, id); e != nil {
			seq = e.seq
		}
	}
	if e == nil {
		// Acknowledged before (idempotent), whether or not its delete
		// is done: a single node deletes in the background.
		if gone, err := s.acked(ctx, mailbox, id); err != nil || gone {
			return false, err
		}
		m, err := s.readMsg(ctx, 0, Subject(mailbox, id))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return false, ErrNotFound
		}
		if err != nil {
			return false, fmt.Errorf("reading message %s of %s: %w", id, mailbox, err)
		}
		seq = m.Sequence
	}
	first := true
	if e != nil {
		first = s.idx.claim(e)
	}
	ack := &nats.Msg{Subject: AckSubjectPrefix + mailbox + "." + id, Header: nats.Header{}}
	ack.Header.Set("Ems-Acked-At", now.UTC().Format(time.RFC3339Nano))
	ack.Header.Set(HeaderInboxSeq, strconv.FormatUint(seq, 10))
	if _, err := s.js.PublishMsg(ctx, ack); err != nil {
		if e != nil && first {
			s.idx.unclaim(e) // the client's retry is the first
		}
		return false, fmt.Errorf("recording acknowledgement of %s: %w", id, err)
	}
	if e != nil {
		s.idx.remove(e) // at once: this node's next list must not show it
		if s.deferDelete(seq) {
			return first, nil
		}
	}
	err := s.stream.DeleteMsg(ctx, seq)
	switch {
	case DeletedAlready(err):
		// Deleted meanwhile: acknowledged on another node (the index
		// had not heard yet) or by a concurrent call here.
		return e == nil, nil
	case err != nil:
		return first, fmt.Errorf("removing acknowledged %s from the inbox: %w", id, err)
	}
	return first, nil
}

// Oldest returns the store time of the oldest unacknowledged message of a
// mailbox (zero when empty): the retention warning compares it with now.
func (s *Store) Oldest(ctx context.Context, mailbox string) (time.Time, error) {
	msgs, _, err := s.List(ctx, mailbox, "", 1, nil)
	if err != nil || len(msgs) == 0 {
		return time.Time{}, err
	}
	return msgs[0].Stored, nil
}

// DeletedAlready reports whether a JetStream DeleteMsg failed only because
// the message was no longer there. nats.go answers that as
// ErrMsgDeleteUnsuccessful with the server's error flattened into the
// text, not as ErrMsgNotFound: "no message found" (10057) when the store
// says so, "sequence N not found" (10043) when the removal found nothing
// to remove. A second acknowledgement racing another node's, before this
// node's index heard of the first, got a 500 for an idempotent call.
func DeletedAlready(err error) bool {
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return true
	}
	if !errors.Is(err, jetstream.ErrMsgDeleteUnsuccessful) {
		return false
	}
	text := err.Error()
	return strings.Contains(text, "no message found") || strings.Contains(text, "err_code=10043")
}
