package refdata

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Cluster mode (docs/refdata.md "Cluster"): an import on any node is kept
// as a file in a JetStream object store, and one KV key per kind holds the
// cluster's versions and which one is active. Every node watches the keys
// and loads what it lacks into its own bbolt, with the same import code and
// the same all-or-nothing staging as an operator's import, so lookups stay
// local reads. The KV key is the only thing that makes a version visible:
// a failed import leaves at most a deleted object behind.

const (
	// StateBucket is the KV bucket of the cluster's dataset versions
	// (key "kind.<kind>") and of what each node has loaded ("node.<name>").
	StateBucket = "EMS_REFDATA"
	// FilesBucket is the object store of the imported files, one object
	// per version ("<kind>/<version>").
	FilesBucket = "EMS_REFDATA_FILES"
	// casTries bounds a compare-and-set loop; each retry follows a
	// concurrent writer's success, so running out means something is
	// writing in a loop.
	casTries = 32
)

// ClusterOptions turn cluster mode on. The zero value (JS nil) is a single
// node: datasets and demographics stay in the node's bbolt.
type ClusterOptions struct {
	JS jetstream.JetStream
	// Node names this node in the loaded-versions report. Mandatory.
	Node string
	// Replicas of the buckets (cluster.replicas). Zero value is 1.
	Replicas int
	// Retry is the pause before a failed load is tried again. Zero value
	// is 5 s.
	Retry time.Duration
}

// clusterState is the value of "kind.<kind>": every version a node should
// hold, and the pointer. Versions are listed only once they are ready.
type clusterState struct {
	// Seq is the last version number handed out for the kind.
	Seq      uint64    `json:"seq"`
	Active   uint64    `json:"active"`
	Previous uint64    `json:"previous"`
	Versions []Version `json:"versions"`
}

func (st *clusterState) version(n uint64) (int, bool) {
	i := slices.IndexFunc(st.Versions, func(v Version) bool { return v.Version == n })
	return i, i >= 0
}

// activate points the state at version n and drops the versions that are
// neither active, previous nor newer than active (the local Store keeps
// the same set), returning the dropped ones.
func (st *clusterState) activate(k Kind, n uint64, actor string, at time.Time) ([]Version, error) {
	i, ok := st.version(n)
	if !ok {
		return nil, fmt.Errorf("%s version %d: %w", k, n, ErrNotFound)
	}
	if st.Active != n {
		st.Previous, st.Active = st.Active, n
	}
	st.Versions[i].Activated, st.Versions[i].Actor = &at, actor
	var dropped []Version
	st.Versions = slices.DeleteFunc(st.Versions, func(v Version) bool {
		gone := v.Version != st.Active && v.Version != st.Previous && v.Version < st.Active
		if gone {
			dropped = append(dropped, v)
		}
		return gone
	})
	return dropped, nil
}

// NodeLoaded is what one node reports it has loaded.
type NodeLoaded struct {
	Node string `json:"node"`
	// Active names the versions the node matches with ("nspl@3,subicb@1").
	Active string `json:"active"`
	// Loading names the versions being loaded now.
	Loading string `json:"loading,omitempty"`
	// Error is the last load failure per kind, if any.
	Error   string    `json:"error,omitempty"`
	Updated time.Time `json:"updated"`
	// Converged is set when listing: Active is the cluster's active set.
	Converged bool `json:"converged"`
}

type cluster struct {
	o     ClusterOptions
	store *Store
	log   *slog.Logger
	kv    jetstream.KeyValue
	obs   jetstream.ObjectStore

	kindMu map[Kind]chan struct{} // one reconcile (and load) per kind at a time
	wake   map[Kind]chan struct{}

	mu      sync.Mutex
	want    map[Kind]jetstream.KeyValueEntry // newest state seen per kind
	pending map[Kind]map[uint64]bool         // versions this node is importing
	loading map[Kind]uint64
	errs    map[Kind]string

	cancel context.CancelFunc
	done   sync.WaitGroup
}

