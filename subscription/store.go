package subscription

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	bolt "go.etcd.io/bbolt"
)

// Bucket names. The store is the only code that knows them.
var (
	bucketMeta     = []byte("subscription.meta")
	bucketSubs     = []byte("subscription.byID")
	bucketHistory  = []byte("subscription.history")
	bucketExplicit = []byte("subscription.idx.explicit") // event 0 nhs 0 id → matchEntry (active only)
	bucketGeneric  = []byte("subscription.idx.generic")  // event 0 rule 0 org 0 id → matchEntry (active only)
	bucketOwner    = []byte("subscription.idx.owner")    // owner 0 id
	bucketEndpoint = []byte("subscription.idx.endpoint") // endpoint 0 id
	bucketStatus   = []byte("subscription.idx.status")   // status 0 id
	bucketDup      = []byte("subscription.idx.dup")      // owner 0 endpoint 0 sha256(normalised criteria)[:16] id (not off)
	bucketEnd      = []byte("subscription.idx.end")      // indexNanos(end) (8 bytes) id (not off)

	indexBuckets = [][]byte{bucketExplicit, bucketGeneric, bucketOwner, bucketEndpoint, bucketStatus, bucketDup, bucketEnd}

	keySchema = []byte("schema")
	keySeq    = []byte("seq")
)

// SchemaVersion is the layout this code writes. Open migrates older files
// step by step and refuses newer ones rather than misreading them.
//
// Version 2 writes primary records in the compact binary encoding
// (record.go); version 1 wrote JSON. A program that knows only version 1
// could not read the new records, so the version says so.
//
// Version 3 indexes an end outside the int64-nanosecond range as the
// range's limit (indexEnd); version 2 wrapped it. A version-2 program would
// unindex such a subscription under keys version 3 never wrote, leaving
// stale entries, so it must refuse the file.
const SchemaVersion = 3

