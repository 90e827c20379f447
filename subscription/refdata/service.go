package refdata

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/ems-broker/ems/fhir"
	"github.com/ems-broker/ems/subscription"
	bolt "go.etcd.io/bbolt"
)

// Options configure a Service.
type Options struct {
	// DB is the service's bbolt database (opened once by cmd). Mandatory.
	DB *bolt.DB
	// Logger: zero value is slog.Default().
	Logger *slog.Logger
	// Now: zero value is time.Now.
	Now func() time.Time
	// Demographics replaces the bbolt demographics store as the source of
	// patients' records (a PDS lookup). Zero value: the bbolt store, fed
	// by Observe.
	Demographics Demographics
	// ImportDir, when set, is the only directory server-side path imports
	// may read from. Zero value disables path imports.
	ImportDir string
	// BatchRows: see StoreOptions. Zero value is a safe default.
	BatchRows int
	// Cluster, when its JS is set, shares the datasets and the
	// demographics with the other nodes through JetStream (docs/refdata.md
	// "Cluster"). Zero value: this node's bbolt only.
	Cluster ClusterOptions
}

// Service is the reference data, the demographics store and the enricher,
// as cmd wires them: RegisterAdmin for the operator routes, Observe for
// every accepted event, Enrich before matching.
type Service struct {
	store     *Store
	patients  *DemographicsStore
	enricher  *Enricher
	log       *slog.Logger
	importDir string
	// Cluster mode only: the shared versions, and the shared demographics
	// (nil when Options.Demographics replaces them).
	cluster *cluster
	shared  *SharedDemographics
	demo    Demographics
}

// New opens the datasets and the demographics store of a single node.
func New(o Options) (*Service, error) {
	if o.Cluster.JS != nil {
		return nil, errors.New("refdata: cluster mode needs Open, which waits for the cluster's datasets")
	}
	return Open(context.Background(), o)
}

// Open is New for either mode. In cluster mode it returns once this node
// holds the cluster's active datasets (loading them from the object store
// if it lacks them), so that it never matches with other data than its
// peers; ctx bounds that wait. Close stops following the cluster.
func Open(ctx context.Context, o Options) (*Service, error) {
	if o.DB == nil {
		return nil, errors.New("refdata: Options.DB is mandatory")
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	st, err := OpenStore(StoreOptions{DB: o.DB, Logger: o.Logger, Now: o.Now, BatchRows: o.BatchRows})
	if err != nil {
		return nil, err
	}
	pat, err := OpenDemographics(o.DB, o.Now)
	if err != nil {
		return nil, err
	}
	s := &Service{store: st, patients: pat, log: o.Logger, importDir: o.ImportDir, demo: pat}
	if o.Cluster.JS != nil {
		if s.shared, err = openSharedDemographics(ctx, o.Cluster, pat); err != nil {
			return nil, err
		}
		s.demo = s.shared
		if s.cluster, err = openCluster(ctx, o.Cluster, st, o.Logger); err != nil {
			return nil, err
		}
	}
	if o.Demographics != nil {
		s.demo, s.shared = o.Demographics, nil
	}
	s.enricher = NewEnricher(st, s.demo)
	return s, nil
}

// Close stops following the cluster (a no-op for a single node).
func (s *Service) Close() {
	if s.cluster != nil {
		s.cluster.close()
	}
}

// Store is the versioned reference datasets.
func (s *Service) Store() *Store { return s.store }

// Patients is the bbolt demographics store (in cluster mode it only
// stages bootstrap CSVs; Demographics is what the enricher reads).
func (s *Service) Patients() *DemographicsStore { return s.patients }

// Demographics is the store the enricher reads patients from.
func (s *Service) Demographics() Demographics { return s.demo }

// Observe feeds an accepted event to the demographics store. Delivery
// calls it once per event, before or after Enrich: Enrich reads a change of
// address's previous postcode from the bundle, so the order does not
// change what matches.
func (s *Service) Observe(eventCode string, bundle *fhir.Node) error {
	var err error
	if s.shared != nil {
		err = s.shared.Observe(context.Background(), eventCode, bundle)
	} else {
		err = s.patients.Observe(eventCode, bundle)
	}
	if err != nil {
		return fmt.Errorf("observing %s: %w", eventCode, err)
	}
	return nil
}

// Enrich fills f's geography, GP hierarchy, registration, age and
// sensitivity; see Enricher.Enrich.
func (s *Service) Enrich(ctx context.Context, f subscription.EventFacts, bundle *fhir.Node) (subscription.EventFacts, Enrichment, error) {
	return s.enricher.Enrich(ctx, f, bundle)
}

// Complete is the one call delivery needs per accepted event: it records
// the event in the demographics store (at the stream sequence ctx carries,
// subscription.ContextWithEventSeq, so that an older event does not undo
// a newer one's change), then returns f enriched for
// matching (with f.RefData naming the datasets read). An error is a storage
// fault worth a redelivery; missing reference data is not an error.
func (s *Service) Complete(ctx context.Context, f subscription.EventFacts, bundle *fhir.Node) (subscription.EventFacts, error) {
	enricher := s.enricher
	if s.shared != nil {
		// The records observe read or wrote are the ones to enrich with:
		// reading them back would be a second round trip per event.
		seen, err := s.shared.observe(ctx, f.EventCode, bundle)
		if err != nil {
			return f, fmt.Errorf("observing %s: %w", f.EventCode, err)
		}
		enricher = NewEnricher(s.store, DemographicsFunc(func(ctx context.Context, nhs string) (Patient, bool, error) {
			if p, ok := seen[nhs]; ok {
				return p, true, nil
			}
			return s.shared.Patient(ctx, nhs)
		}))
	} else {
		seq, _ := subscription.EventSeqFrom(ctx)
		if err := s.patients.ObserveSeq(f.EventCode, bundle, seq); err != nil {
			return f, fmt.Errorf("observing %s: %w", f.EventCode, err)
		}
	}
	out, en, err := enricher.Enrich(ctx, f, bundle)
	if err != nil {
		return f, err
	}
	if len(en.Unmapped) > 0 {
		s.log.Debug("refdata: event facts partly unmapped", "event", f.EventCode, "unmapped", en.Unmapped, "versions", en.Versions)
	}
	return out, nil
}
