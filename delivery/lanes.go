package delivery

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ems-broker/ems/fhir"
)

// Lanes partition webhook jobs across the nodes of a cluster
// (docs/cluster.md, "Delivery across nodes"). Every job of one endpoint is
// in one lane (the lane is in the job's subject), and each lane is worked
// by exactly one node at a time, the holder of the lane's lease in a KV
// bucket. The per-endpoint concurrency limit, the breaker and the
// per-(endpoint, patient) ordering index of an endpoint therefore live on
// one node, and are exact cluster-wide.

// LaneCount is how many lanes webhook jobs are spread over. It is part of
// the job subject: every node, and every job already stored, must agree
// on it, so it is a constant rather than configuration.
const LaneCount = 32

// DefaultLanesBucket is the KV bucket of lane leases and lane members.
const DefaultLanesBucket = "EMS_LANES"

// laneOfToken is the lane of an endpoint token (a hex hash, so its first
// 32 bits are uniform).
func laneOfToken(tok string) int {
	if len(tok) < 8 {
		return 0
	}
	v, err := strconv.ParseUint(tok[:8], 16, 32)
	if err != nil {
		return 0
	}
	return int(v % LaneCount)
}

// LaneOf is the lane of an endpoint.
func LaneOf(channel, endpoint string) int { return laneOfToken(EndpointToken(channel, endpoint)) }

// laneFilter is the subject filter of one lane's jobs. It names exactly
// four tokens after "hook", so it never overlaps the three-token subjects
// of jobs stored before lanes existed (a work-queue stream refuses
// overlapping consumers).
func laneFilter(lane int) string {
	return JobSubjectPrefix + "hook." + strconv.Itoa(lane) + ".*.*"
}

// legacyJobFilter matches jobs stored before lanes: ems.deliveries.hook.<token>.<nhs>.
const legacyJobFilter = JobSubjectPrefix + "hook.*.*"

// LaneOptions turn lanes on (cluster mode).
type LaneOptions struct {
	// JS defaults to the dispatcher's.
	JS       jetstream.JetStream
	Bucket   string // default DefaultLanesBucket
	Node     string // this node's name, unique in the cluster
	Replicas int
	// TTL is the lease's life without a renewal (default 10 s): the
	// longest a dead node's lanes wait for a new owner.
	TTL time.Duration
	// Renew is the renewal period (default TTL/5).
	Renew time.Duration
	// Margin is how long before the lease can expire the holder stops
	// working a lane it could not renew (default TTL/5): the time its
	// attempts in flight have to be cancelled.
	Margin time.Duration
	Logger *slog.Logger
	// EventsStream and FanoutDurable name the fan-out's stream and
	// consumer (defaults EMS_EVENTS, ems-delivery-fanout): with several
	// nodes fanning out, a patient's later job can be stored before an
	// earlier one, and the dispatcher reads them to know it has every
	// earlier job (Dispatcher.predecessorsKnown).
	EventsStream, FanoutDurable string

	// failRenew, in tests, makes every KV write fail as if NATS were out
	// of reach.
	failRenew func() bool
}

func (o *LaneOptions) defaults() {
	if o.Bucket == "" {
		o.Bucket = DefaultLanesBucket
	}
	if o.TTL <= 0 {
		o.TTL = 10 * time.Second
	}
	if o.Renew <= 0 {
		o.Renew = o.TTL / 5
	}
	if o.Margin <= 0 {
		o.Margin = o.TTL / 5
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
}

// laneManager takes, renews and gives up lane leases, and runs work for
// each lane while it holds the lane's lease.
type laneManager struct {
	o    LaneOptions
	kv   jetstream.KeyValue
	id   string // node and incarnation: a restarted node never adopts its previous life's leases
	work func(ctx context.Context, lane int)

	// Written by Run's goroutine only; mu lets heldLanes read held.
	mu        sync.Mutex
	held      map[int]*lease
	freeSince map[int]time.Time
}

// lease is one held lane. Its work is cancelled by a timer at the local
// deadline (last confirmed renewal sent + TTL − Margin), independently of
// the renewal loop, which may be stuck on an unreachable NATS.
type lease struct {
	lane int
	rev  uint64

	mu       sync.Mutex
	deadline time.Time
	timer    *time.Timer
	stopped  bool
	cancel   context.CancelFunc
	done     chan struct{}
}

// extend moves the deadline after a confirmed renewal sent at sent; a
// lease already stopped stays stopped.
func (l *lease) extend(sent time.Time, ttl, margin time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.stopped {
		return
	}
	l.deadline = sent.Add(ttl - margin)
	l.timer.Reset(time.Until(l.deadline))
}

// stop cancels the lane's work; it reports whether this call stopped it.
func (l *lease) stop() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.stopped {
		return false
	}
	l.stopped = true
	l.timer.Stop()
	l.cancel()
	return true
}