// migrations[v] upgrades a file from schema v to v+1 inside one
// transaction. Version 0 is an empty file.
var migrations = map[int]func(tx *bolt.Tx) error{
	0: func(tx *bolt.Tx) error {
		for _, b := range append([][]byte{bucketSubs, bucketHistory}, indexBuckets...) {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	},
	// Schema 1's JSON records stay readable (their first byte says which
	// encoding follows) and are rewritten in the binary encoding when they
	// next change: rewriting a million records at start would hold them
	// all in one transaction's memory for a one-off saving that bbolt
	// cannot hand back to the file system anyway (it never shrinks a file;
	// `bbolt compact` does, offline).
	1: func(*bolt.Tx) error { return nil },
	2: reindexFarEnds,
}

// reindexFarEnds replaces the index entries schema 2 wrote for ends
// outside the int64-nanosecond range: their end key sat wherever UnixNano
// wrapped to, and their match entries held the wrapped end. Only a
// subscription in the end index can have either (an off one has no end key
// and no match entries), so the step reads those records rather than all of
// them, deletes the end key actually stored and indexes the record again,
// which rewrites its match entries in place (their keys hold no end).
func reindexFarEnds(tx *bolt.Tx) error {
	type stale struct {
		key []byte
		sub *Subscription
	}
	var found []stale
	err := tx.Bucket(bucketEnd).ForEach(func(k, _ []byte) error {
		if len(k) < 8 {
			return fmt.Errorf("end index key %x is shorter than 8 bytes", k)
		}
		sub, err := getTx(tx, string(k[8:]))
		if errors.Is(err, ErrNotFound) {
			return nil // not this step's business (ExpireDue skips it too)
		}
		if err != nil {
			return err
		}
		if !sub.End.IsZero() && !bytes.Equal(k, endKey(sub.End, sub.ID)) {
			// bbolt forbids writing a bucket while iterating it.
			found = append(found, stale{bytes.Clone(k), sub})
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("reading the end index: %w", err)
	}
	for _, f := range found {
		if err := tx.Bucket(bucketEnd).Delete(f.key); err != nil {
			return fmt.Errorf("unindexing the end of %s: %w", f.sub.ID, err)
		}
		if err := index(tx, f.sub); err != nil {
			return err
		}
	}
	return nil
}

// StoreOptions configure a Store.
type StoreOptions struct {
	// DB is an open bbolt database; the store creates its own buckets in
	// it and never closes it.
	DB *bolt.DB
	// Now is the clock (default time.Now).
	Now func() time.Time
	// NewID makes subscription ids (default: 32 lower-case hex digits).
	NewID func() string
	// OnChange, when set, is called after each committed change, in order.
	OnChange func(Change)
	// Committer, when set, commits every write elsewhere first (cluster
	// mode: the replicated change log); see Committer.
	Committer Committer
}

// Store keeps subscriptions in bbolt with secondary indexes maintained in
// the same transaction as the primary record.
type Store struct {
	db        *bolt.DB
	now       func() time.Time
	newID     func() string
	onChange  func(Change)
	committer Committer

	mu       sync.Mutex
	watchers []func(Change)
}

// Watch registers fn to be called after every committed change. Calls come
// after the commit, from the writing goroutine, and two writers' calls may
// arrive out of Seq order: a watcher that needs order sorts by Seq (as
// MemIndex does).
func (s *Store) Watch(fn func(Change)) {
	s.mu.Lock()
	s.watchers = append(s.watchers, fn)
	s.mu.Unlock()
}

func (s *Store) notify(ch Change) {
	if s.onChange != nil {
		s.onChange(ch)
	}
	s.mu.Lock()
	ws := s.watchers
	s.mu.Unlock()
	for _, w := range ws {
		w(ch)
	}
}

// NewStore prepares the buckets in opts.DB, migrating an older schema.
func NewStore(opts StoreOptions) (*Store, error) {
	if opts.DB == nil {
		return nil, errors.New("subscription store: no database")
	}
	s := &Store{db: opts.DB, now: opts.Now, newID: opts.NewID, onChange: opts.OnChange, committer: opts.Committer}
	if s.now == nil {
		s.now = time.Now
	}
	if s.newID == nil {
		s.newID = newID
	}
	// Look before writing: a file already at SchemaVersion (every start
	// but the first after an upgrade) needs no write transaction, whose
	// fsync would otherwise sit on the start-up path.
	current := false
	if err := s.db.View(func(tx *bolt.Tx) error {
		v, err := schemaOf(tx)
		current = v == SchemaVersion
		return err
	}); err != nil {
		return nil, fmt.Errorf("subscription store: reading %s: %w", s.db.Path(), err)
	}
	if !current {
		if err := s.db.Update(migrate); err != nil {
			return nil, fmt.Errorf("subscription store: preparing %s: %w", s.db.Path(), err)
		}
	}
	return s, nil
}

// schemaOf is the schema version recorded in the file; 0 when none is.
func schemaOf(tx *bolt.Tx) (int, error) {
	meta := tx.Bucket(bucketMeta)
	if meta == nil {
		return 0, nil
	}
	raw := meta.Get(keySchema)
	switch len(raw) {
	case 0:
		return 0, nil
	case 8:
		return int(binary.BigEndian.Uint64(raw)), nil
	}
	return 0, fmt.Errorf("schema version %x is not 8 bytes", raw)
}

// newID makes a 32-hex-digit id from a version 7 UUID: ids are
// time-ordered, so inserts into the primary and history buckets append
// and their pages can be packed full (see fillAppend).
func newID() string {
	u, err := uuid.NewV7()
	if err != nil {
		u = uuid.New()
	}
	return hex.EncodeToString(u[:])
}

// fillAppend is the fill percent of buckets whose keys mostly grow (ids are
// time-ordered). bbolt's default of one half leaves every page half empty
// when keys arrive in order.
const fillAppend = 0.9

func migrate(tx *bolt.Tx) error {
	meta, err := tx.CreateBucketIfNotExists(bucketMeta)
	if err != nil {
		return err
	}
	v, err := schemaOf(tx)
	if err != nil {
		return err
	}
	if v > SchemaVersion {
		return fmt.Errorf("schema version %d is newer than this program's %d", v, SchemaVersion)
	}
	for ; v < SchemaVersion; v++ {
		step, ok := migrations[v]
		if !ok {
			return fmt.Errorf("no migration from schema version %d", v)
		}
		if err := step(tx); err != nil {
			return fmt.Errorf("migrating schema %d to %d: %w", v, v+1, err)
		}
		if err := meta.Put(keySchema, u64(uint64(v+1))); err != nil {
			return err
		}
	}
	return nil
}

// rebuildIndexes empties every index bucket and refills it from the
// primary records. A migration that changes an index layout bumps
// SchemaVersion and calls it; operators can run it through RebuildIndexes.
func rebuildIndexes(tx *bolt.Tx) error {
	for _, b := range indexBuckets {
		if tx.Bucket(b) != nil {
			if err := tx.DeleteBucket(b); err != nil {
				return fmt.Errorf("dropping %s: %w", b, err)
			}
		}
		if _, err := tx.CreateBucket(b); err != nil {
			return fmt.Errorf("creating %s: %w", b, err)
		}
	}
	return tx.Bucket(bucketSubs).ForEach(func(k, v []byte) error {
		sub, err := decodeSubscription(v)
		if err != nil {
			return fmt.Errorf("reading subscription %s: %w", k, err)
		}
		return index(tx, sub)
	})
}

// RebuildIndexes recomputes every secondary index from the primary
// records in one transaction.
func (s *Store) RebuildIndexes() error {
	if err := s.db.Update(rebuildIndexes); err != nil {
		return fmt.Errorf("rebuilding subscription indexes: %w", err)
	}
	return nil
}

func u64(v uint64) []byte {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], v)
	return b[:]
}

// Seq is the sequence number of the last applied change.
func (s *Store) Seq() (uint64, error) {
	var seq uint64
	err := s.db.View(func(tx *bolt.Tx) error {
		seq = readSeq(tx)
		return nil
	})
	return seq, err
}

func readSeq(tx *bolt.Tx) uint64 {
	if raw := tx.Bucket(bucketMeta).Get(keySeq); raw != nil {
		return binary.BigEndian.Uint64(raw)
	}
	return 0
}

// Apply applies a change record produced by another store (cluster
// replication). Records at or below the current sequence are skipped, so
// replaying a log is idempotent; a gap is an error.
func (s *Store) Apply(ch Change) error {
	applied := false
	err := s.db.Update(func(tx *bolt.Tx) error {
		cur := readSeq(tx)
		if ch.Seq <= cur {
			return nil
		}
		if ch.Seq != cur+1 {
			return fmt.Errorf("change %d follows %d: records missing", ch.Seq, cur)
		}
		applied = true
		return applyChange(tx, ch)
	})
	if err != nil {
		return fmt.Errorf("applying change %d: %w", ch.Seq, err)
	}
	if applied {
		s.notify(ch)
	}
	return nil
}

// write runs build inside a write transaction; build returns the change to
// apply (or nil for none), which gets the next sequence number.
func (s *Store) write(build func(tx *bolt.Tx) (*Change, error)) (*Change, error) {
	if s.committer != nil {
		return s.commit(build)
	}
	var ch *Change
	err := s.db.Update(func(tx *bolt.Tx) error {
		c, err := build(tx)
		if err != nil || c == nil {
			return err
		}
		c.Seq = readSeq(tx) + 1
		ch = c
		return applyChange(tx, *c)
	})
	if err != nil {
		return nil, err
	}
	if ch != nil {
		s.notify(*ch)
	}
	return ch, nil
}

// applyChange is the only code that writes subscription buckets.
func applyChange(tx *bolt.Tx, ch Change) error {
	old, err := getTx(tx, ch.ID)
	if err != nil && !errors.Is(err, ErrNotFound) {
		return err
	}
	if old != nil {
		if err := unindex(tx, old); err != nil {
			return err
		}
	}
	subs := tx.Bucket(bucketSubs)
	subs.FillPercent = fillAppend
	switch ch.Op {
	case OpPut:
		if ch.Subscription == nil || ch.Subscription.ID != ch.ID {
			return fmt.Errorf("put change %d carries no subscription %s", ch.Seq, ch.ID)
		}
		raw, err := encodeSubscription(ch.Subscription)
		if err != nil {
			return err
		}
		if err := subs.Put([]byte(ch.ID), raw); err != nil {
			return err
		}
		if err := index(tx, ch.Subscription); err != nil {
			return err
		}
	case OpDelete:
		if err := subs.Delete([]byte(ch.ID)); err != nil {
			return err
		}
	default:
		return fmt.Errorf("change %d: unknown op %d", ch.Seq, ch.Op)
	}
	hist, err := json.Marshal(ch.History)
	if err != nil {
		return err
	}
	hb := tx.Bucket(bucketHistory)
	hb.FillPercent = fillAppend
	if err := hb.Put(historyKey(ch.ID, ch.Seq), hist); err != nil {
		return err
	}
	return tx.Bucket(bucketMeta).Put(keySeq, u64(ch.Seq))
}

func historyKey(id string, seq uint64) []byte {
	return append(append([]byte(id), 0), u64(seq)...)
}

func getTx(tx *bolt.Tx, id string) (*Subscription, error) {
	raw := tx.Bucket(bucketSubs).Get([]byte(id))
	if raw == nil {
		return nil, ErrNotFound
	}
	sub, err := decodeSubscription(raw)
	if err != nil {
		return nil, fmt.Errorf("reading subscription %s: %w", id, err)
	}
	return sub, nil
}

// key joins parts with NUL separators; no part may contain NUL (validation
// guarantees it for every indexed field).
func key(parts ...string) []byte {
	return []byte(strings.Join(parts, "\x00"))
}

func endKey(end time.Time, id string) []byte {
	return append(u64(uint64(indexNanos(end))), id...)
}

// indexKeys lists every (bucket, key, value) a subscription is indexed
// under. index and unindex both use it, so the two cannot disagree.
func indexKeys(sub *Subscription) []indexEntry {
	out := []indexEntry{
		{bucketOwner, key(sub.Owner, sub.ID), nil},
		{bucketEndpoint, key(sub.Channel.Endpoint, sub.ID), nil},
		{bucketStatus, key(string(sub.Status), sub.ID), nil},
	}
	if sub.Status != StatusOff {
		out = append(out, indexEntry{bucketDup, append(dupPrefix(sub), sub.ID...), nil})
		if !sub.End.IsZero() {
			out = append(out, indexEntry{bucketEnd, endKey(sub.End, sub.ID), nil})
		}
	}
	if keys := matchKeys(sub); len(keys) > 0 {
		entry := encodeMatchEntry(entryOf(sub))
		for _, k := range keys {
			if k.Lookup.Kind == Explicit {
				out = append(out, indexEntry{bucketExplicit, key(k.Event, k.Lookup.NHSNumber, sub.ID), entry})
			} else {
				out = append(out, indexEntry{bucketGeneric, key(k.Event, string(k.Lookup.Rule), k.Lookup.Organisation, sub.ID), entry})
			}
		}
	}
	return out
}

// matchKey is one (event, lookup) a subscription can be found under.
type matchKey struct {
	Event  string
	Lookup Lookup
}

// matchKeys lists where the matcher finds a subscription: only active ones
// are indexed for matching.
func matchKeys(sub *Subscription) []matchKey {
	if sub.Status != StatusActive {
		return nil
	}
	c := sub.Criteria
	l := Lookup{Kind: Explicit, NHSNumber: c.NHSNumber}
	if c.Kind == Generic {
		l = Lookup{Kind: Generic, Rule: c.Rule, Organisation: c.Organisation}
	}
	out := make([]matchKey, len(c.Events))
	for i, ev := range c.Events {
		out[i] = matchKey{Event: ev, Lookup: l}
	}
	return out
}

type indexEntry struct {
	bucket, key, value []byte
}

// appendIndexes are the index buckets whose new keys land at the end of
// the bucket: the status index's few prefixes each end in a time-ordered
// id, so its pages can be packed full as in the primary bucket (at bbolt's
// default of one half it took 113 MB of leaves at 1M subscriptions for
// 55 MB of keys; packed, 62 MB). The owner and endpoint indexes also
// append, but within each owner's or endpoint's range: packing them helped
// where ranges span many pages (1,000 subscriptions per owner: 111 → 67
// MB) and hurt where they do not (100 per endpoint: 94 → 126 MB, as the
// small right halves of splits are left behind), so they keep the
// default, as do the hash- and NHS-number-keyed buckets.
var appendIndexes = [][]byte{bucketStatus}

func indexBucket(tx *bolt.Tx, name []byte) *bolt.Bucket {
	b := tx.Bucket(name)
	for _, a := range appendIndexes {
		if bytes.Equal(a, name) {
			b.FillPercent = fillAppend
		}
	}
	return b
}

func index(tx *bolt.Tx, sub *Subscription) error {
	for _, e := range indexKeys(sub) {
		v := e.value
		if v == nil {
			v = []byte{}
		}
		if err := indexBucket(tx, e.bucket).Put(e.key, v); err != nil {
			return fmt.Errorf("indexing %s in %s: %w", sub.ID, e.bucket, err)
		}
	}
	return nil
}

func unindex(tx *bolt.Tx, sub *Subscription) error {
	for _, e := range indexKeys(sub) {
		if err := tx.Bucket(e.bucket).Delete(e.key); err != nil {
			return fmt.Errorf("unindexing %s from %s: %w", sub.ID, e.bucket, err)
		}
	}
	return nil
}

// Get returns the subscription with the given id.
func (s *Store) Get(id string) (*Subscription, error) {
	var sub *Subscription
	err := s.db.View(func(tx *bolt.Tx) error {
		var err error
		sub, err = getTx(tx, id)
		return err
	})
	return sub, err
}

// CreateOptions tune one create.
type CreateOptions struct {
	// RejectDuplicate makes a create whose (owner, endpoint, normalised
	// criteria) equals a subscription that is not off fail with a
	// *DuplicateError.
	RejectDuplicate bool
}

// Create stores a new subscription: it assigns the id, versionId 1 and the
// timestamps, and records the creation in the history. The duplicate check
// runs in the same transaction as the insert, so two concurrent creates
// cannot both pass it.
func (s *Store) Create(sub Subscription, actor string, opts CreateOptions) (*Subscription, error) {
	if err := checkIndexable(&sub); err != nil {
		return nil, err
	}
	if !sub.Status.Valid() {
		return nil, fmt.Errorf("creating subscription: status %q", sub.Status)
	}
	now := s.now().UTC()
	sub.ID = s.newID()
	sub.VersionID = 1
	sub.Created, sub.LastUpdated = now, now
	_, err := s.write(func(tx *bolt.Tx) (*Change, error) {
		if tx.Bucket(bucketSubs).Get([]byte(sub.ID)) != nil {
			return nil, fmt.Errorf("creating subscription: id %s already exists", sub.ID)
		}
		if opts.RejectDuplicate {
			if id := findDuplicate(tx, &sub); id != "" {
				return nil, &DuplicateError{ExistingID: id}
			}
		}
		return &Change{Op: OpPut, ID: sub.ID, Subscription: &sub,
			History: HistoryEntry{VersionID: 1, At: now, Actor: actor, Action: ActionCreate, To: sub.Status}}, nil
	})
	if err != nil {
		return nil, err
	}
	return &sub, nil
}

// dupPrefix is the duplicate-index prefix of a subscription: owner and
// endpoint (NUL-free) then a fixed-length digest of the normalised
// criteria, which keeps keys short whatever the criteria length.
func dupPrefix(sub *Subscription) []byte {
	sum := sha256.Sum256([]byte(sub.Criteria.Normalised()))
	return append(append(key(sub.Owner, sub.Channel.Endpoint), 0), sum[:16]...)
}

func findDuplicate(tx *bolt.Tx, sub *Subscription) string {
	prefix := dupPrefix(sub)
	c := tx.Bucket(bucketDup).Cursor()
	for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
		if id := string(k[len(prefix):]); id != sub.ID {
			return id
		}
	}
	return ""
}