func stateKey(k Kind) string             { return "kind." + string(k) }
func nodeKey(node string) string         { return "node." + node }
func objectName(k Kind, n uint64) string { return fmt.Sprintf("%s/%d", k, n) }

// openCluster creates the buckets, brings the local datasets in line with
// the cluster's (loading any the node lacks) and keeps them in line until
// close. A load that fails is logged, reported and retried; it does not
// stop the node.
func openCluster(ctx context.Context, o ClusterOptions, store *Store, log *slog.Logger) (*cluster, error) {
	if o.Node == "" {
		return nil, errors.New("refdata: ClusterOptions.Node is mandatory")
	}
	if o.Replicas <= 0 {
		o.Replicas = 1
	}
	if o.Retry <= 0 {
		o.Retry = 5 * time.Second
	}
	kv, err := o.JS.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: StateBucket,
		Description: "reference dataset versions (kind.*) and what each node has loaded (node.*)",
		Storage:     jetstream.FileStorage, Replicas: o.Replicas, History: 8})
	if err != nil {
		return nil, fmt.Errorf("creating %s bucket (R%d): %w", StateBucket, o.Replicas, err)
	}
	obs, err := o.JS.CreateOrUpdateObjectStore(ctx, jetstream.ObjectStoreConfig{Bucket: FilesBucket,
		Description: "imported reference data files, one object per version",
		Storage:     jetstream.FileStorage, Replicas: o.Replicas,
		// ONS and ODS CSVs shrink several times under S2; a full postcode
		// directory is close to 1 GB before.
		Compression: true})
	if err != nil {
		return nil, fmt.Errorf("creating %s object store (R%d): %w", FilesBucket, o.Replicas, err)
	}
	c := &cluster{o: o, store: store, log: log, kv: kv, obs: obs,
		kindMu: map[Kind]chan struct{}{}, wake: map[Kind]chan struct{}{},
		want: map[Kind]jetstream.KeyValueEntry{}, pending: map[Kind]map[uint64]bool{},
		loading: map[Kind]uint64{}, errs: map[Kind]string{}}
	for _, k := range Kinds {
		c.kindMu[k], c.wake[k], c.pending[k] = make(chan struct{}, 1), make(chan struct{}, 1), map[uint64]bool{}
	}
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	c.cancel = cancel
	w, err := kv.Watch(runCtx, "kind.*")
	if err != nil {
		cancel()
		return nil, fmt.Errorf("watching %s: %w", StateBucket, err)
	}
	// The initial values, up to the nil marker, are the state at start.
	for initial := true; initial; {
		select {
		case e := <-w.Updates():
			if e == nil {
				initial = false
				continue
			}
			c.see(e)
		case <-ctx.Done():
			cancel()
			return nil, fmt.Errorf("reading %s: %w", StateBucket, ctx.Err())
		}
	}
	// Start only once the local data is the cluster's: a node matching with
	// other (or no) reference data would miss generic matches the others
	// make. A failure is reported and retried in the background.
	for _, k := range Kinds {
		if err := c.reconcile(ctx, k); err != nil {
			log.Error("refdata: loading the cluster's dataset failed; retrying in the background", "kind", k, "err", err)
		}
	}
	c.report(ctx)
	c.done.Add(1 + len(Kinds))
	go func() {
		defer c.done.Done()
		defer func() { _ = w.Stop() }()
		for {
			select {
			case e, ok := <-w.Updates():
				if !ok {
					return
				}
				if e != nil {
					c.see(e)
				}
			case <-runCtx.Done():
				return
			}
		}
	}()
	for _, k := range Kinds {
		go func() {
			defer c.done.Done()
			c.follow(runCtx, k)
		}()
	}
	return c, nil
}

