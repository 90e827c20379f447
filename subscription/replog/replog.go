// Package replog replicates subscription writes between emsd nodes through
// a JetStream stream: the change log.
//
// Each node's bbolt is a materialised view of the log. A write is built on
// the local view, published with the log sequence it expects to follow
// (Nats-Expected-Last-Sequence), and committed once the log acknowledges
// it; a write that lost the race is rebuilt on the newer view. Every node,
// the writer included, applies the log in order to its bbolt, which records
// the applied sequence, so a restart resumes where it stopped. Snapshots of
// the view in a JetStream object store bound a new node's rebuild: it
// restores the latest one and applies only the log after it.
package replog

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ems-broker/ems/subscription"
)

// Options configure a Log.
type Options struct {
	JS jetstream.JetStream
	// Stream is the change log's stream name; its subject is derived.
	Stream   string
	Replicas int
	// Node names this node in the log's headers and in status.
	Node string
	// SnapshotEvery is how many entries pass between snapshots (0: none;
	// the log is then never purged).
	SnapshotEvery int
	// CommitTimeout bounds one commit: the publish and the wait for the
	// local view to apply it (default 10 s, above a crashed stream
	// leader's 4-9 s raft election).
	CommitTimeout time.Duration
	Logger        *slog.Logger
}

// Headers of a log entry.
const (
	headerNode   = "Ems-Node"
	snapshotName = "subscriptions"
	metaSeq      = "seq"
)

// Log is one node's end of the change log: the Committer its Store writes
// through and the follower that applies the log to it.
type Log struct {
	opts    Options
	subject string
	log     *slog.Logger
	store   *subscription.Store
	obs     jetstream.ObjectStore

	mu       sync.Mutex
	applied  uint64
	advanced chan struct{} // closed and replaced whenever applied grows
	failed   error         // the follower stopped on this

	snapping sync.Mutex
	lastSnap atomic.Uint64 // sequence of the newest snapshot known here
}

// Subject is the subject a change log stream carries.
func Subject(stream string) string { return "ems.cluster." + stream }

// SnapshotObject is the name of the latest snapshot in the bucket; its
// metadata "seq" is the change log sequence it contains.
const SnapshotObject = "subscriptions"

// SnapshotBucket is the object store holding a change log's snapshots.
func SnapshotBucket(stream string) string { return stream + "_SNAPSHOTS" }

// Open creates or updates the change log stream and its snapshot bucket
// with the configured replicas.
func Open(ctx context.Context, o Options) (*Log, error) {
	if o.JS == nil || o.Stream == "" {
		return nil, errors.New("replog: JS and Stream are required")
	}
	if o.Replicas < 1 {
		o.Replicas = 1
	}
	if o.CommitTimeout <= 0 {
		o.CommitTimeout = 10 * time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	l := &Log{opts: o, subject: Subject(o.Stream), log: o.Logger, advanced: make(chan struct{})}
	_, err := o.JS.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:        o.Stream,
		Description: "emsd subscription change log (cluster mode)",
		Subjects:    []string{l.subject},
		Storage:     jetstream.FileStorage,
		Retention:   jetstream.LimitsPolicy,
		Replicas:    o.Replicas,
		// A publish retried after a lost ack is stored once.
		Duplicates: 2 * time.Minute,
		Discard:    jetstream.DiscardOld,
	})
	if err != nil {
		return nil, fmt.Errorf("creating change log stream %s (R%d): %w", o.Stream, o.Replicas, err)
	}
	l.obs, err = o.JS.CreateOrUpdateObjectStore(ctx, jetstream.ObjectStoreConfig{
		Bucket:      SnapshotBucket(o.Stream),
		Description: "snapshots of the subscription view at a change log sequence",
		Storage:     jetstream.FileStorage,
		Replicas:    o.Replicas,
	})
	if err != nil {
		return nil, fmt.Errorf("creating snapshot bucket %s (R%d): %w", SnapshotBucket(o.Stream), o.Replicas, err)
	}
	return l, nil
}

// entry is the body of a log message: the change without its sequence,
// which is the message's stream sequence.
type entry struct {
	Op           subscription.Op            `json:"op"`
	ID           string                     `json:"id"`
	Subscription *subscription.Subscription `json:"subscription,omitempty"`
	History      subscription.HistoryEntry  `json:"history"`
}