func (l *lease) isStopped() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.stopped
}

func newLaneManager(ctx context.Context, o LaneOptions, work func(context.Context, int)) (*laneManager, error) {
	o.defaults()
	if o.Node == "" {
		return nil, errors.New("lanes: a node name is required")
	}
	if o.Margin >= o.TTL-o.Renew {
		return nil, fmt.Errorf("lanes: margin %s leaves no time to renew within the TTL %s", o.Margin, o.TTL)
	}
	kv, err := o.JS.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: o.Bucket,
		Description: "emsd webhook lane leases (lane.N) and lane members (node.NAME)",
		TTL:         o.TTL, Replicas: max(o.Replicas, 1)})
	if err != nil {
		return nil, fmt.Errorf("creating lanes bucket %s: %w", o.Bucket, err)
	}
	var nonce [6]byte
	_, _ = rand.Read(nonce[:])
	return &laneManager{o: o, kv: kv, id: o.Node + " " + hex.EncodeToString(nonce[:]), work: work,
		held: map[int]*lease{}, freeSince: map[int]time.Time{}}, nil
}

func laneKey(lane int) string { return "lane." + strconv.Itoa(lane) }

// memberKey is the node's key; KV keys allow few characters.
func memberKey(node string) string {
	return "node." + strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '_':
			return r
		}
		return '_'
	}, node)
}

// preferred is the member a lane belongs to when all are up: highest
// random weight, so a node joining or leaving moves only its share.
func preferred(members []string, lane int) string {
	var best string
	var bestW uint64
	for _, m := range members {
		h := fnv.New64a()
		h.Write([]byte(m))
		h.Write([]byte{0})
		h.Write([]byte(strconv.Itoa(lane)))
		if w := h.Sum64(); best == "" || w > bestW || (w == bestW && m < best) {
			best, bestW = m, w
		}
	}
	return best
}

// Run manages the leases until ctx ends, then stops every lane's work and
// gives the leases back.
func (m *laneManager) Run(ctx context.Context) {
	t := time.NewTicker(m.o.Renew)
	defer t.Stop()
	for {
		m.tick(ctx)
		select {
		case <-ctx.Done():
			m.shutdown()
			return
		case <-t.C:
		}
	}
}

func (m *laneManager) failing() bool { return m.o.failRenew != nil && m.o.failRenew() }

var errUnreachable = errors.New("lanes: NATS out of reach (test)")

func (m *laneManager) tick(ctx context.Context) {
	// Renewals first: they are what keeps the lanes working.
	m.renew(ctx)
	for lane, l := range m.held {
		if l.isStopped() { // the deadline passed
			m.drop(lane, l, "lease not renewed in time")
		}
	}
	members, present, err := m.look(ctx)
	if err != nil {
		if ctx.Err() == nil {
			m.o.Logger.Warn("lanes: reading the lanes bucket", "err", err)
		}
		return
	}
	me := memberKey(m.o.Node)
	now := time.Now()
	for lane := range LaneCount {
		want := preferred(members, lane)
		if l, ok := m.held[lane]; ok {
			if want != me {
				m.drop(lane, l, "handing over to "+strings.TrimPrefix(want, "node."))
			}
			continue
		}
		if present[laneKey(lane)] {
			delete(m.freeSince, lane)
			continue
		}
		since, ok := m.freeSince[lane]
		if !ok {
			since = now
			m.freeSince[lane] = now
		}
		// A lane whose preferred node does not take it (stuck, or its
		// view of the members differs) is taken by anyone after a while.
		if want == me || now.Sub(since) > 3*m.o.Renew {
			m.acquire(ctx, lane)
		}
	}
}

// look announces this node and lists the members and the held lanes.
func (m *laneManager) look(ctx context.Context) (members []string, present map[string]bool, err error) {
	if m.failing() {
		return nil, nil, errUnreachable
	}
	cctx, cancel := context.WithTimeout(ctx, m.o.Renew)
	defer cancel()
	if _, err := m.kv.Put(cctx, memberKey(m.o.Node), []byte(m.id)); err != nil {
		return nil, nil, fmt.Errorf("announcing lane member: %w", err)
	}
	keys, err := m.kv.ListKeys(cctx)
	if err != nil {
		return nil, nil, fmt.Errorf("listing lanes: %w", err)
	}
	present = map[string]bool{}
	for k := range keys.Keys() {
		present[k] = true
		if strings.HasPrefix(k, "node.") {
			members = append(members, k)
		}
	}
	if !present[memberKey(m.o.Node)] {
		members = append(members, memberKey(m.o.Node))
	}
	return members, present, nil
}