// close stops following and withdraws this node's report.
func (c *cluster) close() {
	c.cancel()
	c.done.Wait()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = c.kv.Delete(ctx, nodeKey(c.o.Node))
}

// see records a state entry if it is newer than the one held, and wakes
// the kind's follower.
func (c *cluster) see(e jetstream.KeyValueEntry) {
	k := Kind(strings.TrimPrefix(e.Key(), "kind."))
	if !k.Valid() {
		return
	}
	c.mu.Lock()
	if old := c.want[k]; old == nil || e.Revision() > old.Revision() {
		c.want[k] = e
	}
	c.mu.Unlock()
	select {
	case c.wake[k] <- struct{}{}:
	default:
	}
}

func (c *cluster) state(k Kind) (clusterState, uint64, error) {
	c.mu.Lock()
	e := c.want[k]
	c.mu.Unlock()
	var st clusterState
	if e == nil || e.Operation() != jetstream.KeyValuePut {
		return st, 0, nil
	}
	if err := json.Unmarshal(e.Value(), &st); err != nil {
		return st, 0, fmt.Errorf("%s state: %w", k, err)
	}
	return st, e.Revision(), nil
}

// follow reconciles the kind whenever its state changes, and retries a
// failed reconcile.
func (c *cluster) follow(ctx context.Context, k Kind) {
	var retry <-chan time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-c.wake[k]:
		case <-retry:
		}
		retry = nil
		if err := c.reconcile(ctx, k); err != nil && ctx.Err() == nil {
			c.log.Error("refdata: following the cluster's dataset", "kind", k, "err", err, "retry_in", c.o.Retry)
			retry = time.After(c.o.Retry)
		}
		c.report(ctx)
	}
}

