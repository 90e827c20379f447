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
	raw, err := appendRecordJSON(nil, r) // json.Marshal's bytes, faster (recordjson.go)
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
//
// Most acknowledgements follow their delivery within moments, so the
// goroutine keeps the records it wrote last: an acknowledgement of one of
// them, or of one still in the batch, costs no read and decode of the
// stored record (and in the batch, no second write).
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

// recentRecords bounds the records the log goroutine remembers after
// writing them: about a record's JSON size each, and a few seconds of
// deliveries at the rates measured (BENCHMARKS.md).
const recentRecords = 4096

// recent is the log goroutine's memory of the records it wrote last, as
// stored; only that goroutine writes mailbox records.
type recent struct {
	byID map[string]*Record
	ring []string // ids in write order; ring[next] is the oldest when full
	next int
}

func newRecent() *recent { return &recent{byID: make(map[string]*Record, recentRecords)} }

func (c *recent) add(r *Record) {
	if _, ok := c.byID[r.ID]; ok {
		c.byID[r.ID] = r
		return
	}
	if len(c.ring) < recentRecords {
		c.ring = append(c.ring, r.ID)
	} else {
		delete(c.byID, c.ring[c.next])
		c.ring[c.next] = r.ID
		c.next = (c.next + 1) % recentRecords
	}
	c.byID[r.ID] = r
}

// take returns and forgets the record of id (the caller changes it).
func (c *recent) take(id string) *Record {
	r := c.byID[id]
	// Its ring slot stays: reached, it may evict a later copy of id
	// early, which costs a read, not a wrong record.
	delete(c.byID, id)
	return r
}

// run writes batches until ctx ends, then flushes what is queued.
func (a *asyncLog) run(done <-chan struct{}) {
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	var (
		batch []*Record
		// inBatch: the records of batch by id, which an acknowledgement
		// in the same batch changes in place.
		inBatch = map[string]*Record{}
		// acked are the acknowledgements of records neither in the batch
		// nor remembered: read, changed and written back.
		acked []logEntry
		mem   = newRecent()
	)
	flush := func() {
		if len(batch) == 0 && len(acked) == 0 {
			return
		}
		err := a.log.db.Update(func(tx *bolt.Tx) error {
			// Acknowledgements of stored records first: a record of the
			// batch with the same id was put after them.
			for _, e := range acked {
				r, err := getRecord(tx, e.acked)
				if err != nil {
					continue
				}
				r.State, r.Updated = StateAcknowledged, e.at
				if err := putRecord(tx, r); err != nil {
					return err
				}
			}
			for _, r := range batch {
				if err := putRecord(tx, r); err != nil {
					return err
				}
			}
			return nil
		})
		if err == nil {
			for _, r := range batch {
				if r.State != StateAcknowledged {
					mem.add(r)
				}
			}
		} else {
			// What was remembered may no longer be what is stored.
			mem = newRecent()
		}
		batch, acked = batch[:0], acked[:0]
		clear(inBatch)
	}
	add := func(e logEntry) {
		switch {
		case e.rec != nil:
			if old, ok := inBatch[e.rec.ID]; ok {
				*old = *e.rec // a re-run fan-out: the last write wins, as before
			} else {
				inBatch[e.rec.ID] = e.rec
				batch = append(batch, e.rec)
			}
			mem.take(e.rec.ID)
		case inBatch[e.acked] != nil:
			r := inBatch[e.acked]
			r.State, r.Updated = StateAcknowledged, e.at
		case mem.byID[e.acked] != nil:
			r := mem.take(e.acked)
			r.State, r.Updated = StateAcknowledged, e.at
			inBatch[r.ID] = r
			batch = append(batch, r)
		default:
			acked = append(acked, e)
		}
		if len(batch)+len(acked) >= 512 {
			flush()
		}
	}
	for {
		select {
		case e := <-a.in:
			add(e)
		case <-t.C:
			flush()
		case <-done:
			for {
				select {
				case e := <-a.in:
					add(e)
				default:
					flush()
					return
				}
			}
		}
	}
}
