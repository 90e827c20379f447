package delivery

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Job states in the delivery log.
const (
	StatePending   = "pending"   // stored, not yet attempted
	StateRetrying  = "retrying"  // failed, waiting for its next attempt
	StateDelivered = "delivered" // 2xx (webhook) or stored in the inbox (mailbox)
	StateDead      = "dead"      // in the dead-letter stream
)

var (
	bucketJobs  = []byte("delivery/jobs")
	bucketOrder = []byte("delivery/order")
)

// maxKeptAttempts bounds the attempts kept per job: the first and the
// latest are what an operator reads.
const maxKeptAttempts = 50

// Attempt is one try.
type Attempt struct {
	At         time.Time `json:"at"`
	Generation int       `json:"generation"`
	Status     int       `json:"status,omitempty"`
	Error      string    `json:"error,omitempty"`
	Outcome    string    `json:"outcome"`
	LatencyMs  float64   `json:"latencyMs"`
}

// Record is the delivery log entry of one job.
type Record struct {
	ID            string      `json:"id"`
	EventID       string      `json:"eventId"`
	EventCode     string      `json:"eventCode"`
	NHSNumber     string      `json:"nhsNumber,omitempty"`
	Channel       string      `json:"channel"`
	Endpoint      string      `json:"endpoint"`
	Matches       []MatchInfo `json:"matches"`
	State         string      `json:"state"`
	Generation    int         `json:"generation"`
	AttemptCount  int         `json:"attemptCount"` // in this generation
	FirstAttempt  time.Time   `json:"firstAttempt,omitzero"`
	NextAttempt   time.Time   `json:"nextAttempt,omitzero"`
	LastStatus    int         `json:"lastStatus,omitempty"`
	LastError     string      `json:"lastError,omitempty"`
	Reason        string      `json:"reason,omitempty"`
	Created       time.Time   `json:"created"`
	Updated       time.Time   `json:"updated"`
	Attempts      []Attempt   `json:"attempts"`
	TotalAttempts int         `json:"totalAttempts"`
}

// Terminal reports whether the record needs no more attempts.
func (r *Record) Terminal() bool { return r.State == StateDelivered || r.State == StateDead }

// Log is the persisted delivery log and the ordering index, in bbolt.
type Log struct {
	db *bolt.DB
	// noOrder leaves the ordering index out: with lanes it is rebuilt
	// from the stream whenever a node takes a lane, never from bbolt.
	noOrder bool
}

// withoutOrderIndex is l writing no ordering index.
func (l *Log) withoutOrderIndex() *Log { return &Log{db: l.db, noOrder: true} }

// NewLog prepares delivery's buckets.
func NewLog(db *bolt.DB) (*Log, error) {
	err := db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketJobs, bucketOrder} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("preparing delivery log buckets: %w", err)
	}
	return &Log{db: db}, nil
}

// ErrNoRecord: no such job in the log.
var ErrNoRecord = errors.New("no such delivery")

func orderKey(key string, seq uint64) []byte {
	b := append([]byte(key), 0)
	return binary.BigEndian.AppendUint64(b, seq)
}

func getRecord(tx *bolt.Tx, id string) (*Record, error) {
	raw := tx.Bucket(bucketJobs).Get([]byte(id))
	if raw == nil {
		return nil, ErrNoRecord
	}
	var r Record
	if err := json.Unmarshal(raw, &r); err != nil {
		return nil, fmt.Errorf("delivery record %s: %w", id, err)
	}
	return &r, nil
}

func putRecord(tx *bolt.Tx, r *Record) error {
	raw, err := json.Marshal(r)
	if err != nil {
		return err
	}
	return tx.Bucket(bucketJobs).Put([]byte(r.ID), raw)
}

// Begin records that a job was received. It returns the record as stored:
// terminal for this generation means the message is a duplicate. A job
// with an order key is entered in the ordering index.
func (l *Log) Begin(j *Job, now time.Time) (*Record, error) {
	var rec *Record
	err := l.db.Batch(func(tx *bolt.Tx) error {
		r, err := getRecord(tx, j.ID)
		switch {
		case errors.Is(err, ErrNoRecord):
			r = &Record{ID: j.ID, EventID: j.EventID, EventCode: j.EventCode, NHSNumber: j.NHSNumber,
				Channel: j.Channel, Endpoint: j.Endpoint, Matches: j.Matches, State: StatePending,
				Generation: j.Generation, Created: now, Updated: now}
		case err != nil:
			return err
		case j.Generation > r.Generation:
			// A replay starts a fresh generation.
			r.Generation, r.State, r.AttemptCount, r.FirstAttempt, r.NextAttempt, r.Reason = j.Generation, StatePending, 0, time.Time{}, time.Time{}, ""
			r.Updated = now
		default:
			rec = r
			if r.Terminal() || j.Generation < r.Generation {
				return nil
			}
		}
		rec = r
		if k := j.OrderKey(); k != "" && !l.noOrder {
			if err := tx.Bucket(bucketOrder).Put(orderKey(k, j.EventSeq), []byte(j.ID)); err != nil {
				return err
			}
		}
		return putRecord(tx, r)
	})
	return rec, err
}

