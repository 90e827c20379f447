package delivery

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ems-broker/ems/subscription"
)

// Policy is the retry policy of one endpoint.
type Policy struct {
	Backoff Backoff
	// MaxAttempts and MaxAge end the retries, whichever comes first.
	MaxAttempts int
	MaxAge      time.Duration
	// RetryAfterMax bounds a server's Retry-After: honoured, but a
	// misbehaving endpoint cannot park a job for a year.
	RetryAfterMax time.Duration
}

// DefaultPolicy retries for 24 hours: 10 s doubling to a 1 h cap, full
// jitter, and at most 100 attempts.
func DefaultPolicy() Policy {
	return Policy{Backoff: Backoff{Initial: 10 * time.Second, Max: time.Hour, Multiplier: 2},
		MaxAttempts: 100, MaxAge: 24 * time.Hour, RetryAfterMax: time.Hour}
}

// WebhookSender makes one attempt.
type WebhookSender interface {
	Send(ctx context.Context, j *Job) Result
}

// StatusSetter moves subscriptions whose endpoint is gone to error.
type StatusSetter interface {
	SetStatusFrom(id string, from []subscription.Status, to subscription.Status, actor, note string) (*subscription.Subscription, error)
}

// DispatcherOptions configure the webhook dispatcher.
type DispatcherOptions struct {
	JS               jetstream.JetStream
	DeliveriesStream string
	DeadStream       string
	Durable          string // default "ems-delivery-webhooks"
	Log              *Log
	Sender           WebhookSender
	Statuses         StatusSetter
	// Policy returns the retry policy for an endpoint (nil: DefaultPolicy).
	Policy func(endpoint string) Policy
	// Concurrency is the in-flight limit per endpoint (default 4).
	Concurrency func(endpoint string) int
	Breaker     BreakerConfig
	// AckWait must exceed the webhook timeout; MaxDeliver is a safety net
	// above the policy's attempts (holds for ordering and open breakers
	// are redeliveries too), never JetStream's unlimited default.
	AckWait    time.Duration
	MaxDeliver int
	Logger     *slog.Logger
	Metrics    *Metrics
	Now        func() time.Time
	Rand       func() float64
	// Lanes, in cluster mode, partition the jobs by endpoint into lanes
	// each worked by one node at a time (lanes.go), so that the
	// concurrency limit, the breaker and the ordering index of an
	// endpoint are on one node. nil: this node works every job.
	Lanes *LaneOptions
}

// Dispatcher sends webhook jobs.
type Dispatcher struct {
	o DispatcherOptions
	// cons has every job on a single node; with lanes, only the jobs
	// stored before lanes existed.
	cons  jetstream.Consumer
	lanes *laneManager
	// With lanes: the highest stream sequence each lane has entered, and
	// what predecessorsKnown reads of the fan-out and the streams.
	seen       [LaneCount]atomic.Uint64
	events     jetstream.Stream
	deliveries jetstream.Stream
	fanout     jetstream.Consumer
	horizonMu  sync.Mutex
	horizonAt  time.Time
	horizon    horizon

	mu        sync.Mutex
	endpoints map[string]*endpointState
	// order holds, per order key, the jobs not yet terminal: only the
	// smallest event sequence may be attempted.
	order map[string]*orderState
}

type orderState struct {
	seqs []uint64  // sorted event sequences
	next time.Time // the head's next attempt after a failure
	// changed is closed (and replaced) whenever the head may have moved,
	// so that parked followers move on at once instead of polling.
	changed chan struct{}
}

func (s *orderState) signal() {
	close(s.changed)
	s.changed = make(chan struct{})
}

type endpointState struct {
	sem     chan struct{}
	breaker *breaker
	waiting atomic.Int64 // jobs queued for a concurrency slot
}

// maxWaitingPerEndpoint bounds the jobs one endpoint may hold in memory
// waiting for a concurrency slot.
const maxWaitingPerEndpoint = 64

