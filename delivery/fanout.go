package delivery

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ems-broker/ems/delivery/mesh"
	"github.com/ems-broker/ems/fhir"
	"github.com/ems-broker/ems/fhir/catalog"
	"github.com/ems-broker/ems/subscription"
)

// Matcher answers which subscriptions an event matches.
type Matcher interface {
	Match(subscription.EventFacts) ([]subscription.Match, error)
}

// SubscriptionReader reads one subscription (channel headers; replay's
// re-check that it is still active).
type SubscriptionReader interface {
	Get(id string) (*subscription.Subscription, error)
}

// FactsCompleter fills the facts delivery derives from an event's headers
// with the patient's demographics and the reference data, recording the
// event in the demographics store on the way (refdata.Service.Complete).
type FactsCompleter interface {
	Complete(ctx context.Context, f subscription.EventFacts, bundle *fhir.Node) (subscription.EventFacts, error)
}

// Pacer admits a unit of delivery work; while publishing is busy it holds
// delivery back so that publishers are answered first (pace.Gate).
type Pacer interface {
	Background(ctx context.Context) (done func(), err error)
}

// FanoutOptions configure the fan-out stage.
type FanoutOptions struct {
	// Pace, when set, admits each event's fan-out. Optional.
	Pace Pacer
	// Facts, when set, completes the facts before matching. Optional.
	Facts         FactsCompleter
	JS            jetstream.JetStream
	EventsStream  string
	Durable       string // consumer name (default "ems-delivery-fanout")
	Matcher       Matcher
	Subscriptions SubscriptionReader
	Catalog       *catalog.Catalog
	// MeshFrom is the Mex-From of built-in mailbox deliveries.
	MeshFrom string
	// Workers process events in parallel; events for one NHS number always
	// go to the same worker, so their jobs are stored in publish order.
	Workers int
	// AckWait and MaxDeliver bound the events consumer: JetStream's default
	// is unlimited redelivery, which turns one poison event into a storm.
	AckWait    time.Duration
	MaxDeliver int
	Logger     *slog.Logger
	Metrics    *Metrics
	Now        func() time.Time
	// mailLog, when set, records mailbox deliveries in the delivery log.
	mailLog *asyncLog
}

// Fanout turns stored events into delivery jobs.
type Fanout struct {
	o    FanoutOptions
	cons jetstream.Consumer
}