// Commit publishes ch expecting the log to end at ch.Seq-1 and waits for
// the local view to apply it. It implements subscription.Committer.
func (l *Log) Commit(ch subscription.Change) error {
	ctx, cancel := context.WithTimeout(context.Background(), l.opts.CommitTimeout)
	defer cancel()
	body, err := json.Marshal(entry{Op: ch.Op, ID: ch.ID, Subscription: ch.Subscription, History: ch.History})
	if err != nil {
		return fmt.Errorf("encoding change %d: %w", ch.Seq, err)
	}
	msg := &nats.Msg{Subject: l.subject, Data: body, Header: nats.Header{headerNode: []string{l.opts.Node}}}
	ack, err := l.opts.JS.PublishMsg(ctx, msg,
		jetstream.WithExpectLastSequence(ch.Seq-1),
		jetstream.WithMsgID(uuid.NewString()))
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence {
		// Another node took ch.Seq: once this view has it, the caller
		// rebuilds on it.
		if err := l.WaitApplied(ctx, ch.Seq); err != nil {
			return fmt.Errorf("catching up after a lost race at %d: %w", ch.Seq, err)
		}
		return subscription.ErrStale
	}
	if err != nil {
		// A timeout leaves the outcome unknown (a crashed leader may have
		// stored it): the client was not told it succeeded, and if it was
		// stored every node applies it.
		return fmt.Errorf("publishing change %d to %s: %w", ch.Seq, l.opts.Stream, err)
	}
	if ack.Sequence != ch.Seq {
		return fmt.Errorf("change log stored change %d at %d", ch.Seq, ack.Sequence)
	}
	if err := l.WaitApplied(ctx, ack.Sequence); err != nil {
		return fmt.Errorf("waiting for change %d to apply locally: %w", ack.Sequence, err)
	}
	if every := uint64(l.opts.SnapshotEvery); every > 0 && ack.Sequence >= l.lastSnap.Load()+every {
		// A writer that sees the interval passed snapshots; snapshot()
		// rereads the bucket first, so nodes with an old idea of the last
		// snapshot do not take another.
		go l.snapshot()
	}
	return nil
}

// Applied is the last change log sequence this node's view has applied.
func (l *Log) Applied() uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.applied
}

// Err is why the follower stopped, or nil while it runs.
func (l *Log) Err() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.failed
}

func (l *Log) setApplied(seq uint64) {
	l.mu.Lock()
	if seq > l.applied {
		l.applied = seq
		close(l.advanced)
		l.advanced = make(chan struct{})
	}
	l.mu.Unlock()
}

func (l *Log) fail(err error) {
	l.mu.Lock()
	l.failed = err
	close(l.advanced)
	l.advanced = make(chan struct{})
	l.mu.Unlock()
}

// WaitApplied returns once the local view has applied seq: read-your-writes
// for a caller that knows its write's sequence.
func (l *Log) WaitApplied(ctx context.Context, seq uint64) error {
	for {
		l.mu.Lock()
		applied, ch, failed := l.applied, l.advanced, l.failed
		l.mu.Unlock()
		if applied >= seq {
			return nil
		}
		if failed != nil {
			return fmt.Errorf("change log follower stopped: %w", failed)
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("change %d not applied (at %d): %w", seq, applied, ctx.Err())
		}
	}
}