// NewDispatcher creates (or updates) the durable consumer on the deliveries
// stream and loads the ordering index.
func NewDispatcher(ctx context.Context, o DispatcherOptions) (*Dispatcher, error) {
	if o.Durable == "" {
		o.Durable = "ems-delivery-webhooks"
	}
	if o.DeliveriesStream == "" {
		o.DeliveriesStream = DefaultDeliveriesStream
	}
	if o.DeadStream == "" {
		o.DeadStream = DefaultDeadStream
	}
	if o.Policy == nil {
		o.Policy = func(string) Policy { return DefaultPolicy() }
	}
	if o.Concurrency == nil {
		o.Concurrency = func(string) int { return 4 }
	}
	if o.AckWait <= 0 {
		o.AckWait = time.Minute
	}
	if o.MaxDeliver <= 0 {
		o.MaxDeliver = 10000
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Metrics == nil {
		o.Metrics = NewMetrics(nil)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Rand == nil {
		o.Rand = rand.Float64
	}
	d := &Dispatcher{o: o, endpoints: map[string]*endpointState{}, order: map[string]*orderState{}}
	cfg := d.consumerConfig(o.Durable, JobSubjectPrefix+"hook.>")
	if o.Lanes != nil {
		// Narrowed first: a work-queue stream refuses the lane consumers
		// while a consumer of every job exists.
		cfg = d.consumerConfig(o.Durable, legacyJobFilter)
		cfg.Description = "EMS webhook jobs stored before lanes (any node, unordered)"
	}
	cons, err := o.JS.CreateOrUpdateConsumer(ctx, o.DeliveriesStream, cfg)
	if err != nil {
		return nil, fmt.Errorf("creating webhook consumer on %s: %w", o.DeliveriesStream, err)
	}
	d.cons = cons
	if o.Lanes != nil {
		// The ordering index of a lane is rebuilt from the stream by the
		// node taking the lane; a node's bbolt would be stale.
		d.o.Log = o.Log.withoutOrderIndex()
		lo := *o.Lanes
		if lo.JS == nil {
			lo.JS = o.JS
		}
		if lo.Logger == nil {
			lo.Logger = o.Logger
		}
		if d.lanes, err = newLaneManager(ctx, lo, d.runLane); err != nil {
			return nil, err
		}
		if d.events, err = o.JS.Stream(ctx, lo.eventsStream()); err != nil {
			return nil, fmt.Errorf("opening the events stream for lane ordering: %w", err)
		}
		if d.deliveries, err = o.JS.Stream(ctx, o.DeliveriesStream); err != nil {
			return nil, fmt.Errorf("opening %s: %w", o.DeliveriesStream, err)
		}
		if d.fanout, err = o.JS.Consumer(ctx, lo.eventsStream(), lo.fanoutDurable()); err != nil {
			return nil, fmt.Errorf("opening the fan-out consumer for lane ordering: %w", err)
		}
		return d, nil
	}
	order, err := o.Log.pendingOrder()
	if err != nil {
		return nil, fmt.Errorf("loading the ordering index: %w", err)
	}
	for k, seqs := range order {
		slices.Sort(seqs)
		d.order[k] = &orderState{seqs: seqs, changed: make(chan struct{})}
	}
	return d, nil
}

func (d *Dispatcher) consumerConfig(name, filter string) jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{
		Durable:       name,
		Description:   "EMS webhook dispatcher",
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       d.o.AckWait,
		MaxDeliver:    d.o.MaxDeliver,
		MaxAckPending: 4096,
		FilterSubject: filter,
	}
}

// lanePull bounds the jobs one lane fetches ahead: a node may hold all
// LaneCount lanes.
const lanePull = 64

// Run dispatches jobs until ctx ends, then waits for attempts in flight.
func (d *Dispatcher) Run(ctx context.Context) error {
	if d.lanes == nil {
		return d.consume(ctx, d.cons, 512, false, nil)
	}
	done := make(chan struct{})
	go func() { defer close(done); d.lanes.Run(ctx) }()
	err := d.consume(ctx, d.cons, lanePull, true, nil)
	<-done
	return err
}

// runLane works one lane while this node holds its lease. The lane's
// consumer is created afresh, so that every job of the lane not yet
// acknowledged comes to this node at once and in stream order: the
// ordering index is complete before the first attempt, including the
// jobs a previous owner had in hand when it died.
func (d *Dispatcher) runLane(ctx context.Context, lane int) {
	defer d.forgetLane(lane)
	name := fmt.Sprintf("%s-lane-%02d", d.o.Durable, lane)
	for ctx.Err() == nil {
		cons, err := d.laneConsumer(ctx, name, lane)
		if err == nil {
			err = d.consume(ctx, cons, lanePull, false, &d.seen[lane])
		}
		if ctx.Err() != nil {
			return
		}
		d.o.Logger.Warn("dispatcher: lane consumer", "lane", lane, "err", err)
		d.forgetLane(lane)
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
}

func (d *Dispatcher) laneConsumer(ctx context.Context, name string, lane int) (jetstream.Consumer, error) {
	if err := d.o.JS.DeleteConsumer(ctx, d.o.DeliveriesStream, name); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
		return nil, fmt.Errorf("resetting lane consumer %s: %w", name, err)
	}
	cfg := d.consumerConfig(name, laneFilter(lane))
	cfg.Description = fmt.Sprintf("EMS webhook lane %d (worked by the holder of its lease)", lane)
	cons, err := d.o.JS.CreateConsumer(ctx, d.o.DeliveriesStream, cfg)
	if err != nil {
		return nil, fmt.Errorf("creating lane consumer %s: %w", name, err)
	}
	return cons, nil
}

// forgetLane drops the ordering index and endpoint state of a lane this
// node no longer works: its next owner rebuilds them.
func (d *Dispatcher) forgetLane(lane int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for k := range d.order {
		if laneOfToken(k) == lane {
			delete(d.order, k)
		}
	}
	for tok := range d.endpoints {
		if laneOfToken(tok) == lane {
			delete(d.endpoints, tok)
		}
	}
	d.seen[lane].Store(0)
}

// errConsumerGone ends consume when its consumer was deleted under it.
var errConsumerGone = errors.New("webhook consumer deleted")

// consume dispatches one consumer's jobs until ctx ends, then waits for
// their attempts in flight. unordered keeps its jobs out of the ordering
// index; seen (a lane's) records the highest stream sequence entered.
func (d *Dispatcher) consume(ctx context.Context, cons jetstream.Consumer, pull int, unordered bool, seen *atomic.Uint64) error {
	it, err := cons.Messages(jetstream.PullMaxMessages(pull))
	if err != nil {
		return fmt.Errorf("consuming delivery jobs: %w", err)
	}
	go func() { <-ctx.Done(); it.Stop() }()
	var wg sync.WaitGroup
	var result error
	for {
		msg, err := it.Next()
		if err != nil {
			if errors.Is(err, jetstream.ErrMsgIteratorClosed) || ctx.Err() != nil {
				break
			}
			if errors.Is(err, jetstream.ErrConsumerDeleted) || errors.Is(err, jetstream.ErrConsumerNotFound) {
				it.Stop()
				result = errConsumerGone
				break
			}
			d.o.Logger.Warn("dispatcher: reading jobs", "err", err)
			continue
		}
		job, err := DecodeJob(msg.Headers(), msg.Data())
		if err != nil {
			d.o.Logger.Error("dispatcher: undecodable job dropped", "subject", msg.Subject(), "err", err)
			_ = msg.Term()
			continue
		}
		job.unordered = unordered
		// Entered in the ordering index here, in delivery order, before
		// any goroutine can race a later job past an earlier one.
		d.enter(job)
		if seen != nil {
			if md, err := msg.Metadata(); err == nil && md.Sequence.Stream > seen.Load() {
				// First deliveries come in stream order: every job of the
				// lane up to here has been entered or has finished.
				seen.Store(md.Sequence.Stream)
			}
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			d.handle(ctx, msg, job)
		}()
	}
	wg.Wait()
	return result
}

// orderKey is j's ordering key, or "" when ordering is off.
func (d *Dispatcher) orderKey(j *Job) string {
	if j.unordered {
		return ""
	}
	return j.OrderKey()
}

func (d *Dispatcher) enter(j *Job) {
	k := d.orderKey(j)
	if k == "" {
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	st := d.order[k]
	if st == nil {
		st = &orderState{changed: make(chan struct{})}
		d.order[k] = st
	}
	if i, found := slices.BinarySearch(st.seqs, j.EventSeq); !found {
		st.seqs = slices.Insert(st.seqs, i, j.EventSeq)
	}
}

func (d *Dispatcher) leave(j *Job) {
	k := d.orderKey(j)
	if k == "" {
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	st := d.order[k]
	if st == nil {
		return
	}
	if i, found := slices.BinarySearch(st.seqs, j.EventSeq); found {
		st.seqs = slices.Delete(st.seqs, i, i+1)
	}
	st.next = time.Time{}
	st.signal()
	if len(st.seqs) == 0 {
		delete(d.order, k)
	}
}

// retryAt records when the head of j's order key tries again.
func (d *Dispatcher) retryAt(j *Job, next time.Time) {
	k := d.orderKey(j)
	if k == "" {
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if st := d.order[k]; st != nil {
		st.next = next
		st.signal()
	}
}

// blocked says whether an earlier job for the same patient and endpoint is
// unfinished. If that job is being attempted now, wake says when to look
// again; if it is waiting for a retry, hold is how long to give this job
// back to JetStream.
func (d *Dispatcher) blocked(j *Job, now time.Time) (blocked bool, wake <-chan struct{}, hold time.Duration) {
	k := d.orderKey(j)
	if k == "" {
		return false, nil, 0
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	st := d.order[k]
	if st == nil || len(st.seqs) == 0 || st.seqs[0] >= j.EventSeq {
		return false, nil, 0
	}
	if st.next.After(now) {
		hold = min(st.next.Sub(now)+50*time.Millisecond, 30*time.Second)
		return true, nil, hold + time.Duration(d.o.Rand()*float64(50*time.Millisecond))
	}
	// Only the next few park in memory; a long backlog for one patient
	// goes back to JetStream, paced by its place in the queue, so that it
	// cannot fill the consumer's ack-pending window and stall everyone.
	pos, _ := slices.BinarySearch(st.seqs, j.EventSeq)
	if pos > maxParkedPerKey {
		hold = min(time.Duration(pos)*10*time.Millisecond, 10*time.Second)
		return true, nil, hold + time.Duration(d.o.Rand()*float64(hold/4))
	}
	return true, st.changed, 0
}

// maxParkedPerKey is how many of one patient's later jobs wait in memory
// behind the job in flight.
const maxParkedPerKey = 32

func (d *Dispatcher) endpoint(j *Job) *endpointState {
	tok := EndpointToken(j.Channel, j.Endpoint)
	d.mu.Lock()
	defer d.mu.Unlock()
	st := d.endpoints[tok]
	if st == nil {
		st = &endpointState{sem: make(chan struct{}, max(1, d.o.Concurrency(j.Endpoint)))}
		st.breaker = newBreaker(d.o.Breaker, func(s BreakerState) {
			d.o.Logger.Warn("circuit breaker changed", "endpoint", j.Endpoint, "token", tok, "state", s.String())
			d.o.Metrics.breaker.WithLabelValues(tok).Set(float64(s))
			d.o.Metrics.transitions.WithLabelValues(s.String()).Inc()
		})
		d.endpoints[tok] = st
	}
	return st
}

// BreakerStates reports each known endpoint's breaker (admin API).
func (d *Dispatcher) BreakerStates() map[string]string {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := map[string]string{}
	for tok, st := range d.endpoints {
		out[tok] = st.breaker.State().String()
	}
	return out
}

// ResetBreaker closes the breaker of a webhook endpoint; known says
// whether the endpoint had one.
func (d *Dispatcher) ResetBreaker(endpoint string) (known bool) {
	d.mu.Lock()
	st := d.endpoints[EndpointToken(subscription.ChannelRestHook, endpoint)]
	d.mu.Unlock()
	if st == nil {
		return false
	}
	st.breaker.Reset()
	return true
}

func (d *Dispatcher) handle(ctx context.Context, msg jetstream.Msg, j *Job) {
	now := d.o.Now()
	rec, err := d.o.Log.Begin(j, now)
	if err != nil {
		d.o.Logger.Error("dispatcher: recording job", "job", j.ID, "err", err)
		_ = msg.NakWithDelay(time.Second)
		return
	}
	if rec.Terminal() || j.Generation < rec.Generation {
		// A duplicate of a finished job (a fan-out re-run, or the ack of
		// the finished one was lost): never deliver it twice.
		d.leave(j)
		_ = msg.Ack()
		return
	}
	if !d.turn(ctx, msg, j) {
		return
	}
	ep := d.endpoint(j)
	if ok, wait := ep.breaker.Allow(now); !ok {
		_ = msg.NakWithDelay(wait + time.Duration(d.o.Rand()*float64(wait/10+time.Millisecond)))
		return
	}
	// Granted before queueing; give the grant back (a half-open probe
	// slot) and ask again once a concurrency slot is ours, since the
	// breaker may have opened while this job waited.
	ep.breaker.release()
	tok := EndpointToken(j.Channel, j.Endpoint)
	if n := ep.waiting.Add(1); n > int64(maxWaitingPerEndpoint) {
		// A slow endpoint's queue must not fill the consumer's ack-pending
		// window and starve every other endpoint: hand the job back.
		ep.waiting.Add(-1)
		_ = msg.NakWithDelay(time.Second + time.Duration(d.o.Rand()*float64(time.Second)))
		return
	}
	d.o.Metrics.backlog.WithLabelValues(tok).Inc()
	defer d.o.Metrics.backlog.WithLabelValues(tok).Dec()
	acquired := d.acquire(ctx, msg, ep)
	ep.waiting.Add(-1)
	if !acquired {
		return
	}
	if ok, wait := ep.breaker.Allow(d.o.Now()); !ok {
		<-ep.sem
		_ = msg.NakWithDelay(wait + time.Duration(d.o.Rand()*float64(wait/10+time.Millisecond)))
		return
	}
	res := d.o.Sender.Send(ctx, j)
	<-ep.sem
	if ctx.Err() != nil && res.Class != Delivered {
		// Cancelled mid-attempt (the node is stopping or gave up the
		// lane): the outcome is unknown and says nothing about the
		// endpoint; the job is sent again, by this node or the lane's
		// next owner.
		ep.breaker.release()
		_ = msg.NakWithDelay(time.Second)
		return
	}
	at := d.o.Now()
	ep.breaker.Record(res.Class != Retry, at)
	d.o.Metrics.attempt.WithLabelValues(j.Channel).Observe(res.Latency.Seconds())
	a := Attempt{At: at, Generation: j.Generation, Status: res.Status, Outcome: res.Class.String(),
		LatencyMs: float64(res.Latency.Microseconds()) / 1000}
	if res.Err != nil {
		a.Error = res.Err.Error()
	}
	d.settle(ctx, msg, j, rec, a, res)
}

// turn waits until j may be attempted: it is the first unfinished job of
// its order key, and (with lanes) no earlier job of the key can still
// appear. It reports whether the job may go now; if not, the job has been
// handed back to JetStream.
func (d *Dispatcher) turn(ctx context.Context, msg jetstream.Msg, j *Job) bool {
	if d.lanes == nil || d.orderKey(j) == "" {
		return d.waitTurn(ctx, msg, j)
	}
	start := d.o.Now()
	progress := start
	for {
		if !d.waitTurn(ctx, msg, j) {
			return false
		}
		known, err := d.predecessorsKnown(ctx, j)
		if known {
			return true
		}
		if err != nil && ctx.Err() == nil {
			d.o.Logger.Debug("dispatcher: checking for earlier jobs", "job", j.ID, "err", err)
		}
		now := d.o.Now()
		if now.Sub(start) > 10*time.Second {
			_ = msg.NakWithDelay(time.Second + time.Duration(d.o.Rand()*float64(time.Second)))
			return false
		}
		if now.Sub(progress) > d.o.AckWait/3 {
			_ = msg.InProgress()
			progress = now
		}
		select {
		case <-ctx.Done():
			_ = msg.NakWithDelay(time.Second)
			return false
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// waitTurn parks the job while an earlier job of its order key is in
// flight, and hands it back to JetStream while that job waits for a retry.
// It reports whether the job may go now.
func (d *Dispatcher) waitTurn(ctx context.Context, msg jetstream.Msg, j *Job) bool {
	t := time.NewTicker(d.o.AckWait / 3)
	defer t.Stop()
	// Parking is for a head that is about to finish; a head that is itself
	// waiting (breaker, full queue) must not keep its followers in memory,
	// where they would fill the consumer's ack-pending window.
	giveUp := time.NewTimer(5 * time.Second)
	defer giveUp.Stop()
	for {
		blocked, wake, hold := d.blocked(j, d.o.Now())
		switch {
		case !blocked:
			return true
		case wake == nil:
			_ = msg.NakWithDelay(hold)
			return false
		}
		select {
		case <-wake:
			// The head moved: patience starts again.
			if !giveUp.Stop() {
				select {
				case <-giveUp.C:
				default:
				}
			}
			giveUp.Reset(5 * time.Second)
		case <-t.C:
			_ = msg.InProgress()
		case <-giveUp.C:
			_ = msg.NakWithDelay(time.Second + time.Duration(d.o.Rand()*float64(time.Second)))
			return false
		case <-ctx.Done():
			_ = msg.NakWithDelay(time.Second)
			return false
		}
	}
}

// acquire waits for the endpoint's concurrency slot, telling JetStream the
// job is in progress meanwhile so that waiting is not mistaken for a crash.
func (d *Dispatcher) acquire(ctx context.Context, msg jetstream.Msg, ep *endpointState) bool {
	t := time.NewTicker(d.o.AckWait / 3)
	defer t.Stop()
	for {
		select {
		case ep.sem <- struct{}{}:
			return true
		case <-t.C:
			_ = msg.InProgress()
		case <-ctx.Done():
			_ = msg.NakWithDelay(time.Second)
			return false
		}
	}
}

func (d *Dispatcher) settle(ctx context.Context, msg jetstream.Msg, j *Job, rec *Record, a Attempt, res Result) {
	pol := d.o.Policy(j.Endpoint)
	switch res.Class {
	case Delivered:
		if _, err := d.o.Log.Attempted(j, a, StateDelivered, time.Time{}, ""); err != nil {
			d.o.Logger.Error("recording delivery", "job", j.ID, "err", err)
		}
		d.finish(ctx, msg, j)
		d.o.Metrics.deliveries.WithLabelValues(j.Channel, "delivered", j.EventCode).Inc()
		return
	case Gone:
		d.gone(j, res)
		d.dead(ctx, msg, j, a, "gone", res)
		return
	case Rejected:
		d.dead(ctx, msg, j, a, "rejected", res)
		return
	}
	attempts := rec.AttemptCount + 1
	first := rec.FirstAttempt
	if first.IsZero() {
		first = a.At
	}
	if attempts >= pol.MaxAttempts || a.At.Sub(first) >= pol.MaxAge {
		d.dead(ctx, msg, j, a, "exhausted", res)
		return
	}
	delay := pol.Backoff.Delay(attempts, d.o.Rand)
	if res.HasRetry {
		delay = max(delay, min(res.RetryAfter, pol.RetryAfterMax))
	}
	next := a.At.Add(delay)
	if _, err := d.o.Log.Attempted(j, a, StateRetrying, next, ""); err != nil {
		d.o.Logger.Error("recording attempt", "job", j.ID, "err", err)
	}
	d.retryAt(j, next)
	d.o.Metrics.deliveries.WithLabelValues(j.Channel, "retry", j.EventCode).Inc()
	d.o.Logger.Info("delivery failed; will retry", "job", j.ID, "endpoint", j.Endpoint, "attempt", attempts,
		"status", res.Status, "err", a.Error, "retry_in", delay)
	_ = msg.NakWithDelay(delay)
}

// gone puts the subscriptions behind a 410 into error.
func (d *Dispatcher) gone(j *Job, res Result) {
	if d.o.Statuses == nil {
		return
	}
	for _, m := range j.Matches {
		_, err := d.o.Statuses.SetStatusFrom(m.Subscription, []subscription.Status{subscription.StatusActive},
			subscription.StatusError, "delivery", fmt.Sprintf("endpoint answered %d Gone", res.Status))
		if err != nil && !errors.Is(err, subscription.ErrTransition) && !errors.Is(err, subscription.ErrNotFound) {
			d.o.Logger.Error("setting subscription to error after 410", "subscription", m.Subscription, "err", err)
		}
	}
}

// dead moves the job to the dead-letter stream, then acknowledges it; if
// storing the dead letter fails the job stays where it is.
func (d *Dispatcher) dead(ctx context.Context, msg jetstream.Msg, j *Job, a Attempt, reason string, res Result) {
	rec, err := d.o.Log.Get(j.ID)
	if err != nil {
		d.o.Logger.Error("dead letter: reading record", "job", j.ID, "err", err)
	}
	attempts := 1
	if rec != nil {
		attempts = rec.AttemptCount + 1
	}
	dm := j.Msg()
	dm.Subject = DeadSubjectPrefix + "hook." + EndpointToken(j.Channel, j.Endpoint)
	dm.Header.Set(nats.MsgIdHdr, j.ID+"#dead"+strconv.Itoa(j.Generation))
	dm.Header.Set(HeaderDeadReason, reason)
	dm.Header.Set(HeaderDeadStatus, strconv.Itoa(res.Status))
	dm.Header.Set(HeaderDeadAttempts, strconv.Itoa(attempts))
	dm.Header.Set(HeaderDeadAt, a.At.UTC().Format(time.RFC3339Nano))
	if res.Err != nil {
		dm.Header.Set("Ems-Dead-Error", res.Err.Error())
	}
	if _, err := d.o.JS.PublishMsg(ctx, dm); err != nil {
		d.o.Logger.Error("storing dead letter; job kept", "job", j.ID, "err", err)
		_ = msg.NakWithDelay(5 * time.Second)
		return
	}
	if _, err := d.o.Log.Attempted(j, a, StateDead, time.Time{}, reason); err != nil {
		d.o.Logger.Error("recording dead letter", "job", j.ID, "err", err)
	}
	d.finish(ctx, msg, j)
	d.o.Metrics.dead.WithLabelValues(j.Channel, reason).Inc()
	d.o.Metrics.deliveries.WithLabelValues(j.Channel, "dead", j.EventCode).Inc()
	d.o.Logger.Warn("delivery dead-lettered", "job", j.ID, "endpoint", j.Endpoint, "reason", reason,
		"status", res.Status, "attempts", attempts, "err", a.Error)
}

// finish acknowledges a terminal job and lets the next job of its order
// key go. With lanes the acknowledgement is confirmed first: were it lost
// with this node, the lane's next owner would send this job again after
// its successor, out of order. (A single node finds the job terminal in
// its own log after a restart.)
func (d *Dispatcher) finish(ctx context.Context, msg jetstream.Msg, j *Job) {
	if d.lanes == nil {
		d.leave(j)
		_ = msg.Ack()
		return
	}
	// Retried while the lane is ours (a NATS server failing over): the
	// successor waits, as it would for the job itself. A lane given up
	// meanwhile goes to a node that finds the job in the stream anyway.
	for try := 1; ; try++ {
		actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		err := msg.DoubleAck(actx)
		cancel()
		if err == nil {
			break
		}
		d.o.Logger.Warn("dispatcher: acknowledging a finished job", "job", j.ID, "try", try, "err", err)
		select {
		case <-ctx.Done():
		case <-time.After(min(time.Duration(try)*200*time.Millisecond, 2*time.Second)):
			continue
		}
		break
	}
	d.leave(j)
}
