package refdata

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/csv"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
)

var (
	bucketMeta = []byte("refdata.meta") // active/<kind>, seq/<kind>, version/<kind>/<n>
	bucketData = []byte("refdata.data") // nested: <kind>/<n> rows, <kind>/<n>.dict
)

var (
	// ErrNotFound: no such dataset version.
	ErrNotFound = errors.New("no such dataset version")
	// ErrBusy: an import of this kind is already running.
	ErrBusy = errors.New("an import of this kind is already running")
	// ErrNoPrevious: nothing to roll back to.
	ErrNoPrevious = errors.New("no previous version to roll back to")
	// ErrNoData: a lookup was made before any dataset of that kind was activated.
	ErrNoData = errors.New("no active dataset")
)

// State of a dataset version.
type State string

const (
	// Staging: the import is writing it; never read.
	Staging State = "staging"
	// Ready: complete and valid; may be activated.
	Ready State = "ready"
)

// Version describes one imported dataset.
type Version struct {
	Kind    Kind   `json:"kind"`
	Version uint64 `json:"version"`
	State   State  `json:"state"`
	Source  string `json:"source"`
	SHA256  string `json:"sha256"`
	Rows    int64  `json:"rows"`
	Bytes   int64  `json:"bytes"`
	// Terminated counts terminated postcodes (postcode directory only).
	Terminated int64      `json:"terminated,omitempty"`
	Actor      string     `json:"actor,omitempty"`
	Started    time.Time  `json:"started"`
	Finished   time.Time  `json:"finished,omitzero"`
	Activated  *time.Time `json:"activated,omitempty"`
	// Active and Previous are filled when listing: Previous is what a
	// rollback would activate.
	Active   bool `json:"active"`
	Previous bool `json:"previous"`
}

// Label is the "kind@version" form the match explanation records.
func (v Version) Label() string { return fmt.Sprintf("%s@%d", v.Kind, v.Version) }

// pointer is the per-kind activation record: flipping Active is the one
// write that makes a new dataset visible.
type pointer struct {
	Active   uint64 `json:"active"`
	Previous uint64 `json:"previous"`
}

// Progress reports an import's advance, for a progress bar.
type Progress struct {
	Kind  Kind
	Rows  int64
	Bytes int64
	// Total is the file size when known, else 0.
	Total int64
}

// StoreOptions configure a Store.
type StoreOptions struct {
	// DB is the service's bbolt database. Mandatory.
	DB *bolt.DB
	// Logger: zero value is slog.Default().
	Logger *slog.Logger
	// Now: zero value is time.Now.
	Now func() time.Time
	// BatchRows is how many rows one write transaction holds: large enough
	// to amortise the commit's fsync, small enough that a transaction's
	// dirty pages stay a few MB. Zero value is 50000.
	BatchRows int
	// LogEvery is the interval of an import's progress log lines. Zero
	// value is 10 s.
	LogEvery time.Duration
}

// Store holds the versioned reference datasets.
type Store struct {
	db        *bolt.DB
	log       *slog.Logger
	now       func() time.Time
	batchRows int
	logEvery  time.Duration

	mu        sync.Mutex // serialises activation and import bookkeeping
	importing map[Kind]bool
	snap      atomic.Pointer[snapshot]
}

// snapshot is what readers use: the active versions and the postcode
// dictionary of the active directory, swapped whole on activation.
type snapshot struct {
	active map[Kind]uint64
	dict   []string
	label  string
}

// OpenStore creates the buckets, discards imports a crash interrupted and
// loads the active versions.
func OpenStore(o StoreOptions) (*Store, error) {
	if o.DB == nil {
		return nil, errors.New("refdata: StoreOptions.DB is mandatory")
	}
	s := &Store{db: o.DB, log: o.Logger, now: o.Now, batchRows: o.BatchRows, logEvery: o.LogEvery, importing: map[Kind]bool{}}
	if s.log == nil {
		s.log = slog.Default()
	}
	if s.now == nil {
		s.now = time.Now
	}
	if s.batchRows <= 0 {
		s.batchRows = 50000
	}
	if s.logEvery <= 0 {
		s.logEvery = 10 * time.Second
	}
	var stale []Version
	err := s.db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketMeta, bucketData} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		for _, k := range Kinds {
			vs, err := versions(tx, k)
			if err != nil {
				return err
			}
			for _, v := range vs {
				if v.State == Staging {
					stale = append(stale, v)
				}
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("opening reference data: %w", err)
	}
	for _, v := range stale {
		s.log.Warn("refdata: discarding an import interrupted by a restart", "kind", v.Kind, "version", v.Version, "source", v.Source)
		if err := s.drop(v.Kind, v.Version); err != nil {
			return nil, err
		}
	}
	if err := s.reload(); err != nil {
		return nil, err
	}
	return s, nil
}

