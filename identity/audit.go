package identity

import (
	"context"
	"log/slog"
	"net/http"
	"sync/atomic"
	"time"
)

// AuditRecord is one audited public-API call: every refusal and every
// successful state change, with who made it (as far as it was established)
// and the outcome. Bodies are never recorded.
type AuditRecord struct {
	Time      time.Time `json:"time"`
	ASID      string    `json:"asid,omitempty"`
	ODS       string    `json:"ods,omitempty"`
	User      string    `json:"user,omitempty"`
	Operation string    `json:"operation,omitempty"`
	Method    string    `json:"method"`
	// Path names the target (e.g. /STU3/Subscription/{id}).
	Path   string `json:"path"`
	Status int    `json:"status"`
	// Code is the Spine code of an identity refusal; empty for refusals
	// decided further in (validation, ownership) — Status tells those.
	Code   string `json:"code,omitempty"`
	Reason string `json:"reason,omitempty"`
	Remote string `json:"remote,omitempty"`
}

// requestState travels in the request context from Harden to the
// Authenticator and back: the response header (for Retry-After) and what
// the Authenticator established (for the audit record).
type requestState struct {
	header    http.Header
	caller    Caller
	operation string
	code      string
	reason    string
}

type stateKey struct{}

func withState(ctx context.Context, st *requestState) context.Context {
	return context.WithValue(ctx, stateKey{}, st)
}

func stateOf(ctx context.Context) *requestState {
	st, _ := ctx.Value(stateKey{}).(*requestState)
	return st
}

func (st *requestState) record(r *http.Request, status int) AuditRecord {
	return AuditRecord{
		Time: time.Now().UTC(), ASID: st.caller.System.ASID, ODS: st.caller.System.ODS, User: st.caller.User,
		Operation: st.operation, Method: r.Method, Path: r.URL.Path, Status: status,
		Code: st.code, Reason: st.reason, Remote: r.RemoteAddr,
	}
}

// statusRecorder remembers the status a handler wrote.
type statusRecorder struct {
	http.ResponseWriter
	status int
	wrote  bool
}

func (s *statusRecorder) WriteHeader(code int) {
	if !s.wrote {
		s.status, s.wrote = code, true
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusRecorder) Write(b []byte) (int, error) {
	s.wrote = true
	return s.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the connection.
func (s *statusRecorder) Unwrap() http.ResponseWriter { return s.ResponseWriter }

// AuditQueue hands records to a store on its own goroutine, so that a slow
// store never slows the API and a flood of refusals cannot queue without
// bound: when the queue is full, records are counted as dropped and the
// loss is logged.
type AuditQueue struct {
	ch      chan AuditRecord
	dropped atomic.Int64
	log     *slog.Logger
}

// auditBatch bounds how many queued records one store call takes.
const auditBatch = 512

// NewAuditQueue starts a writer handing store every record until ctx ends,
// several at a time when they queue up faster than one store call (a
// transaction with its fsync) takes; the returned wait blocks until queued
// records are written.
func NewAuditQueue(ctx context.Context, size int, store func([]AuditRecord) error, log *slog.Logger) (*AuditQueue, func()) {
	if size <= 0 {
		size = 1024
	}
	q := &AuditQueue{ch: make(chan AuditRecord, size), log: log}
	done := make(chan struct{})
	go func() {
		defer close(done)
		batch := make([]AuditRecord, 0, auditBatch)
		for {
			select {
			case rec := <-q.ch:
				batch = q.fill(append(batch[:0], rec))
				q.write(store, batch)
			case <-ctx.Done():
				for {
					batch = q.fill(batch[:0])
					if len(batch) == 0 {
						return
					}
					q.write(store, batch)
				}
			}
		}
	}()
	return q, func() { <-done }
}

// fill adds whatever is queued, without waiting, up to auditBatch.
func (q *AuditQueue) fill(batch []AuditRecord) []AuditRecord {
	for len(batch) < auditBatch {
		select {
		case rec := <-q.ch:
			batch = append(batch, rec)
		default:
			return batch
		}
	}
	return batch
}

func (q *AuditQueue) write(store func([]AuditRecord) error, recs []AuditRecord) {
	if err := store(recs); err != nil {
		first := recs[0]
		q.log.Error("writing the public audit log failed", "err", err, "records", len(recs), "asid", first.ASID, "method", first.Method, "path", first.Path, "status", first.Status)
	}
	if n := q.dropped.Swap(0); n > 0 {
		q.log.Error("public audit records dropped: the queue was full", "dropped", n)
	}
}

// Add queues rec without blocking.
func (q *AuditQueue) Add(rec AuditRecord) {
	select {
	case q.ch <- rec:
	default:
		q.dropped.Add(1)
	}
}