// renew extends every held lease at once (in parallel, so one slow write
// does not delay the others past their deadline).
func (m *laneManager) renew(ctx context.Context) {
	var wg sync.WaitGroup
	for _, l := range m.held {
		if l.isStopped() {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			sent := time.Now()
			cctx, cancel := context.WithTimeout(ctx, m.o.Renew)
			defer cancel()
			var rev uint64
			err := errUnreachable
			if !m.failing() {
				rev, err = m.kv.Update(cctx, laneKey(l.lane), []byte(m.id), l.rev)
			}
			if err == nil {
				l.rev = rev
				l.extend(sent, m.o.TTL, m.o.Margin)
				return
			}
			if ctx.Err() != nil || errors.Is(err, errUnreachable) {
				return
			}
			// The write may have landed with its answer lost: the lease
			// is still ours if the key holds our id. Its deadline stays
			// that of the last confirmed renewal, which is earlier.
			e, gerr := m.kv.Get(cctx, laneKey(l.lane))
			switch {
			case gerr == nil && string(e.Value()) == m.id:
				l.rev = e.Revision()
			case gerr == nil || errors.Is(gerr, jetstream.ErrKeyNotFound):
				m.o.Logger.Warn("lanes: lease lost", "lane", l.lane, "err", err)
				l.stop()
			}
		}()
	}
	wg.Wait()
}

// acquire takes a free lane and starts its work.
func (m *laneManager) acquire(ctx context.Context, lane int) {
	if m.failing() {
		return
	}
	sent := time.Now()
	cctx, cancel := context.WithTimeout(ctx, m.o.Renew)
	rev, err := m.kv.Create(cctx, laneKey(lane), []byte(m.id))
	cancel()
	if err != nil {
		if !errors.Is(err, jetstream.ErrKeyExists) && ctx.Err() == nil {
			m.o.Logger.Warn("lanes: taking a lane", "lane", lane, "err", err)
		}
		return
	}
	delete(m.freeSince, lane)
	wctx, wcancel := context.WithCancel(ctx)
	l := &lease{lane: lane, rev: rev, cancel: wcancel, done: make(chan struct{})}
	l.mu.Lock()
	l.deadline = sent.Add(m.o.TTL - m.o.Margin)
	l.timer = time.AfterFunc(time.Until(l.deadline), func() {
		if l.stop() {
			m.o.Logger.Warn("lanes: lease not renewed in time; lane stopped", "lane", lane)
		}
	})
	l.mu.Unlock()
	m.mu.Lock()
	m.held[lane] = l
	m.mu.Unlock()
	m.o.Logger.Info("lanes: lane taken", "lane", lane, "node", m.o.Node)
	go func() {
		defer close(l.done)
		m.work(wctx, lane)
	}()
}

// drop stops a lane's work, waits for it, and gives the lease back if it
// is still ours (if not, it expires on its own).
func (m *laneManager) drop(lane int, l *lease, why string) {
	l.stop()
	<-l.done
	m.mu.Lock()
	delete(m.held, lane)
	m.mu.Unlock()
	m.o.Logger.Info("lanes: lane released", "lane", lane, "node", m.o.Node, "why", why)
	if m.failing() {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), m.o.Renew)
	defer cancel()
	_ = m.kv.Delete(ctx, laneKey(lane), jetstream.LastRevision(l.rev))
}

func (m *laneManager) shutdown() {
	for lane, l := range m.held {
		m.drop(lane, l, "node stopping")
	}
	if m.failing() {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), m.o.Renew)
	defer cancel()
	_ = m.kv.Delete(ctx, memberKey(m.o.Node))
}

// heldLanes lists the lanes this node works now (status, tests).
func (m *laneManager) heldLanes() []int {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []int
	for lane := range LaneCount {
		if l, ok := m.held[lane]; ok && !l.isStopped() {
			out = append(out, lane)
		}
	}
	return out
}

func (o LaneOptions) eventsStream() string {
	if o.EventsStream == "" {
		return "EMS_EVENTS"
	}
	return o.EventsStream
}

func (o LaneOptions) fanoutDurable() string {
	if o.FanoutDurable == "" {
		return "ems-delivery-fanout"
	}
	return o.FanoutDurable
}

// horizon is what the fan-out has finished: every event up to floor has
// all its jobs stored, and each of those jobs is at or below last in the
// deliveries stream (read after the floor).
type horizon struct{ floor, last uint64 }

// horizonMaxAge is how old a reading the jobs checking at the same time
// share: one pair of requests instead of one per job.
const horizonMaxAge = 5 * time.Millisecond