// Attempted records an attempt and the state it leaves the job in; a
// terminal state removes the job from the ordering index.
func (l *Log) Attempted(j *Job, a Attempt, state string, next time.Time, reason string) (*Record, error) {
	var rec *Record
	err := l.db.Batch(func(tx *bolt.Tx) error {
		r, err := getRecord(tx, j.ID)
		if err != nil {
			return err
		}
		if a.Outcome != "" {
			if r.AttemptCount == 0 {
				r.FirstAttempt = a.At
			}
			r.AttemptCount++
			r.TotalAttempts++
			r.LastStatus, r.LastError = a.Status, a.Error
			r.Attempts = append(r.Attempts, a)
			if len(r.Attempts) > maxKeptAttempts {
				r.Attempts = append(r.Attempts[:1], r.Attempts[len(r.Attempts)-maxKeptAttempts+1:]...)
			}
		}
		r.State, r.NextAttempt, r.Updated = state, next, a.At
		if reason != "" {
			r.Reason = reason
		}
		if r.Terminal() && !l.noOrder {
			if k := j.OrderKey(); k != "" {
				if err := tx.Bucket(bucketOrder).Delete(orderKey(k, j.EventSeq)); err != nil {
					return err
				}
			}
		}
		rec = r
		return putRecord(tx, r)
	})
	// Batch may run fn twice; the attempt would be counted twice only if
	// a commit failed, and then err is set.
	return rec, err
}

// Get returns one record.
func (l *Log) Get(id string) (*Record, error) {
	var r *Record
	err := l.db.View(func(tx *bolt.Tx) (err error) {
		r, err = getRecord(tx, id)
		return err
	})
	return r, err
}

// pendingOrder loads the ordering index: order key → event sequences.
func (l *Log) pendingOrder() (map[string][]uint64, error) {
	out := map[string][]uint64{}
	err := l.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketOrder).ForEach(func(k, _ []byte) error {
			if len(k) < 9 {
				return nil
			}
			key := string(k[:len(k)-9])
			out[key] = append(out[key], binary.BigEndian.Uint64(k[len(k)-8:]))
			return nil
		})
	})
	return out, err
}

// Query filters the delivery log; empty fields match anything.
type Query struct {
	Endpoint, EventID, NHSNumber, State, Channel string
	// Since keeps records created (dead letters: dead) at or after it.
	Since time.Time
	Limit int
}

func (q Query) matches(r *Record) bool {
	return (q.Endpoint == "" || q.Endpoint == r.Endpoint) && (q.EventID == "" || q.EventID == r.EventID) &&
		(q.NHSNumber == "" || q.NHSNumber == r.NHSNumber) && (q.State == "" || q.State == r.State) &&
		(q.Channel == "" || q.Channel == r.Channel) && (q.Since.IsZero() || !r.Created.Before(q.Since))
}

// List returns the records matching q, newest first.
func (l *Log) List(q Query) ([]*Record, error) {
	var out []*Record
	err := l.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketJobs).ForEach(func(k, v []byte) error {
			var r Record
			if err := json.Unmarshal(v, &r); err != nil {
				return fmt.Errorf("delivery record %s: %w", k, err)
			}
			if q.matches(&r) {
				out = append(out, &r)
			}
			return nil
		})
	})
	sort.Slice(out, func(i, j int) bool { return out[i].Created.After(out[j].Created) })
	if q.Limit > 0 && len(out) > q.Limit {
		out = out[:q.Limit]
	}
	return out, err
}

// StateAcknowledged: a mailbox message the recipient acknowledged.
const StateAcknowledged = "acknowledged"

// logEntry is one asynchronous change to the log.
type logEntry struct {
	rec   *Record // put (mailbox delivery stored)
	acked string  // or: mark this record acknowledged
	at    time.Time
}

// asyncLog records mailbox deliveries off the fan-out's path: one goroutine
// owns the writes and commits them in batches, so the log costs the
// fan-out no fsync. A crash can lose the newest log lines, never a
// delivery: the message itself is in JetStream.
type asyncLog struct {
	log *Log
	in  chan logEntry
}

func newAsyncLog(l *Log) *asyncLog { return &asyncLog{log: l, in: make(chan logEntry, 4096)} }

func (a *asyncLog) put(e logEntry) {
	select {
	case a.in <- e:
	default:
		// The log is behind: dropping a line beats stalling delivery.
	}
}

// run writes batches until ctx ends, then flushes what is queued.
func (a *asyncLog) run(done <-chan struct{}) {
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	var batch []logEntry
	flush := func() {
		if len(batch) == 0 {
			return
		}
		_ = a.log.db.Update(func(tx *bolt.Tx) error {
			for _, e := range batch {
				if e.rec != nil {
					if err := putRecord(tx, e.rec); err != nil {
						return err
					}
					continue
				}
				r, err := getRecord(tx, e.acked)
				if err != nil {
					continue
				}
				r.State, r.Updated = StateAcknowledged, e.at
				if err := putRecord(tx, r); err != nil {
					return err
				}
			}
			return nil
		})
		batch = batch[:0]
	}
	for {
		select {
		case e := <-a.in:
			batch = append(batch, e)
			if len(batch) >= 512 {
				flush()
			}
		case <-t.C:
			flush()
		case <-done:
			for {
				select {
				case e := <-a.in:
					batch = append(batch, e)
				default:
					flush()
					return
				}
			}
		}
	}
}