// checkIndexable refuses values that would corrupt index keys.
func checkIndexable(sub *Subscription) error {
	for _, f := range []string{sub.Owner, sub.Channel.Endpoint, sub.Criteria.NHSNumber, sub.Criteria.Organisation} {
		if strings.IndexByte(f, 0) >= 0 {
			return errors.New("subscription field contains a NUL byte")
		}
	}
	if sub.Owner == "" || sub.Channel.Endpoint == "" {
		return errors.New("subscription has no owner or endpoint")
	}
	if sub.Criteria.Kind != Explicit && sub.Criteria.Kind != Generic {
		return errors.New("subscription has no parsed criteria")
	}
	return nil
}

// Update replaces the client-controlled content of a subscription (PUT).
// ifVersion, when not zero, must equal the stored versionId. The id,
// creation time, owner history and status are kept unless mutate changes
// them; status changes must go through SetStatus.
func (s *Store) Update(id string, ifVersion uint64, actor string, opts CreateOptions, mutate func(*Subscription) error) (*Subscription, error) {
	var out *Subscription
	_, err := s.write(func(tx *bolt.Tx) (*Change, error) {
		old, err := getTx(tx, id)
		if err != nil {
			return nil, err
		}
		if ifVersion != 0 && ifVersion != old.VersionID {
			return nil, fmt.Errorf("%w: stored version is %d, not %d", ErrVersionConflict, old.VersionID, ifVersion)
		}
		next := *old
		if err := mutate(&next); err != nil {
			return nil, err
		}
		// An update may send a subscription back for review, never
		// activate or suspend it: those are lifecycle steps (SetStatus).
		if next.Status != old.Status && next.Status != StatusRequested {
			return nil, fmt.Errorf("%w: update cannot change status (%s → %s)", ErrTransition, old.Status, next.Status)
		}
		next.ID, next.Created, next.CreatedBy = old.ID, old.Created, old.CreatedBy
		next.VersionID = old.VersionID + 1
		next.LastUpdated = s.now().UTC()
		if err := checkIndexable(&next); err != nil {
			return nil, err
		}
		if opts.RejectDuplicate && next.Status != StatusOff {
			if dup := findDuplicate(tx, &next); dup != "" {
				return nil, &DuplicateError{ExistingID: dup}
			}
		}
		out = &next
		return &Change{Op: OpPut, ID: id, Subscription: &next,
			History: HistoryEntry{VersionID: next.VersionID, At: next.LastUpdated, Actor: actor, Action: ActionUpdate, From: old.Status, To: next.Status}}, nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// SetStatus moves a subscription through its lifecycle, bumping versionId
// and recording who, when and why. Setting the current status is a no-op.
func (s *Store) SetStatus(id string, to Status, actor, note string) (*Subscription, error) {
	return s.SetStatusFrom(id, nil, to, actor, note)
}

// SetStatusFrom is SetStatus that also requires the current status to be
// one of from (any when empty), checked in the same transaction.
func (s *Store) SetStatusFrom(id string, from []Status, to Status, actor, note string) (*Subscription, error) {
	var out *Subscription
	_, err := s.write(func(tx *bolt.Tx) (*Change, error) {
		old, err := getTx(tx, id)
		if err != nil {
			return nil, err
		}
		if len(from) > 0 && !containsStatus(from, old.Status) {
			return nil, fmt.Errorf("%w: subscription is %s, not %v", ErrTransition, old.Status, from)
		}
		if old.Status == to {
			out = old
			return nil, nil
		}
		if !CanTransition(old.Status, to) {
			return nil, fmt.Errorf("%w: %s → %s", ErrTransition, old.Status, to)
		}
		next := *old
		next.Status = to
		next.VersionID++
		next.LastUpdated = s.now().UTC()
		out = &next
		return &Change{Op: OpPut, ID: id, Subscription: &next,
			History: HistoryEntry{VersionID: next.VersionID, At: next.LastUpdated, Actor: actor, Action: ActionStatus, From: old.Status, To: to, Note: note}}, nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// Delete removes a subscription. Its history is kept for audit.
func (s *Store) Delete(id, actor string) error {
	_, err := s.write(func(tx *bolt.Tx) (*Change, error) {
		old, err := getTx(tx, id)
		if err != nil {
			return nil, err
		}
		return &Change{Op: OpDelete, ID: id,
			History: HistoryEntry{VersionID: old.VersionID, At: s.now().UTC(), Actor: actor, Action: ActionDelete, From: old.Status}}, nil
	})
	return err
}

// History lists the recorded changes of a subscription, oldest first; it
// outlives the subscription.
func (s *Store) History(id string) ([]HistoryEntry, error) {
	var out []HistoryEntry
	err := s.db.View(func(tx *bolt.Tx) error {
		prefix := append([]byte(id), 0)
		c := tx.Bucket(bucketHistory).Cursor()
		for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
			var h HistoryEntry
			if err := json.Unmarshal(v, &h); err != nil {
				return fmt.Errorf("reading history of %s: %w", id, err)
			}
			out = append(out, h)
		}
		return nil
	})
	return out, err
}

// ExpireDue turns off every subscription whose end has passed at now and
// returns their ids. It is the body of the background sweep.
func (s *Store) ExpireDue(now time.Time, actor string) ([]string, error) {
	var due []string
	err := s.db.View(func(tx *bolt.Tx) error {
		limit := u64(uint64(indexNanos(now)))
		c := tx.Bucket(bucketEnd).Cursor()
		for k, _ := c.First(); k != nil && bytes.Compare(k[:8], limit) <= 0; k, _ = c.Next() {
			due = append(due, string(k[8:]))
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	var done []string
	for _, id := range due {
		sub, err := s.Get(id)
		if errors.Is(err, ErrNotFound) {
			continue
		}
		if err != nil {
			return done, err
		}
		// The index end, not sub.Ended: an end after 2262 stops
		// matching at the last index instant, so it expires then too.
		if sub.End.IsZero() || now.Before(indexEnd(sub.End)) || sub.Status == StatusOff {
			continue
		}
		if _, err := s.SetStatus(id, StatusOff, actor, "end "+sub.End.Format(time.RFC3339)+" passed"); err != nil {
			if errors.Is(err, ErrNotFound) {
				continue
			}
			return done, fmt.Errorf("expiring %s: %w", id, err)
		}
		done = append(done, id)
	}
	return done, nil
}

// Query selects subscriptions for search and the admin API. Owner or
// Status picks the index scanned (Owner first); the other fields filter.
type Query struct {
	Owner     string
	Status    Status
	Endpoint  string
	Event     string
	NHSNumber string
	Rule      RuleType
	Kind      Kind
	// After is the id to continue after (paging); Limit caps the result
	// (zero: no cap).
	After string
	Limit int
}

func (q Query) matches(sub *Subscription) bool {
	switch {
	case q.Owner != "" && sub.Owner != q.Owner,
		q.Status != "" && sub.Status != q.Status,
		q.Endpoint != "" && sub.Channel.Endpoint != q.Endpoint,
		q.Event != "" && !sub.Criteria.HasEvent(q.Event),
		q.NHSNumber != "" && sub.Criteria.NHSNumber != q.NHSNumber,
		q.Rule != "" && sub.Criteria.Rule != q.Rule,
		q.Kind != 0 && sub.Criteria.Kind != q.Kind:
		return false
	}
	return true
}

// List returns the subscriptions selected by q, ordered by id within the
// scanned index, and whether more follow.
func (s *Store) List(q Query) (subs []*Subscription, more bool, err error) {
	err = s.db.View(func(tx *bolt.Tx) error {
		var prefix []byte
		var c *bolt.Cursor
		switch {
		case q.Owner != "":
			prefix, c = append([]byte(q.Owner), 0), tx.Bucket(bucketOwner).Cursor()
		case q.Status != "":
			prefix, c = append([]byte(q.Status), 0), tx.Bucket(bucketStatus).Cursor()
		case q.Endpoint != "":
			prefix, c = append([]byte(q.Endpoint), 0), tx.Bucket(bucketEndpoint).Cursor()
		default:
			prefix, c = nil, tx.Bucket(bucketSubs).Cursor()
		}
		start := prefix
		if q.After != "" {
			start = append(append([]byte{}, prefix...), q.After...)
			start = append(start, 0) // strictly after
		}
		for k, _ := c.Seek(start); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
			sub, err := getTx(tx, string(k[len(prefix):]))
			if err != nil {
				return err
			}
			if !q.matches(sub) {
				continue
			}
			if q.Limit > 0 && len(subs) == q.Limit {
				more = true
				return nil
			}
			subs = append(subs, sub)
		}
		return nil
	})
	return subs, more, err
}

// Count returns how many subscriptions are stored.
func (s *Store) Count() (int, error) {
	n := 0
	err := s.db.View(func(tx *bolt.Tx) error {
		n = tx.Bucket(bucketSubs).Stats().KeyN
		return nil
	})
	return n, err
}

func containsStatus(list []Status, s Status) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