// reconcile makes the local versions of k those of the cluster state:
// loads the missing ones (the active first), sets the pointer, and drops
// local versions the state no longer lists. A kind the cluster has no
// state for is left alone (a node's data from before cluster mode stays
// until the first cluster import of that kind).
func (c *cluster) reconcile(ctx context.Context, k Kind) error {
	select {
	case c.kindMu[k] <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() { <-c.kindMu[k] }()
	st, rev, err := c.state(k)
	if err != nil || rev == 0 {
		return err
	}
	err = c.sync(ctx, k, st, true)
	c.mu.Lock()
	if err != nil {
		c.errs[k] = err.Error()
	} else {
		delete(c.errs, k)
	}
	c.mu.Unlock()
	return err
}

// sync is reconcile for a given state; load false skips missing versions
// (the admin routes apply a change they made without waiting for a load).
func (c *cluster) sync(ctx context.Context, k Kind, st clusterState, load bool) error {
	if len(st.Versions) == 0 {
		return nil // no import of this kind has completed in the cluster yet
	}
	local, err := c.store.Versions(k)
	if err != nil {
		return err
	}
	have := map[uint64]Version{}
	for _, v := range local {
		have[v.Version] = v
	}
	order := slices.Clone(st.Versions)
	slices.SortFunc(order, func(a, b Version) int {
		// The active version first: it is the one matching waits for.
		switch {
		case a.Version == st.Active:
			return -1
		case b.Version == st.Active:
			return 1
		}
		return cmp.Compare(a.Version, b.Version)
	})
	var errs []error
	replaced := false
	for _, v := range order {
		if c.isPending(k, v.Version) {
			continue
		}
		if h, ok := have[v.Version]; ok {
			if h.State == Ready && h.SHA256 == v.SHA256 {
				continue
			}
			if h.State == Staging {
				continue // being imported on this node now
			}
			// A number this node used for another file before it joined
			// the cluster: the cluster's wins.
			c.log.Warn("refdata: local version differs from the cluster's; replacing it", "kind", k, "version", v.Version,
				"local_sha256", h.SHA256, "cluster_sha256", v.SHA256)
			if err := c.store.drop(k, v.Version); err != nil {
				return err
			}
			// The readers' snapshot may hold the dropped file's postcode
			// dictionary under the same number: rebuild it now, and again
			// below once the cluster's file is in.
			replaced = true
			if err := c.store.reload(); err != nil {
				return err
			}
		}
		if !load {
			continue
		}
		if err := c.load(ctx, k, v); err != nil {
			errs = append(errs, err)
			continue
		}
		have[v.Version] = v
	}
	if h, ok := have[st.Active]; ok && h.State == Ready {
		i, _ := st.version(st.Active)
		if changed, err := c.store.setPointer(k, st.Active, st.Previous, st.Versions[i].Activated, st.Versions[i].Actor); err != nil {
			errs = append(errs, err)
		} else if replaced && !changed {
			if err := c.store.reload(); err != nil {
				errs = append(errs, err)
			}
		}
	}
	// Drop what the cluster no longer lists, except this node's own
	// imports in progress and whatever the local pointer still names (the
	// active version could not be loaded yet).
	active, previous := c.store.pointerOf(k)
	for _, v := range local {
		_, listed := st.version(v.Version)
		if listed || v.State != Ready || v.Version == active || v.Version == previous || c.isPending(k, v.Version) {
			continue
		}
		if err := c.store.drop(k, v.Version); err != nil {
			errs = append(errs, err)
			continue
		}
		c.log.Info("refdata: version dropped by the cluster", "kind", k, "version", v.Version)
	}
	return errors.Join(errs...)
}

// load copies version v from the object store into the local bbolt, and
// checks it is the file that was imported.
func (c *cluster) load(ctx context.Context, k Kind, v Version) error {
	c.mu.Lock()
	c.loading[k] = v.Version
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		delete(c.loading, k)
		c.mu.Unlock()
	}()
	c.report(ctx)
	started := time.Now()
	obj, err := c.obs.Get(ctx, objectName(k, v.Version))
	if err != nil {
		return fmt.Errorf("loading %s version %d: reading %s: %w", k, v.Version, objectName(k, v.Version), err)
	}
	defer obj.Close()
	got, err := c.store.importAt(ctx, k, v.Version, obj, Source{Name: v.Source, Size: v.Bytes, Actor: v.Actor})
	if err != nil {
		return fmt.Errorf("loading %s version %d: %w", k, v.Version, err)
	}
	if got.SHA256 != v.SHA256 {
		err := fmt.Errorf("loading %s version %d: the file's SHA-256 is %s, the cluster recorded %s", k, v.Version, got.SHA256, v.SHA256)
		return errors.Join(err, c.store.drop(k, v.Version))
	}
	c.log.Info("refdata: loaded the cluster's version", "kind", k, "version", v.Version, "rows", got.Rows,
		"took", time.Since(started).Round(time.Millisecond))
	return nil
}

func (c *cluster) isPending(k Kind, n uint64) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.pending[k][n]
}

func (c *cluster) setPending(k Kind, n uint64, on bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if on {
		c.pending[k][n] = true
	} else {
		delete(c.pending[k], n)
	}
}

// update applies fn to the kind's state with compare-and-set, retrying on
// a concurrent change, and returns the state it stored.
func (c *cluster) update(ctx context.Context, k Kind, fn func(st *clusterState) error) (clusterState, error) {
	for try := 0; try < casTries; try++ {
		var st clusterState
		var rev uint64
		e, err := c.kv.Get(ctx, stateKey(k))
		switch {
		case err == nil:
			rev = e.Revision()
			if err := json.Unmarshal(e.Value(), &st); err != nil {
				return st, fmt.Errorf("%s state: %w", k, err)
			}
		case errors.Is(err, jetstream.ErrKeyNotFound):
		default:
			return st, fmt.Errorf("reading %s state: %w", k, err)
		}
		if err := fn(&st); err != nil {
			return st, err
		}
		body, _ := json.Marshal(st)
		if rev == 0 {
			rev, err = c.kv.Create(ctx, stateKey(k), body)
		} else {
			rev, err = c.kv.Update(ctx, stateKey(k), body, rev)
		}
		if err == nil {
			if e, gerr := c.kv.GetRevision(ctx, stateKey(k), rev); gerr == nil {
				c.see(e) // ours is the newest: do not wait for the watch
			}
			return st, nil
		}
		if !errors.Is(err, jetstream.ErrKeyExists) && !errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			return st, fmt.Errorf("writing %s state: %w", k, err)
		}
	}
	return clusterState{}, fmt.Errorf("writing %s state: %d concurrent changes in a row", k, casTries)
}

