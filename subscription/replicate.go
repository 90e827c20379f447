package subscription

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	bolt "go.etcd.io/bbolt"
)

// Committer makes a change durable before it counts. In cluster mode it is
// a replicated log: the store builds each change against its local view,
// hands it to Commit and never writes its own buckets; the change reaches
// bbolt through Apply or ApplyBatch, as it does on every other node.
type Committer interface {
	// Commit makes ch (whose Seq is the local sequence plus one) durable
	// and returns once this store has applied it. ErrStale means another
	// writer took that sequence first: Commit returns it only after the
	// store has applied the competing change, and the store rebuilds its
	// change against the newer view and tries again.
	Commit(ch Change) error
}

// ErrStale is a Committer's answer to a change built on an old view.
var ErrStale = errors.New("subscription change built on a stale view")

// maxStaleRetries bounds how often one write is rebuilt after losing a
// race: each loss means another write committed, so the system progresses.
const maxStaleRetries = 50

// commit is write in cluster mode: build in a read transaction, then let
// the committer make it durable and applied.
func (s *Store) commit(build func(tx *bolt.Tx) (*Change, error)) (*Change, error) {
	for range maxStaleRetries {
		var ch *Change
		err := s.db.View(func(tx *bolt.Tx) error {
			c, err := build(tx)
			if err != nil || c == nil {
				return err
			}
			c.Seq = readSeq(tx) + 1
			ch = c
			return nil
		})
		if err != nil || ch == nil {
			return nil, err
		}
		err = s.committer.Commit(*ch)
		if errors.Is(err, ErrStale) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("committing change: %w", err)
		}
		return ch, nil
	}
	return nil, fmt.Errorf("committing change: lost %d races to other writers", maxStaleRetries)
}

// ApplyBatch applies consecutive change records in one transaction (a
// node catching up on the log). Records at or below the current sequence
// are skipped; a gap is an error and nothing of the batch is applied.
func (s *Store) ApplyBatch(chs []Change) error {
	var applied []Change
	err := s.db.Update(func(tx *bolt.Tx) error {
		applied = applied[:0]
		cur := readSeq(tx)
		for _, ch := range chs {
			if ch.Seq <= cur {
				continue
			}
			if ch.Seq != cur+1 {
				return fmt.Errorf("change %d follows %d: records missing", ch.Seq, cur)
			}
			if err := applyChange(tx, ch); err != nil {
				return fmt.Errorf("applying change %d: %w", ch.Seq, err)
			}
			cur = ch.Seq
			applied = append(applied, ch)
		}
		return nil
	})
	if err != nil {
		return err
	}
	for _, ch := range applied {
		s.notify(ch)
	}
	return nil
}

// Snapshot format: a magic string, the sequence, then frames of
// (bucket tag, key, value) with uvarint lengths, ending with tag 0.
var snapshotMagic = []byte("EMSSUBSNAP1\n")

const (
	snapEnd     = 0
	snapSub     = 1
	snapHistory = 2
)

// Snapshot writes the subscriptions and their history as of one sequence
// (read in one transaction) and returns that sequence. Indexes are not
// written: Restore recomputes them.
func (s *Store) Snapshot(w io.Writer) (uint64, error) {
	var seq uint64
	bw := bufio.NewWriterSize(w, 1<<16)
	err := s.db.View(func(tx *bolt.Tx) error {
		seq = readSeq(tx)
		if _, err := bw.Write(snapshotMagic); err != nil {
			return err
		}
		if _, err := bw.Write(u64(seq)); err != nil {
			return err
		}
		for _, b := range []struct {
			tag  byte
			name []byte
		}{{snapSub, bucketSubs}, {snapHistory, bucketHistory}} {
			err := tx.Bucket(b.name).ForEach(func(k, v []byte) error {
				return writeFrame(bw, b.tag, k, v)
			})
			if err != nil {
				return err
			}
		}
		return bw.WriteByte(snapEnd)
	})
	if err != nil {
		return 0, fmt.Errorf("writing subscription snapshot: %w", err)
	}
	if err := bw.Flush(); err != nil {
		return 0, fmt.Errorf("writing subscription snapshot: %w", err)
	}
	return seq, nil
}

