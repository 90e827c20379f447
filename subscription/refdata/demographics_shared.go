package refdata

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ems-broker/ems/fhir"
	"github.com/ems-broker/ems/subscription"
)

// DemographicsBucket is the cluster's demographics store: one KV key per
// NHS number, the value the Patient's JSON as the bbolt store keeps it.
const DemographicsBucket = "EMS_DEMOGRAPHICS"

// SharedDemographics is the demographics store of cluster mode. Every
// node's fan-out reads and writes the same records, so what one node
// observed (a change of address) is what the next event for that patient
// is matched with on any node. Observe is a compare-and-set per changed
// record, so two nodes observing one patient at once both land.
type SharedDemographics struct {
	js    jetstream.JetStream
	kv    jetstream.KeyValue
	now   func() time.Time
	stage *DemographicsStore // validates and stages a bootstrap CSV locally
}

// openSharedDemographics creates (or binds) the bucket.
func openSharedDemographics(ctx context.Context, o ClusterOptions, stage *DemographicsStore) (*SharedDemographics, error) {
	kv, err := o.JS.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: DemographicsBucket,
		Description: "patients' demographics by NHS number, kept from the events (generic subscriptions)",
		Storage:     jetstream.FileStorage, Replicas: max(o.Replicas, 1), History: 1})
	if err != nil {
		return nil, fmt.Errorf("creating %s bucket (R%d): %w", DemographicsBucket, max(o.Replicas, 1), err)
	}
	return &SharedDemographics{js: o.JS, kv: kv, now: stage.now, stage: stage}, nil
}

var _ Demographics = (*SharedDemographics)(nil)

// Patient implements Demographics.
func (d *SharedDemographics) Patient(ctx context.Context, nhs string) (Patient, bool, error) {
	p, _, _, ok, err := d.get(ctx, nhs)
	return p, ok, err
}

func (d *SharedDemographics) get(ctx context.Context, nhs string) (p Patient, raw []byte, rev uint64, ok bool, err error) {
	e, err := d.kv.Get(ctx, nhs)
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound):
		return p, nil, 0, false, nil
	case err != nil:
		return p, nil, 0, false, fmt.Errorf("reading demographics of %s: %w", nhs, err)
	}
	if err := json.Unmarshal(e.Value(), &p); err != nil {
		return p, nil, 0, false, fmt.Errorf("demographics of %s: %w", nhs, err)
	}
	return p, e.Value(), e.Revision(), true, nil
}

// Put stores a patient's record whole.
func (d *SharedDemographics) Put(ctx context.Context, p Patient) error {
	if !fhir.ValidNHSNumber(p.NHSNumber) {
		return fmt.Errorf("demographics: %q is not an NHS number", p.NHSNumber)
	}
	if p.Updated.IsZero() {
		p.Updated = d.now().UTC()
	}
	b, _ := json.Marshal(p)
	if _, err := d.kv.Put(ctx, p.NHSNumber, b); err != nil {
		return fmt.Errorf("storing demographics of %s: %w", p.NHSNumber, err)
	}
	return nil
}

// Observe updates the records from one accepted event, with the bbolt
// store's rules (DemographicsStore.ObserveSeq); the event's stream
// sequence comes from ctx (subscription.ContextWithEventSeq), and without
// one the event is applied as the newest.
func (d *SharedDemographics) Observe(ctx context.Context, eventCode string, bundle *fhir.Node) error {
	_, err := d.observe(ctx, eventCode, bundle)
	return err
}

// observe returns the records after the event, so that the enricher does
// not read them back: one KV read per patient in the bundle, and one
// write for each record the event changes.
func (d *SharedDemographics) observe(ctx context.Context, eventCode string, bundle *fhir.Node) (map[string]Patient, error) {
	obs := observePatients(eventCode, bundle)
	authoritative := isPDSEvent(eventCode)
	seq, _ := subscription.EventSeqFrom(ctx)
	out := make(map[string]Patient, len(obs))
	for _, o := range obs {
		if o.nhs == "" {
			continue // nothing to key it by (a mother without a number)
		}
		for try := 0; ; try++ {
			p, before, rev, _, err := d.get(ctx, o.nhs)
			if err != nil {
				return nil, err
			}
			p.NHSNumber = o.nhs
			// Applied again to the record another node wrote in between
			// (a conflict below): the sequences decide which event's
			// fields stand, whichever node wrote first.
			o.apply(&p, authoritative, seq)
			if after, _ := json.Marshal(p); bytes.Equal(after, before) {
				out[o.nhs] = p // most events change nothing: no write
				break
			}
			p.Updated = d.now().UTC()
			v, _ := json.Marshal(p)
			if rev == 0 {
				_, err = d.kv.Create(ctx, o.nhs, v)
			} else {
				_, err = d.kv.Update(ctx, o.nhs, v, rev)
			}
			if err == nil {
				out[o.nhs] = p
				break
			}
			// Another node changed the record since the read: apply this
			// observation to its version.
			conflict := errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyRevisionMismatch)
			if !conflict || try >= casTries {
				return nil, fmt.Errorf("storing demographics of %s: %w", o.nhs, err)
			}
		}
	}
	return out, nil
}

// ImportCSV bootstraps the bucket from a CSV, with the bbolt store's
// format and rules: the whole file is validated and staged in this node's
// bbolt first, so a bad row changes nothing in the cluster.
func (d *SharedDemographics) ImportCSV(ctx context.Context, r io.Reader, name string) (int64, error) {
	return d.stage.importCSV(ctx, r, name, func(batch []kv) error {
		// Asynchronous publishes, acknowledged a window at a time: one
		// round trip per record would make a national bootstrap take hours.
		const window = 1000
		for len(batch) > 0 {
			n := min(window, len(batch))
			acks := make([]jetstream.PubAckFuture, 0, n)
			for _, e := range batch[:n] {
				a, err := d.js.PublishAsync("$KV."+DemographicsBucket+"."+e.k, e.v)
				if err != nil {
					return fmt.Errorf("storing demographics of %s: %w", e.k, err)
				}
				acks = append(acks, a)
			}
			for i, a := range acks {
				select {
				case <-a.Ok():
				case err := <-a.Err():
					return fmt.Errorf("storing demographics of %s: %w", batch[i].k, err)
				case <-ctx.Done():
					return ctx.Err()
				}
			}
			batch = batch[n:]
		}
		return nil
	})
}
