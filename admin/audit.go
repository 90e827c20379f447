package admin

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
)

// auditBucket holds the log; keys are big-endian sequence numbers so that
// iteration order is append order.
var auditBucket = []byte("admin/audit")

// Entry is one audited call.
type Entry struct {
	Seq        uint64    `json:"seq"`
	Time       time.Time `json:"time"`
	Operator   string    `json:"operator"` // "" when authentication failed
	Method     string    `json:"method"`
	Path       string    `json:"path"`
	Query      string    `json:"query,omitempty"`
	Status     int       `json:"status"`
	DurationMS int64     `json:"durationMs,omitempty"`
	Remote     string    `json:"remote,omitempty"`
	// Before and After describe the target's state around a change, as
	// the handler that made it reported them with RecordChange.
	Before json.RawMessage `json:"before,omitempty"`
	After  json.RawMessage `json:"after,omitempty"`
}

// AuditLog is an append-only log of operator calls in bbolt.
type AuditLog struct {
	db        *bolt.DB
	retention time.Duration
}

// NewAuditLog opens (creating if needed) the audit log in db. Entries older
// than retention are pruned as new ones are written; zero keeps them all.
func NewAuditLog(db *bolt.DB, retention time.Duration) (*AuditLog, error) {
	if err := db.Update(func(tx *bolt.Tx) error {
		_, err := tx.CreateBucketIfNotExists(auditBucket)
		return err
	}); err != nil {
		return nil, fmt.Errorf("creating the audit bucket: %w", err)
	}
	return &AuditLog{db: db, retention: retention}, nil
}

// Append writes an entry and prunes expired ones in the same transaction.
func (a *AuditLog) Append(e Entry) error { return a.AppendAll([]Entry{e}) }

// AppendAll writes entries in order in one transaction (one fsync for all
// of them: the public API audits every MESH acknowledgement, thousands a
// second under load) and prunes expired ones.
func (a *AuditLog) AppendAll(entries []Entry) error {
	if len(entries) == 0 {
		return nil
	}
	return a.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(auditBucket)
		newest := entries[0].Time
		for _, e := range entries {
			seq, err := b.NextSequence()
			if err != nil {
				return err
			}
			e.Seq = seq
			v, err := json.Marshal(e)
			if err != nil {
				return fmt.Errorf("encoding audit entry: %w", err)
			}
			if err := b.Put(seqKey(seq), v); err != nil {
				return err
			}
			if e.Time.After(newest) {
				newest = e.Time
			}
		}
		if a.retention > 0 {
			return prune(b, newest.Add(-a.retention))
		}
		return nil
	})
}

// prune deletes entries older than cutoff; it stops at the first younger
// one, so its cost is the number of expired entries.
func prune(b *bolt.Bucket, cutoff time.Time) error {
	// Collect first: deleting under a bbolt cursor makes Next skip a key.
	var expired [][]byte
	c := b.Cursor()
	for k, v := c.First(); k != nil; k, v = c.Next() {
		var e Entry
		if err := json.Unmarshal(v, &e); err != nil || !e.Time.Before(cutoff) {
			break
		}
		expired = append(expired, k)
	}
	for _, k := range expired {
		if err := b.Delete(k); err != nil {
			return err
		}
	}
	return nil
}

// List returns up to limit entries, newest first, at or after since and by
// operator when those are set.
func (a *AuditLog) List(since time.Time, operator string, limit int) ([]Entry, error) {
	out := []Entry{}
	err := a.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(auditBucket).Cursor()
		for k, v := c.Last(); k != nil && len(out) < limit; k, v = c.Prev() {
			var e Entry
			if err := json.Unmarshal(v, &e); err != nil {
				return fmt.Errorf("decoding audit entry %d: %w", binary.BigEndian.Uint64(k), err)
			}
			if !since.IsZero() && e.Time.Before(since) {
				break
			}
			if operator != "" && e.Operator != operator {
				continue
			}
			out = append(out, e)
		}
		return nil
	})
	return out, err
}

func seqKey(seq uint64) []byte {
	k := make([]byte, 8)
	binary.BigEndian.PutUint64(k, seq)
	return k
}