func versionKey(k Kind, n uint64) []byte { return fmt.Appendf(nil, "version/%s/%020d", k, n) }
func dataName(k Kind, n uint64) []byte   { return fmt.Appendf(nil, "%s/%020d", k, n) }
func dictName(k Kind, n uint64) []byte   { return fmt.Appendf(nil, "%s/%020d.dict", k, n) }

func getPointer(tx *bolt.Tx, k Kind) (pointer, error) {
	var p pointer
	if v := tx.Bucket(bucketMeta).Get([]byte("active/" + string(k))); v != nil {
		if err := json.Unmarshal(v, &p); err != nil {
			return p, fmt.Errorf("active %s pointer: %w", k, err)
		}
	}
	return p, nil
}

func putPointer(tx *bolt.Tx, k Kind, p pointer) error {
	b, _ := json.Marshal(p)
	return tx.Bucket(bucketMeta).Put([]byte("active/"+string(k)), b)
}

func getVersion(tx *bolt.Tx, k Kind, n uint64) (Version, error) {
	var v Version
	b := tx.Bucket(bucketMeta).Get(versionKey(k, n))
	if b == nil {
		return v, fmt.Errorf("%s version %d: %w", k, n, ErrNotFound)
	}
	if err := json.Unmarshal(b, &v); err != nil {
		return v, fmt.Errorf("%s version %d: %w", k, n, err)
	}
	return v, nil
}

func putVersion(tx *bolt.Tx, v Version) error {
	v.Active, v.Previous = false, false // derived when listing
	b, _ := json.Marshal(v)
	return tx.Bucket(bucketMeta).Put(versionKey(v.Kind, v.Version), b)
}

func versions(tx *bolt.Tx, k Kind) ([]Version, error) {
	var out []Version
	prefix := []byte("version/" + string(k) + "/")
	c := tx.Bucket(bucketMeta).Cursor()
	for key, b := c.Seek(prefix); key != nil && bytes.HasPrefix(key, prefix); key, b = c.Next() {
		var v Version
		if err := json.Unmarshal(b, &v); err != nil {
			return nil, fmt.Errorf("%s: %w", key, err)
		}
		out = append(out, v)
	}
	return out, nil
}