func writeFrame(w *bufio.Writer, tag byte, k, v []byte) error {
	var n [binary.MaxVarintLen64]byte
	if err := w.WriteByte(tag); err != nil {
		return err
	}
	for _, b := range [][]byte{k, v} {
		if _, err := w.Write(n[:binary.PutUvarint(n[:], uint64(len(b)))]); err != nil {
			return err
		}
		if _, err := w.Write(b); err != nil {
			return err
		}
	}
	return nil
}

// maxFrame bounds one key or value read from a snapshot, so a corrupt
// length cannot ask for gigabytes.
const maxFrame = 16 << 20

// restoreBatch is how many records one restore transaction writes: one
// transaction for a whole 100k-subscription snapshot holds every dirty
// page in memory and spends its time rebalancing at commit.
const restoreBatch = 5000

// Restore replaces every subscription, its history and the sequence with a
// snapshot's, indexing as it goes, in transactions of restoreBatch
// records. The first transaction empties the store and sets its sequence
// to 0 and only the last one sets the snapshot's sequence, so a restore
// cut short leaves a view that is visibly behind (and is restored again),
// never a partial one claiming to be current. Watchers are not told:
// restore before anything reads the store (a node joining).
func (s *Store) Restore(r io.Reader) (uint64, error) {
	br := bufio.NewReaderSize(r, 1<<16)
	head := make([]byte, len(snapshotMagic)+8)
	if _, err := io.ReadFull(br, head); err != nil {
		return 0, fmt.Errorf("reading subscription snapshot header: %w", err)
	}
	if string(head[:len(snapshotMagic)]) != string(snapshotMagic) {
		return 0, errors.New("reading subscription snapshot: not a snapshot")
	}
	seq := binary.BigEndian.Uint64(head[len(snapshotMagic):])
	fail := func(err error) (uint64, error) {
		return 0, fmt.Errorf("restoring subscription snapshot at %d: %w", seq, err)
	}
	err := s.db.Update(func(tx *bolt.Tx) error {
		for _, b := range append([][]byte{bucketSubs, bucketHistory}, indexBuckets...) {
			if tx.Bucket(b) != nil {
				if err := tx.DeleteBucket(b); err != nil {
					return err
				}
			}
			if _, err := tx.CreateBucket(b); err != nil {
				return err
			}
		}
		return tx.Bucket(bucketMeta).Put(keySeq, u64(0))
	})
	if err != nil {
		return fail(err)
	}
	for done := false; !done; {
		err := s.db.Update(func(tx *bolt.Tx) error {
			subs, hist := tx.Bucket(bucketSubs), tx.Bucket(bucketHistory)
			subs.FillPercent, hist.FillPercent = fillAppend, fillAppend
			for range restoreBatch {
				tag, err := br.ReadByte()
				if err != nil {
					return fmt.Errorf("truncated: %w", err)
				}
				if tag == snapEnd {
					done = true
					return tx.Bucket(bucketMeta).Put(keySeq, u64(seq))
				}
				k, err := readFrame(br)
				if err != nil {
					return err
				}
				v, err := readFrame(br)
				if err != nil {
					return err
				}
				switch tag {
				case snapSub:
					sub, err := decodeSubscription(v)
					if err != nil {
						return fmt.Errorf("subscription %s: %w", k, err)
					}
					if err := subs.Put(k, v); err != nil {
						return err
					}
					err = index(tx, sub)
					if err != nil {
						return err
					}
				case snapHistory:
					if err := hist.Put(k, v); err != nil {
						return err
					}
				default:
					return fmt.Errorf("unknown frame %d", tag)
				}
			}
			return nil
		})
		if err != nil {
			return fail(err)
		}
	}
	return seq, nil
}

func readFrame(r *bufio.Reader) ([]byte, error) {
	n, err := binary.ReadUvarint(r)
	if err != nil {
		return nil, fmt.Errorf("truncated: %w", err)
	}
	if n > maxFrame {
		return nil, fmt.Errorf("frame of %d bytes", n)
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(r, b); err != nil {
		return nil, fmt.Errorf("truncated: %w", err)
	}
	return b, nil
}