// importFile is Store.Import for the cluster: the version number comes
// from the cluster state, the file is copied to the object store as it is
// read, and only a complete, valid file is listed in the state.
func (c *cluster) importFile(ctx context.Context, k Kind, r io.Reader, src Source) (Version, error) {
	if !k.Valid() {
		return Version{}, fmt.Errorf("unknown dataset kind %q", k)
	}
	st, err := c.update(ctx, k, func(st *clusterState) error { st.Seq++; return nil })
	if err != nil {
		return Version{}, fmt.Errorf("importing %s: numbering the version: %w", k, err)
	}
	n := st.Seq
	c.setPending(k, n, true)
	defer c.setPending(k, n, false)
	pr, pw := io.Pipe()
	stored := make(chan error, 1)
	go func() {
		_, err := c.obs.Put(ctx, jetstream.ObjectMeta{Name: objectName(k, n), Description: src.Name}, pr)
		// Unblock the import if the store gave up before the end.
		pr.CloseWithError(errors.Join(err, io.ErrClosedPipe))
		stored <- err
	}()
	local := src
	local.Activate = false
	v, err := c.store.importAt(ctx, k, n, io.TeeReader(r, pw), local)
	if err != nil {
		pw.CloseWithError(err)
		<-stored
		c.deleteObject(k, n)
		return Version{}, err
	}
	_ = pw.Close()
	if err := <-stored; err != nil {
		c.deleteObject(k, n)
		return Version{}, errors.Join(fmt.Errorf("importing %s: storing the file for the cluster: %w", src.Name, err), c.store.drop(k, n))
	}
	var dropped []Version
	st, err = c.update(ctx, k, func(st *clusterState) error {
		st.Versions = append(slices.DeleteFunc(st.Versions, func(x Version) bool { return x.Version == n }), v)
		slices.SortFunc(st.Versions, func(a, b Version) int { return cmp.Compare(a.Version, b.Version) })
		if !src.Activate {
			return nil
		}
		var aerr error
		dropped, aerr = st.activate(k, n, src.Actor, c.store.now().UTC())
		return aerr
	})
	if err != nil {
		c.deleteObject(k, n)
		return Version{}, errors.Join(fmt.Errorf("importing %s: publishing the version: %w", src.Name, err), c.store.drop(k, n))
	}
	return c.applied(ctx, k, n, st, dropped)
}

// activate and rollback change the cluster's pointer; every node follows.
func (c *cluster) activate(ctx context.Context, k Kind, n uint64, actor string) (Version, error) {
	var dropped []Version
	st, err := c.update(ctx, k, func(st *clusterState) error {
		var err error
		dropped, err = st.activate(k, n, actor, c.store.now().UTC())
		return err
	})
	if err != nil {
		return Version{}, fmt.Errorf("activating %s version %d: %w", k, n, err)
	}
	return c.applied(ctx, k, n, st, dropped)
}

func (c *cluster) rollback(ctx context.Context, k Kind, actor string) (Version, error) {
	var dropped []Version
	var n uint64
	st, err := c.update(ctx, k, func(st *clusterState) error {
		if st.Previous == 0 {
			return fmt.Errorf("rolling back %s: %w", k, ErrNoPrevious)
		}
		n = st.Previous
		var err error
		dropped, err = st.activate(k, n, actor, c.store.now().UTC())
		return err
	})
	if err != nil {
		return Version{}, err
	}
	return c.applied(ctx, k, n, st, dropped)
}