// Versions lists the versions of a kind, oldest first, with Active and
// Previous marked.
func (s *Store) Versions(k Kind) ([]Version, error) {
	var out []Version
	err := s.db.View(func(tx *bolt.Tx) error {
		p, err := getPointer(tx, k)
		if err != nil {
			return err
		}
		out, err = versions(tx, k)
		for i := range out {
			out[i].Active = out[i].Version == p.Active
			out[i].Previous = out[i].Version == p.Previous
		}
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("listing %s versions: %w", k, err)
	}
	return out, nil
}

// Version returns one version.
func (s *Store) Version(k Kind, n uint64) (Version, error) {
	var v Version
	err := s.db.View(func(tx *bolt.Tx) error {
		p, err := getPointer(tx, k)
		if err != nil {
			return err
		}
		v, err = getVersion(tx, k, n)
		v.Active, v.Previous = n == p.Active, n == p.Previous
		return err
	})
	return v, err
}

// Active returns the active version of a kind, or ErrNoData.
func (s *Store) Active(k Kind) (Version, error) {
	n := s.snap.Load().active[k]
	if n == 0 {
		return Version{}, fmt.Errorf("%s: %w", k, ErrNoData)
	}
	return s.Version(k, n)
}

// reload rebuilds the reader snapshot from the pointers.
func (s *Store) reload() error {
	sn := &snapshot{active: map[Kind]uint64{}}
	err := s.db.View(func(tx *bolt.Tx) error {
		var labels []string
		for _, k := range Kinds {
			p, err := getPointer(tx, k)
			if err != nil {
				return err
			}
			if p.Active == 0 {
				continue
			}
			sn.active[k] = p.Active
			labels = append(labels, fmt.Sprintf("%s@%d", k, p.Active))
		}
		sn.label = strings.Join(labels, ",")
		if n := sn.active[NSPL]; n != 0 {
			d := tx.Bucket(bucketData).Bucket(dictName(NSPL, n))
			if d == nil {
				return fmt.Errorf("postcode directory version %d has no dictionary", n)
			}
			sn.dict = make([]string, d.Stats().KeyN)
			return d.ForEach(func(k, v []byte) error {
				i := int(binary.BigEndian.Uint16(k))
				if i == 0 || i > len(sn.dict) {
					return fmt.Errorf("postcode dictionary: bad index %d", i)
				}
				sn.dict[i-1] = string(v)
				return nil
			})
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("loading active reference data: %w", err)
	}
	s.snap.Store(sn)
	return nil
}

// Source describes the file an import reads.
type Source struct {
	// Name is the file name reported in errors and the version list.
	Name string
	// Size is the length in bytes when known (progress, truncation check).
	Size int64
	// Actor is the operator who asked for the import.
	Actor string
	// Activate makes the version active as soon as it is complete.
	Activate bool
	// Progress, when set, is called after every batch.
	Progress func(Progress)
}

// ImportError is a file that cannot be imported; Line and Column locate
// the fault (Column is the 1-based field number, or the byte position for
// a CSV syntax error when Byte is set).
type ImportError struct {
	File       string
	Line       int
	Column     int
	ColumnName string
	Byte       bool
	Err        error
}

func (e *ImportError) Error() string {
	var b strings.Builder
	b.WriteString(e.File)
	if e.Line > 0 {
		fmt.Fprintf(&b, ": line %d", e.Line)
	}
	if e.Column > 0 {
		if e.Byte {
			fmt.Fprintf(&b, ", byte %d", e.Column)
		} else {
			fmt.Fprintf(&b, ", column %d", e.Column)
		}
		if e.ColumnName != "" {
			fmt.Fprintf(&b, " (%s)", e.ColumnName)
		}
	}
	fmt.Fprintf(&b, ": %v", e.Err)
	return b.String()
}

func (e *ImportError) Unwrap() error { return e.Err }

// countingReader counts bytes, feeds the checksum and remembers the last
// byte, so the end of a file cut mid-line can be told from a complete one.
type countingReader struct {
	r    io.Reader
	h    hash.Hash
	n    int64
	last byte
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	if n > 0 {
		c.h.Write(p[:n])
		c.n += int64(n)
		c.last = p[n-1]
	}
	return n, err
}

type kv struct {
	k string
	v []byte
}

// Import streams one file into a new version of kind k. Rows are
// validated one by one and written in batches into a staging bucket that
// no reader looks at; any fault (a bad row, a truncated file, a read error,
// a cancelled ctx) deletes the staging version, so nothing of a failed
// import is ever visible. Memory is bounded by one batch, whatever the
// file size.
func (s *Store) Import(ctx context.Context, k Kind, r io.Reader, src Source) (Version, error) {
	return s.importAt(ctx, k, 0, r, src)
}

// importAt is Import as version n, or the next free number when n is 0.
// Cluster mode numbers versions cluster-wide, so a node loading another's
// import must store it under the same number.
func (s *Store) importAt(ctx context.Context, k Kind, at uint64, r io.Reader, src Source) (Version, error) {
	if !k.Valid() {
		return Version{}, fmt.Errorf("unknown dataset kind %q", k)
	}
	s.mu.Lock()
	if s.importing[k] {
		s.mu.Unlock()
		return Version{}, fmt.Errorf("importing %s: %w", k, ErrBusy)
	}
	s.importing[k] = true
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.importing, k)
		s.mu.Unlock()
	}()

	v := Version{Kind: k, State: Staging, Source: src.Name, Actor: src.Actor, Started: s.now().UTC()}
	err := s.db.Update(func(tx *bolt.Tx) error {
		meta := tx.Bucket(bucketMeta)
		seqKey := []byte("seq/" + string(k))
		var last uint64
		if b := meta.Get(seqKey); b != nil {
			last = binary.BigEndian.Uint64(b)
		}
		n := at
		if n == 0 {
			n = last + 1
		} else if meta.Get(versionKey(k, n)) != nil {
			return fmt.Errorf("%s version %d exists already", k, n)
		}
		v.Version = n
		if err := meta.Put(seqKey, binary.BigEndian.AppendUint64(nil, max(last, n))); err != nil {
			return err
		}
		if _, err := tx.Bucket(bucketData).CreateBucket(dataName(k, n)); err != nil {
			return err
		}
		return putVersion(tx, v)
	})
	if err != nil {
		return Version{}, fmt.Errorf("starting %s import: %w", k, err)
	}
	v, err = s.fill(ctx, v, r, src)
	if err != nil {
		if derr := s.drop(k, v.Version); derr != nil {
			err = errors.Join(err, derr)
		}
		return Version{}, err
	}
	s.log.Info("refdata: import complete", "kind", k, "version", v.Version, "source", v.Source,
		"rows", v.Rows, "bytes", v.Bytes, "sha256", v.SHA256, "took", v.Finished.Sub(v.Started).Round(time.Millisecond))
	if src.Activate {
		return s.Activate(k, v.Version, src.Actor)
	}
	return v, nil
}

func (s *Store) fill(ctx context.Context, v Version, r io.Reader, src Source) (Version, error) {
	k := v.Kind
	cr := &countingReader{r: r, h: sha256.New()}
	cs := csv.NewReader(bufio.NewReaderSize(cr, 1<<20))
	cs.ReuseRecord = true
	cs.FieldsPerRecord = -1 // the formats say which field is missing
	f := newFormat(k)
	fail := func(line int, err error) error {
		ie := &ImportError{File: src.Name, Line: line, Err: err}
		var fe *FieldError
		var pe *csv.ParseError
		switch {
		case errors.As(err, &fe):
			ie.Column, ie.ColumnName, ie.Err = fe.Column, fe.Name, fe.Err
		case errors.As(err, &pe):
			ie.Line, ie.Column, ie.Byte, ie.Err = pe.Line, pe.Column, true, pe.Err
		}
		return ie
	}
	if headerless(k) {
		if err := f.header(nil); err != nil {
			return v, fail(0, err)
		}
	} else {
		rec, err := cs.Read()
		if err == io.EOF {
			return v, fail(1, errors.New("empty file: expected a header row"))
		}
		if err != nil {
			return v, fail(1, err)
		}
		if err := f.header(rec); err != nil {
			return v, fail(1, err)
		}
	}
	batch := make([]kv, 0, s.batchRows)
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		// Sorted keys fill bbolt pages in order instead of splitting them.
		slices.SortFunc(batch, func(a, b kv) int { return strings.Compare(a.k, b.k) })
		err := s.db.Update(func(tx *bolt.Tx) error {
			b := tx.Bucket(bucketData).Bucket(dataName(k, v.Version))
			if b == nil {
				return fmt.Errorf("staging bucket of %s version %d vanished", k, v.Version)
			}
			b.FillPercent = 0.9
			for _, e := range batch {
				if err := b.Put([]byte(e.k), e.v); err != nil {
					return err
				}
			}
			return nil
		})
		batch = batch[:0]
		if err != nil {
			return fmt.Errorf("writing %s version %d: %w", k, v.Version, err)
		}
		return nil
	}
	lastLog := s.now()
	report := func() {
		if src.Progress != nil {
			src.Progress(Progress{Kind: k, Rows: v.Rows, Bytes: cr.n, Total: src.Size})
		}
		if now := s.now(); now.Sub(lastLog) >= s.logEvery {
			lastLog = now
			s.log.Info("refdata: importing", "kind", k, "version", v.Version, "source", src.Name,
				"rows", v.Rows, "bytes", cr.n, "total_bytes", src.Size)
		}
	}
	for {
		rec, err := cs.Read()
		if err == io.EOF {
			break
		}
		line, _ := cs.FieldPos(0)
		if err != nil {
			return v, fail(line, err)
		}
		if len(rec) == 1 && strings.TrimSpace(rec[0]) == "" {
			continue // encoding/csv skips empty lines; a line of spaces is still no row
		}
		key, val, ferr := f.row(rec)
		if ferr != nil {
			if _, err := cs.Read(); err == io.EOF && cr.last != '\n' {
				// The fault is on a last line cut short: say so, since
				// "row has 26 fields" alone hides the cause.
				ferr.Err = fmt.Errorf("the file looks truncated: %w", ferr.Err)
			}
			return v, fail(line, ferr)
		}
		if k == NSPL && val[0]&flagTerminated != 0 {
			v.Terminated++
		}
		batch = append(batch, kv{key, val})
		v.Rows++
		if len(batch) == s.batchRows {
			if err := ctx.Err(); err != nil {
				return v, fmt.Errorf("importing %s: %w", src.Name, err)
			}
			if err := flush(); err != nil {
				return v, err
			}
			report()
		}
	}
	if cr.n > 0 && cr.last != '\n' {
		line, _ := cs.FieldPos(0)
		return v, fail(line, errors.New("the last line has no line end: the file looks truncated"))
	}
	if src.Size > 0 && cr.n != src.Size {
		return v, fail(0, fmt.Errorf("read %d bytes, expected %d: the file looks truncated", cr.n, src.Size))
	}
	if v.Rows == 0 {
		return v, fail(0, errors.New("no data rows"))
	}
	if err := ctx.Err(); err != nil {
		return v, fmt.Errorf("importing %s: %w", src.Name, err)
	}
	if err := flush(); err != nil {
		return v, err
	}
	report()
	v.State, v.Bytes, v.SHA256, v.Finished = Ready, cr.n, hex.EncodeToString(cr.h.Sum(nil)), s.now().UTC()
	err := s.db.Update(func(tx *bolt.Tx) error {
		if nf, ok := f.(*nsplFormat); ok {
			d, err := tx.Bucket(bucketData).CreateBucket(dictName(k, v.Version))
			if err != nil {
				return err
			}
			for i, c := range nf.codes {
				if err := d.Put(binary.BigEndian.AppendUint16(nil, uint16(i+1)), []byte(c)); err != nil {
					return err
				}
			}
		}
		return putVersion(tx, v)
	})
	if err != nil {
		return v, fmt.Errorf("completing %s version %d: %w", k, v.Version, err)
	}
	return v, nil
}