// Last is the change log's last sequence and first retained sequence.
func (l *Log) Last(ctx context.Context) (last, first uint64, err error) {
	s, err := l.opts.JS.Stream(ctx, l.opts.Stream)
	if err != nil {
		return 0, 0, fmt.Errorf("reading change log %s: %w", l.opts.Stream, err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		return 0, 0, fmt.Errorf("reading change log %s: %w", l.opts.Stream, err)
	}
	return info.State.LastSeq, info.State.FirstSeq, nil
}

// Ready is what Start reports about the catch-up.
type Ready struct {
	// Restored is the snapshot sequence restored (0: none).
	Restored uint64
	// Applied is the view's sequence when it caught up.
	Applied  uint64
	Duration time.Duration
}

// Start brings store up to date and keeps it there: it restores the latest
// snapshot when the view is behind it (a new node, or one that was away
// while the log was purged), follows the log from the view's sequence, and
// returns once the view has reached the log's end as of the call. store
// must be opened with this Log as its Committer; nothing may read it
// before Start returns (a restore does not notify watchers).
func (l *Log) Start(ctx context.Context, store *subscription.Store) (Ready, error) {
	began := time.Now()
	l.store = store
	var r Ready
	local, err := store.Seq()
	if err != nil {
		return r, err
	}
	last, first, err := l.Last(ctx)
	if err != nil {
		return r, err
	}
	if local > last {
		return r, fmt.Errorf("the local subscription view is at change %d but the change log %s ends at %d: this data directory belongs to another cluster or the log was deleted", local, l.opts.Stream, last)
	}
	if snap, err := l.obs.GetInfo(ctx, snapshotName); err == nil {
		seq, _ := strconv.ParseUint(snap.Metadata[metaSeq], 10, 64)
		l.lastSnap.Store(seq)
		// Restore when the log no longer reaches back to the view, or
		// when the view is more than an interval behind the snapshot (a
		// new node): replaying a few entries beats rewriting everything.
		if seq > local && (local+1 < first || seq-local >= uint64(max(l.opts.SnapshotEvery, 1))) {
			got, err := l.restore(ctx, store)
			if err != nil {
				return r, err
			}
			r.Restored, local = got, got
			l.log.Info("restored subscription snapshot", "seq", got)
		}
	} else if !errors.Is(err, jetstream.ErrObjectNotFound) {
		return r, fmt.Errorf("reading snapshot info: %w", err)
	}
	if last > 0 && local+1 < first {
		return r, fmt.Errorf("the change log %s starts at %d but the view is at %d and no snapshot covers the gap", l.opts.Stream, first, local)
	}
	l.setApplied(local)
	if err := l.follow(ctx, local+1); err != nil {
		return r, err
	}
	if err := l.WaitApplied(ctx, last); err != nil {
		return r, err
	}
	r.Applied, r.Duration = l.Applied(), time.Since(began)
	return r, nil
}

// restore downloads the latest snapshot to a temporary file, then restores
// it: reading the object while bbolt commits would stall the object
// store's consumer until it times out.
func (l *Log) restore(ctx context.Context, store *subscription.Store) (uint64, error) {
	f, err := os.CreateTemp("", "ems-snapshot-*")
	if err != nil {
		return 0, fmt.Errorf("downloading snapshot: %w", err)
	}
	defer func() { _ = f.Close(); _ = os.Remove(f.Name()) }()
	if err := l.obs.GetFile(ctx, snapshotName, f.Name()); err != nil {
		return 0, fmt.Errorf("downloading snapshot: %w", err)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return 0, err
	}
	return store.Restore(f)
}

// follow applies the log from seq on, in batches of whatever has arrived,
// until ctx ends.
func (l *Log) follow(ctx context.Context, from uint64) error {
	cons, err := l.opts.JS.OrderedConsumer(ctx, l.opts.Stream, jetstream.OrderedConsumerConfig{
		DeliverPolicy: jetstream.DeliverByStartSequencePolicy,
		OptStartSeq:   from,
	})
	if err != nil {
		return fmt.Errorf("following change log %s: %w", l.opts.Stream, err)
	}
	msgs := make(chan jetstream.Msg, 4096)
	cc, err := cons.Consume(func(m jetstream.Msg) {
		select {
		case msgs <- m:
		case <-ctx.Done():
		}
	}, jetstream.PullMaxMessages(2048))
	if err != nil {
		return fmt.Errorf("following change log %s: %w", l.opts.Stream, err)
	}
	go func() {
		defer cc.Stop()
		batch := make([]subscription.Change, 0, 1024)
		for {
			batch = batch[:0]
			select {
			case <-ctx.Done():
				return
			case m := <-msgs:
				ch, err := decode(m)
				if err != nil {
					l.fail(err)
					return
				}
				batch = append(batch, ch)
			}
		drain:
			for len(batch) < cap(batch) {
				select {
				case m := <-msgs:
					ch, err := decode(m)
					if err != nil {
						l.fail(err)
						return
					}
					batch = append(batch, ch)
				default:
					break drain
				}
			}
			if err := l.store.ApplyBatch(batch); err != nil {
				l.log.Error("change log follower stopped: the view needs a restart to restore a snapshot", "err", err)
				l.fail(err)
				return
			}
			l.setApplied(batch[len(batch)-1].Seq)
		}
	}()
	return nil
}

func decode(m jetstream.Msg) (subscription.Change, error) {
	md, err := m.Metadata()
	if err != nil {
		return subscription.Change{}, fmt.Errorf("change log message metadata: %w", err)
	}
	var e entry
	if err := json.Unmarshal(m.Data(), &e); err != nil {
		return subscription.Change{}, fmt.Errorf("decoding change %d: %w", md.Sequence.Stream, err)
	}
	return subscription.Change{Seq: md.Sequence.Stream, Op: e.Op, ID: e.ID, Subscription: e.Subscription, History: e.History}, nil
}

// snapshot stores the view in the object store and purges the log up to
// the previous snapshot: one interval of log stays behind the newest
// snapshot, so a node a little behind still finds its next entry.
func (l *Log) snapshot() {
	if !l.snapping.TryLock() {
		return
	}
	defer l.snapping.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if info, err := l.obs.GetInfo(ctx, snapshotName); err == nil {
		prev, _ := strconv.ParseUint(info.Metadata[metaSeq], 10, 64)
		l.lastSnap.Store(max(l.lastSnap.Load(), prev))
		if l.Applied() < prev+uint64(l.opts.SnapshotEvery) {
			return
		}
	}
	if _, err := l.TakeSnapshot(ctx); err != nil {
		l.log.Warn("subscription snapshot", "err", err)
	}
}

// TakeSnapshot writes the view to the snapshot bucket (unless a newer one
// is there) and purges the log entries no longer needed; it returns the
// snapshot's sequence.
func (l *Log) TakeSnapshot(ctx context.Context) (uint64, error) {
	var buf bytes.Buffer
	seq, err := l.store.Snapshot(&buf)
	if err != nil {
		return 0, err
	}
	size := buf.Len()
	var prev uint64
	if info, err := l.obs.GetInfo(ctx, snapshotName); err == nil {
		prev, _ = strconv.ParseUint(info.Metadata[metaSeq], 10, 64)
		if prev >= seq {
			return prev, nil
		}
	}
	if _, err := l.obs.Put(ctx, jetstream.ObjectMeta{Name: snapshotName,
		Metadata: map[string]string{metaSeq: strconv.FormatUint(seq, 10), "node": l.opts.Node}}, io.Reader(&buf)); err != nil {
		return 0, fmt.Errorf("storing snapshot at %d: %w", seq, err)
	}
	if keep := uint64(l.opts.SnapshotEvery); keep > 0 && seq > keep {
		s, err := l.opts.JS.Stream(ctx, l.opts.Stream)
		if err == nil {
			err = s.Purge(ctx, jetstream.WithPurgeSequence(seq-keep+1))
		}
		if err != nil {
			return seq, fmt.Errorf("purging change log below %d: %w", seq-keep+1, err)
		}
	}
	l.lastSnap.Store(max(l.lastSnap.Load(), seq))
	l.log.Info("subscription snapshot stored", "seq", seq, "bytes", size)
	return seq, nil
}

// Import appends changes to the end of the log, in order, pipelined (each
// still expecting its predecessor's sequence, so a concurrent writer makes
// the import fail rather than interleave). It is for seeding: moving a
// single node's subscriptions into a new cluster, or loading a test
// population. The changes' Seq is ignored (the log numbers them) and
// they must make sense after the log's current content. It returns the
// log's last sequence after the import.
func (l *Log) Import(ctx context.Context, chs []subscription.Change) (uint64, error) {
	last, _, err := l.Last(ctx)
	if err != nil {
		return 0, err
	}
	const window = 2000
	for start := 0; start < len(chs); start += window {
		end := min(start+window, len(chs))
		futs := make([]jetstream.PubAckFuture, 0, end-start)
		for i, ch := range chs[start:end] {
			body, err := json.Marshal(entry{Op: ch.Op, ID: ch.ID, Subscription: ch.Subscription, History: ch.History})
			if err != nil {
				return last, err
			}
			msg := &nats.Msg{Subject: l.subject, Data: body, Header: nats.Header{headerNode: []string{l.opts.Node}}}
			f, err := l.opts.JS.PublishMsgAsync(msg, jetstream.WithExpectLastSequence(last+uint64(i)))
			if err != nil {
				return last, fmt.Errorf("importing change %d: %w", start+i, err)
			}
			futs = append(futs, f)
		}
		for i, f := range futs {
			select {
			case ack := <-f.Ok():
				last = ack.Sequence
			case err := <-f.Err():
				return last, fmt.Errorf("importing change %d: %w", start+i, err)
			case <-ctx.Done():
				return last, ctx.Err()
			}
		}
	}
	return last, nil
}