// applied brings this node in line with a state it wrote before it
// answers, so that the operator reads their own change on this node. It
// loads no file: a version imported elsewhere and not loaded here yet is
// the follower's to load, in the background. It deletes the files of the
// versions the change dropped.
func (c *cluster) applied(ctx context.Context, k Kind, n uint64, st clusterState, dropped []Version) (Version, error) {
	select {
	case c.kindMu[k] <- struct{}{}:
		cur, _, err := c.state(k) // ours, or a newer change made meanwhile
		if err == nil {
			err = c.sync(ctx, k, cur, false)
		}
		<-c.kindMu[k]
		if err != nil {
			c.log.Warn("refdata: applying the cluster's change locally; the follower retries", "kind", k, "err", err)
		}
	case <-ctx.Done():
	}
	select {
	case c.wake[k] <- struct{}{}:
	default:
	}
	for _, v := range dropped {
		c.deleteObject(k, v.Version)
	}
	i, _ := st.version(n)
	v := st.Versions[i]
	v.Active, v.Previous = n == st.Active, n == st.Previous
	return v, nil
}

func (c *cluster) deleteObject(k Kind, n uint64) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.obs.Delete(ctx, objectName(k, n)); err != nil && !errors.Is(err, jetstream.ErrObjectNotFound) {
		c.log.Warn("refdata: deleting a dataset file from the cluster", "kind", k, "version", n, "err", err)
	}
}

// activeLabel names the cluster's active versions, as Store.Label does
// the local ones.
func (c *cluster) activeLabel() string {
	var labels []string
	for _, k := range Kinds {
		if st, _, err := c.state(k); err == nil && st.Active != 0 {
			labels = append(labels, fmt.Sprintf("%s@%d", k, st.Active))
		}
	}
	return strings.Join(labels, ",")
}

// report publishes what this node has loaded.
func (c *cluster) report(ctx context.Context) {
	rec := NodeLoaded{Node: c.o.Node, Active: c.store.Label(), Updated: time.Now().UTC()}
	c.mu.Lock()
	var loading, errs []string
	for _, k := range Kinds {
		if n := c.loading[k]; n != 0 {
			loading = append(loading, fmt.Sprintf("%s@%d", k, n))
		}
		if e := c.errs[k]; e != "" {
			errs = append(errs, e)
		}
	}
	c.mu.Unlock()
	rec.Loading, rec.Error = strings.Join(loading, ","), strings.Join(errs, "; ")
	body, _ := json.Marshal(rec)
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if _, err := c.kv.Put(pctx, nodeKey(c.o.Node), body); err != nil && ctx.Err() == nil {
		c.log.Warn("refdata: reporting loaded versions", "err", err)
	}
}

// nodes lists every node's report, marking those that match the cluster.
func (c *cluster) nodes(ctx context.Context) ([]NodeLoaded, error) {
	out := []NodeLoaded{}
	keys, err := c.kv.ListKeysFiltered(ctx, "node.*")
	if err != nil {
		if errors.Is(err, jetstream.ErrNoKeysFound) {
			return out, nil
		}
		return nil, fmt.Errorf("listing nodes: %w", err)
	}
	want := c.activeLabel()
	for k := range keys.Keys() {
		e, err := c.kv.Get(ctx, k)
		if err != nil {
			continue
		}
		var rec NodeLoaded
		if json.Unmarshal(e.Value(), &rec) != nil {
			continue
		}
		rec.Converged = rec.Active == want && rec.Loading == "" && rec.Error == ""
		out = append(out, rec)
	}
	slices.SortFunc(out, func(a, b NodeLoaded) int { return strings.Compare(a.Node, b.Node) })
	return out, nil
}