// drop deletes a version's data and record. Deleting a bucket frees its
// pages in one transaction without loading the rows.
func (s *Store) drop(k Kind, n uint64) error {
	err := s.db.Update(func(tx *bolt.Tx) error {
		data := tx.Bucket(bucketData)
		for _, name := range [][]byte{dataName(k, n), dictName(k, n)} {
			if data.Bucket(name) != nil {
				if err := data.DeleteBucket(name); err != nil {
					return err
				}
			}
		}
		return tx.Bucket(bucketMeta).Delete(versionKey(k, n))
	})
	if err != nil {
		return fmt.Errorf("deleting %s version %d: %w", k, n, err)
	}
	return nil
}

// Activate makes version n of kind k the one readers use; the version it
// replaces becomes the rollback target. Versions that are neither, nor
// newer than the active one, are deleted.
func (s *Store) Activate(k Kind, n uint64, actor string) (Version, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var v Version
	err := s.db.Update(func(tx *bolt.Tx) error {
		var err error
		if v, err = getVersion(tx, k, n); err != nil {
			return err
		}
		if v.State != Ready {
			return fmt.Errorf("%s version %d is still being imported: %w", k, n, ErrNotFound)
		}
		p, err := getPointer(tx, k)
		if err != nil {
			return err
		}
		if p.Active != n {
			p = pointer{Active: n, Previous: p.Active}
		}
		at := s.now().UTC()
		v.Activated, v.Actor = &at, actor
		if err := putVersion(tx, v); err != nil {
			return err
		}
		v.Active, v.Previous = true, false
		return putPointer(tx, k, p)
	})
	if err != nil {
		return Version{}, fmt.Errorf("activating %s version %d: %w", k, n, err)
	}
	if err := s.reload(); err != nil {
		return v, err
	}
	s.log.Info("refdata: version activated", "kind", k, "version", n, "actor", actor)
	return v, s.prune(k)
}