// readHorizon returns the last reading, or a new one if fresh is set and
// the last is older than horizonMaxAge. Any past reading is a sound basis
// for predecessorsKnown (the floor and the stream's end only grow); a
// fresh one only lets more jobs go.
func (d *Dispatcher) readHorizon(ctx context.Context, fresh bool) (horizon, error) {
	d.horizonMu.Lock()
	defer d.horizonMu.Unlock()
	if !d.horizonAt.IsZero() && (!fresh || time.Since(d.horizonAt) < horizonMaxAge) {
		return d.horizon, nil
	}
	at := time.Now()
	ci, err := d.fanout.Info(ctx)
	if err != nil {
		return horizon{}, fmt.Errorf("reading the fan-out's progress: %w", err)
	}
	si, err := d.deliveries.Info(ctx)
	if err != nil {
		return horizon{}, fmt.Errorf("reading %s: %w", d.o.DeliveriesStream, err)
	}
	d.horizon, d.horizonAt = horizon{floor: ci.AckFloor.Stream, last: si.State.LastSeq}, at
	return d.horizon, nil
}

// maxLookAhead bounds the stored jobs of one order key predecessorsKnown
// reads beyond what the lane has received.
const maxLookAhead = 32

// predecessorsKnown says whether every job of j's order key for an
// earlier event is in the ordering index (or finished). On one node the
// fan-out stores a patient's jobs in event order, so the lane's stream
// order is enough; with several nodes fanning out, event e+1's job can be
// stored before event e's. So: (1) every earlier event of the patient
// has been fanned out: the fan-out's ack floor is past it, or no event of
// the patient lies between the floor and j's; (2) no job of the key that
// the lane has not received yet is for an earlier event: read on the
// stream, up to where the stream ended when (1) held; (3) none of those
// the lane has received is still in the ordering index ahead of j.
func (d *Dispatcher) predecessorsKnown(ctx context.Context, j *Job) (bool, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	h, err := d.readHorizon(ctx, false)
	if err != nil {
		return false, err
	}
	if j.EventSeq > h.floor+1 {
		// The fan-out may have moved on since: read it again (shared).
		if h, err = d.readHorizon(ctx, true); err != nil {
			return false, err
		}
	}
	if j.EventSeq > h.floor+1 {
		m, err := d.events.GetMsg(ctx, h.floor+1, jetstream.WithGetMsgSubject(fhir.EventSubjectPrefix+"*."+j.NHSNumber))
		switch {
		case errors.Is(err, jetstream.ErrMsgNotFound):
		case err != nil:
			return false, fmt.Errorf("reading the patient's events after the fan-out's floor: %w", err)
		case m.Sequence < j.EventSeq:
			return false, nil // an earlier event of the patient is still being fanned out
		}
	}
	lane := laneOfToken(EndpointToken(j.Channel, j.Endpoint))
	next := d.seen[lane].Load() + 1
	subject := j.Subject()
	// The look-ahead is bounded: a deeper backlog's jobs are later ones in
	// all but the rarest interleavings (docs/cluster.md).
scan:
	for range maxLookAhead {
		if next > h.last {
			break
		}
		m, err := d.deliveries.GetMsg(ctx, next, jetstream.WithGetMsgSubject(subject))
		switch {
		case errors.Is(err, jetstream.ErrMsgNotFound):
			break scan
		case err != nil:
			return false, fmt.Errorf("reading the key's jobs not yet received: %w", err)
		case m.Sequence > h.last:
			break scan
		}
		if seq, _ := strconv.ParseUint(m.Header.Get(HeaderEventSeq), 10, 64); seq < j.EventSeq {
			return false, nil // stored after j, for an earlier event: wait until the lane has it
		}
		next = m.Sequence + 1
	}
	// The earlier jobs at or below seen entered the ordering index before
	// seen was read above, but turn looked at the index before that: one
	// the lane received meanwhile (a common case under load, when the
	// lane's reads lag the fan-out) is ahead of j, and turn waits for it.
	blocked, _, _ := d.blocked(j, d.o.Now())
	return !blocked, nil
}

// LaneHolders reads who holds each lane's lease (bucket "" = the
// default): node → its lanes; lanes nobody holds are under "".
func LaneHolders(ctx context.Context, js jetstream.JetStream, bucket string) (map[string][]int, error) {
	if bucket == "" {
		bucket = DefaultLanesBucket
	}
	kv, err := js.KeyValue(ctx, bucket)
	if err != nil {
		return nil, fmt.Errorf("opening lanes bucket %s: %w", bucket, err)
	}
	out := map[string][]int{}
	for lane := range LaneCount {
		owner := ""
		e, err := kv.Get(ctx, laneKey(lane))
		switch {
		case err == nil:
			owner, _, _ = strings.Cut(string(e.Value()), " ") // "node incarnation"
		case !errors.Is(err, jetstream.ErrKeyNotFound):
			return nil, fmt.Errorf("reading lane %d: %w", lane, err)
		}
		out[owner] = append(out[owner], lane)
	}
	return out, nil
}