// NewFanout creates (or updates) the durable consumer on the events stream.
func NewFanout(ctx context.Context, o FanoutOptions) (*Fanout, error) {
	if o.Durable == "" {
		o.Durable = "ems-delivery-fanout"
	}
	if o.Workers <= 0 {
		o.Workers = 32
	}
	if o.AckWait <= 0 {
		o.AckWait = 30 * time.Second
	}
	if o.MaxDeliver <= 0 {
		o.MaxDeliver = 1000
	}
	if o.MeshFrom == "" {
		o.MeshFrom = "EMS"
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
	cons, err := o.JS.CreateOrUpdateConsumer(ctx, o.EventsStream, jetstream.ConsumerConfig{
		Durable:       o.Durable,
		Description:   "EMS delivery fan-out: acknowledges an event once every job is stored",
		DeliverPolicy: jetstream.DeliverAllPolicy,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       o.AckWait,
		MaxDeliver:    o.MaxDeliver,
		MaxAckPending: 1024,
		FilterSubject: fhir.EventSubjectPrefix + ">",
	})
	if err != nil {
		return nil, fmt.Errorf("creating fan-out consumer on %s: %w", o.EventsStream, err)
	}
	return &Fanout{o: o, cons: cons}, nil
}

// Run consumes events until ctx ends.
func (f *Fanout) Run(ctx context.Context) error {
	queues := make([]chan jetstream.Msg, f.o.Workers)
	held := newHeldEvents()
	var wg sync.WaitGroup
	for i := range queues {
		queues[i] = make(chan jetstream.Msg, 64)
		wg.Add(1)
		go func(q <-chan jetstream.Msg) {
			defer wg.Done()
			for msg := range q {
				f.paced(ctx, msg)
				held.done(msg)
			}
		}(queues[i])
	}
	it, err := f.cons.Messages(jetstream.PullMaxMessages(256))
	if err != nil {
		return fmt.Errorf("consuming events: %w", err)
	}
	go func() { <-ctx.Done(); it.Stop() }()
	go held.keepAlive(ctx, f.o.AckWait, time.Now, func(n int) {
		f.o.Metrics.events.WithLabelValues("kept_in_progress").Add(float64(n))
	})
	for {
		msg, err := it.Next()
		if err != nil {
			if errors.Is(err, jetstream.ErrMsgIteratorClosed) || ctx.Err() != nil {
				break
			}
			f.o.Logger.Warn("fan-out: reading events", "err", err)
			continue
		}
		h := fnv.New32a()
		key := msg.Headers().Get(fhir.HeaderNHSNumber)
		if key == "" {
			key = msg.Headers().Get(fhir.HeaderMessageID)
		}
		h.Write([]byte(key))
		held.add(msg, time.Now())
		queues[h.Sum32()%uint32(len(queues))] <- msg
	}
	for _, q := range queues {
		close(q)
	}
	wg.Wait()
	return nil
}

// paced handles one event when the pacer admits it. An event the pacer
// gives up on (shutdown) stays unacknowledged and comes back.
func (f *Fanout) paced(ctx context.Context, msg jetstream.Msg) {
	if f.o.Pace == nil {
		f.handle(ctx, msg)
		return
	}
	done, err := f.o.Pace.Background(ctx)
	if err != nil {
		return
	}
	defer done()
	f.handle(ctx, msg)
}

// handle fans one event out. A failure (the store refusing jobs) is retried
// here, holding the worker, rather than handed back to JetStream: the
// worker's later events are for the same patients, and storing their jobs
// first would break the per-patient order. After a few tries the event
// goes back to JetStream with a delay so that a persistent fault does not
// hold the worker for ever.
func (f *Fanout) handle(ctx context.Context, msg jetstream.Msg) {
	retry := Backoff{Initial: 100 * time.Millisecond, Max: 5 * time.Second, Multiplier: 2}
	for try := 1; ; try++ {
		err := f.Process(ctx, msg.Headers(), msg.Data(), seqOf(msg))
		if err == nil {
			break
		}
		f.o.Metrics.events.WithLabelValues("retry").Inc()
		if try >= 8 || ctx.Err() != nil {
			n := uint64(1)
			if md, _ := msg.Metadata(); md != nil {
				n = md.NumDelivered
			}
			delay := Backoff{Initial: time.Second, Max: time.Minute, Multiplier: 2}.Delay(int(n), nil)
			f.o.Logger.Error("fan-out failed; the event goes back to the stream", "subject", msg.Subject(), "delivery", n,
				"max_deliver", f.o.MaxDeliver, "retry_in", delay, "err", err)
			_ = msg.NakWithDelay(delay)
			return
		}
		f.o.Logger.Warn("fan-out failed; retrying", "subject", msg.Subject(), "try", try, "err", err)
		_ = msg.InProgress()
		select {
		case <-time.After(retry.Ceiling(try)):
		case <-ctx.Done():
		}
	}
	if err := msg.DoubleAck(ctx); err != nil {
		// The jobs are stored; a redelivered event re-runs into the
		// de-duplication window, not into second copies.
		f.o.Logger.Warn("fan-out: acknowledging event", "subject", msg.Subject(), "err", err)
	}
}

func seqOf(msg jetstream.Msg) uint64 {
	if md, err := msg.Metadata(); err == nil {
		return md.Sequence.Stream
	}
	return 0
}

// endpointGroup is every match for one endpoint.
type endpointGroup struct {
	channel, endpoint, payload string
	matches                    []MatchInfo
	subIDs                     []string
}

// Process fans one event out and returns once every job is stored.
func (f *Fanout) Process(ctx context.Context, h nats.Header, body []byte, seq uint64) error {
	eventCode, nhs, eventID := h.Get(fhir.HeaderEventCode), h.Get(fhir.HeaderNHSNumber), h.Get(fhir.HeaderMessageID)
	began := time.Now()
	mark := began
	stage := func(name string) {
		now := time.Now()
		f.o.Metrics.stages[name].Observe(now.Sub(mark).Seconds())
		mark = now
	}
	defer func() { f.o.Metrics.stages["total"].Observe(time.Since(began).Seconds()) }()
	format, ok := fhir.FormatForContentType(h.Get(fhir.HeaderContentType))
	if !ok {
		format = fhir.Sniff(body)
	}
	bundle, err := fhir.Parse(body, format, fhir.DefaultLimits())
	if err != nil {
		// The broker validated it before storing: a parse failure here is
		// a codec regression, and retrying will not cure it.
		f.o.Logger.Error("fan-out: stored event does not parse; not delivered", "event_id", eventID, "err", err)
		f.o.Metrics.events.WithLabelValues("unparseable").Inc()
		return nil
	}
	stage("parse")
	facts := Facts(eventCode, h.Get(fhir.HeaderMessageEventType), nhs, bundle)
	if f.o.Facts != nil {
		// The sequence lets the demographics store keep a newer event's
		// change when another node observes an older one after it.
		if facts, err = f.o.Facts.Complete(subscription.ContextWithEventSeq(ctx, seq), facts, bundle); err != nil {
			return fmt.Errorf("completing the facts of event %s: %w", eventID, err)
		}
	}
	stage("facts")
	matches, err := f.o.Matcher.Match(facts)
	if err != nil {
		return fmt.Errorf("matching event %s: %w", eventID, err)
	}
	stage("match")
	if len(matches) == 0 {
		f.o.Metrics.events.WithLabelValues("unmatched").Inc()
		return nil
	}
	groups := map[[2]string]*endpointGroup{}
	for _, m := range matches {
		k := [2]string{m.ChannelType, m.Endpoint}
		g := groups[k]
		if g == nil {
			g = &endpointGroup{channel: m.ChannelType, endpoint: m.Endpoint, payload: m.Payload}
			groups[k] = g
		}
		g.matches = append(g.matches, matchInfo(m))
		g.subIDs = append(g.subIDs, m.SubscriptionID)
	}
	keys := make([][2]string, 0, len(groups))
	for k := range groups {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return keys[i][0]+keys[i][1] < keys[j][0]+keys[j][1] })

	var mailBody []byte // converted to XML and encoded once, for every mailbox
	var mailEncoding string
	var futures []jetstream.PubAckFuture
	var mailed []*endpointGroup // futures[i]'s group when a mailbox, else nil
	for _, k := range keys {
		g := groups[k]
		var msg *nats.Msg
		switch g.channel {
		case subscription.ChannelMessage:
			if !mesh.ValidMailbox(g.endpoint) {
				f.o.Logger.Error("fan-out: subscription names an unusable mailbox; not delivered", "mailbox", g.endpoint, "subscriptions", g.subIDs)
				f.o.Metrics.deliveries.WithLabelValues(g.channel, "unroutable", eventCode).Inc()
				continue
			}
			if mailBody == nil {
				xmlBody := body // unchanged, byte for byte
				if format != fhir.FormatXML {
					if xmlBody, err = fhir.Marshal(bundle, fhir.FormatXML, false); err != nil {
						return fmt.Errorf("converting event %s to XML: %w", eventID, err)
					}
				}
				mailBody, mailEncoding = mesh.EncodeBody(xmlBody)
			}
			msg = f.meshMsg(h, g, mailBody, mailEncoding, seq)
		case subscription.ChannelRestHook:
			job := &Job{ID: JobID(eventID, g.channel, g.endpoint), Channel: g.channel, Endpoint: g.endpoint,
				Payload: g.payload, Matches: g.matches, Headers: f.hookHeaders(g.subIDs),
				EventCode: eventCode, NHSNumber: nhs, EventID: eventID, EventSeq: seq,
				ReceivedAt: h.Get(fhir.HeaderReceivedAt), ContentType: h.Get(fhir.HeaderContentType), Body: body}
			msg = job.Msg()
		default:
			f.o.Logger.Error("fan-out: unknown channel type; not delivered", "channel", g.channel, "subscriptions", g.subIDs)
			continue
		}
		fut, err := f.o.JS.PublishMsgAsync(msg)
		if err != nil {
			return fmt.Errorf("storing job for %s: %w", g.endpoint, err)
		}
		futures = append(futures, fut)
		if g.channel == subscription.ChannelMessage {
			mailed = append(mailed, g)
		} else {
			mailed = append(mailed, nil)
		}
	}
	timeout := time.NewTimer(f.o.AckWait / 2)
	defer timeout.Stop()
	for _, fut := range futures {
		select {
		case <-fut.Ok():
		case err := <-fut.Err():
			return fmt.Errorf("storing job %s: %w", fut.Msg().Header.Get(nats.MsgIdHdr), err)
		case <-timeout.C:
			return errors.New("storing jobs: timed out")
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	stage("store")
	now := f.o.Now()
	for i, fut := range futures {
		g := mailed[i]
		if g == nil {
			f.o.Metrics.jobs.WithLabelValues(fut.Msg().Header.Get(HeaderChannel)).Inc()
			continue
		}
		f.o.Metrics.deliveries.WithLabelValues(g.channel, "delivered", eventCode).Inc()
		if f.o.mailLog != nil {
			// The group's matches are what the stored message's
			// Ems-Match header encodes: no need to decode it back.
			f.o.mailLog.put(logEntry{rec: &Record{ID: fut.Msg().Header.Get(nats.MsgIdHdr), EventID: eventID, EventCode: eventCode,
				NHSNumber: nhs, Channel: g.channel, Endpoint: g.endpoint, Matches: g.matches, State: StateDelivered,
				AttemptCount: 1, TotalAttempts: 1, FirstAttempt: now, Created: now, Updated: now, Reason: "stored in the mailbox",
				Attempts: []Attempt{{At: now, Outcome: "stored"}}}})
		}
		f.o.Metrics.jobs.WithLabelValues(g.channel).Inc()
	}
	f.o.Metrics.events.WithLabelValues("matched").Inc()
	return nil
}

// meshMsg is the built-in mailbox message: storing it is the delivery.
func (f *Fanout) meshMsg(h nats.Header, g *endpointGroup, body []byte, encoding string, seq uint64) *nats.Msg {
	eventID := h.Get(fhir.HeaderMessageID)
	received, err := time.Parse(time.RFC3339Nano, h.Get(fhir.HeaderReceivedAt))
	if err != nil {
		received = f.o.Now()
	}
	id := mesh.MessageID(received, eventID, g.endpoint)
	out := nats.Header{}
	out.Set("Mex-From", f.o.MeshFrom)
	out.Set("Mex-To", g.endpoint)
	if f.o.Catalog != nil {
		if ev, ok := f.o.Catalog.Lookup(h.Get(fhir.HeaderEventCode)); ok && ev.WorkflowID != "" {
			out.Set("Mex-WorkflowID", ev.WorkflowID)
		}
	}
	if p := PartnerID(g.matches); p != "" {
		out.Set("Mex-PartnerID", p)
	}
	out.Set("Mex-Content-Type", "application/fhir+xml")
	mj, _ := jsonMarshal(g.matches)
	out.Set(mesh.HeaderMatch, mj)
	out.Set(mesh.HeaderEventID, eventID)
	out.Set(fhir.HeaderEventCode, h.Get(fhir.HeaderEventCode))
	out.Set(fhir.HeaderNHSNumber, h.Get(fhir.HeaderNHSNumber))
	out.Set(HeaderEventSeq, strconv.FormatUint(seq, 10))
	out.Set(mesh.HeaderBodyEncoding, encoding)
	out.Set(nats.MsgIdHdr, id)
	return &nats.Msg{Subject: mesh.Subject(g.endpoint, id), Header: out, Data: body}
}

// hookHeaders collects channel.header of the matched subscriptions (the
// first subscription's set wins for a repeated header name).
func (f *Fanout) hookHeaders(ids []string) []string {
	if f.o.Subscriptions == nil {
		return nil
	}
	seen := map[string]bool{}
	var out []string
	for _, id := range ids {
		sub, err := f.o.Subscriptions.Get(id)
		if err != nil {
			continue
		}
		for _, hv := range sub.Channel.Headers {
			if !seen[hv] {
				seen[hv] = true
				out = append(out, hv)
			}
		}
	}
	return out
}