// setPointer makes active and previous exactly what the cluster state says
// (cluster mode), rather than deriving previous from the current pointer as
// Activate does. active must be a ready version here; previous is kept only
// if it is (a node that has not loaded it yet has nothing to roll back to).
func (s *Store) setPointer(k Kind, active, previous uint64, activated *time.Time, actor string) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	changed := false
	err := s.db.Update(func(tx *bolt.Tx) error {
		v, err := getVersion(tx, k, active)
		if err != nil {
			return err
		}
		if v.State != Ready {
			return fmt.Errorf("%s version %d is still being imported: %w", k, active, ErrNotFound)
		}
		if pv, err := getVersion(tx, k, previous); err != nil || pv.State != Ready {
			previous = 0
		}
		p, err := getPointer(tx, k)
		if err != nil {
			return err
		}
		want := pointer{Active: active, Previous: previous}
		if p == want {
			return nil
		}
		changed = true
		if p.Active != active {
			v.Activated, v.Actor = activated, actor
			if v.Activated == nil {
				at := s.now().UTC()
				v.Activated = &at
			}
			if err := putVersion(tx, v); err != nil {
				return err
			}
		}
		return putPointer(tx, k, want)
	})
	if err != nil || !changed {
		if err != nil {
			err = fmt.Errorf("activating %s version %d: %w", k, active, err)
		}
		return false, err
	}
	if err := s.reload(); err != nil {
		return true, err
	}
	s.log.Info("refdata: version activated", "kind", k, "version", active, "previous", previous, "actor", actor)
	return true, nil
}

// pointerOf reads kind k's pointer (zero on a read fault: the caller only
// uses it to spare versions from deletion).
func (s *Store) pointerOf(k Kind) (active, previous uint64) {
	_ = s.db.View(func(tx *bolt.Tx) error {
		p, err := getPointer(tx, k)
		active, previous = p.Active, p.Previous
		return err
	})
	return active, previous
}

// Rollback re-activates the version that was active before the current one.
func (s *Store) Rollback(k Kind, actor string) (Version, error) {
	var prev uint64
	err := s.db.View(func(tx *bolt.Tx) error {
		p, err := getPointer(tx, k)
		prev = p.Previous
		return err
	})
	if err != nil {
		return Version{}, err
	}
	if prev == 0 {
		return Version{}, fmt.Errorf("rolling back %s: %w", k, ErrNoPrevious)
	}
	return s.Activate(k, prev, actor)
}

func (s *Store) prune(k Kind) error {
	var doomed []uint64
	err := s.db.View(func(tx *bolt.Tx) error {
		p, err := getPointer(tx, k)
		if err != nil {
			return err
		}
		vs, err := versions(tx, k)
		for _, v := range vs {
			if v.State == Ready && v.Version != p.Active && v.Version != p.Previous && v.Version < p.Active {
				doomed = append(doomed, v.Version)
			}
		}
		return err
	})
	if err != nil {
		return err
	}
	for _, n := range doomed {
		if err := s.drop(k, n); err != nil {
			return err
		}
		s.log.Info("refdata: old version deleted", "kind", k, "version", n)
	}
	return nil
}

// Label names the active versions ("nspl@3,subicb@1,epraccur@2"), for
// the match explanation.
func (s *Store) Label() string { return s.snap.Load().label }

// Reader looks up the active datasets within one read transaction.
type Reader struct {
	tx   *bolt.Tx
	snap *snapshot
}

// View runs fn with a Reader over the active datasets.
func (s *Store) View(fn func(r *Reader) error) error {
	sn := s.snap.Load()
	return s.db.View(func(tx *bolt.Tx) error { return fn(&Reader{tx: tx, snap: sn}) })
}

// Label names the versions this reader sees.
func (r *Reader) Label() string { return r.snap.label }

func (r *Reader) get(k Kind, key string) ([]byte, error) {
	n := r.snap.active[k]
	if n == 0 {
		return nil, fmt.Errorf("%s: %w", k, ErrNoData)
	}
	b := r.tx.Bucket(bucketData).Bucket(dataName(k, n))
	if b == nil {
		// Two activations raced this read and pruned the version.
		return nil, fmt.Errorf("%s version %d: %w", k, n, ErrNotFound)
	}
	return b.Get([]byte(key)), nil
}

// Postcode looks a postcode up in any spelling; ok is false when it is not
// in the directory.
func (r *Reader) Postcode(pc string) (a PostcodeArea, ok bool, err error) {
	key, valid := NormalisePostcode(pc)
	if !valid {
		return a, false, nil
	}
	v, err := r.get(NSPL, key)
	if err != nil || v == nil {
		return a, false, err
	}
	a, err = decodeArea(key, v, r.snap.dict)
	return a, err == nil, err
}

// SubICB maps a sub-ICB GSS code (E38…) to its ODS code.
func (r *Reader) SubICB(gss string) (a SubICBArea, ok bool, err error) {
	v, err := r.get(SubICB, gss)
	if err != nil || v == nil {
		return a, false, err
	}
	return decodeSubICB(gss, v), true, nil
}

// Practice looks a GP practice up by ODS code.
func (r *Reader) Practice(code string) (p Practice, ok bool, err error) {
	v, err := r.get(Practices, strings.ToUpper(strings.TrimSpace(code)))
	if err != nil || v == nil {
		return p, false, err
	}
	p, err = decodePractice(code, v)
	return p, err == nil, err
}
