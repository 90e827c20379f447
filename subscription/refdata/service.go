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
}

// New opens the datasets and the demographics store.
func New(o Options) (*Service, error) {
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
	var demo Demographics = pat
	if o.Demographics != nil {
		demo = o.Demographics
	}
	return &Service{store: st, patients: pat, enricher: NewEnricher(st, demo), log: o.Logger, importDir: o.ImportDir}, nil
}

// Store is the versioned reference datasets.
func (s *Service) Store() *Store { return s.store }

// Patients is the bbolt demographics store.
func (s *Service) Patients() *DemographicsStore { return s.patients }

// Observe feeds an accepted event to the demographics store. Delivery
// calls it once per event, before or after Enrich: Enrich reads a change of
// address's previous postcode from the bundle, so the order does not
// change what matches.
func (s *Service) Observe(eventCode string, bundle *fhir.Node) error {
	if err := s.patients.Observe(eventCode, bundle); err != nil {
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
// the event in the demographics store, then returns f enriched for
// matching (with f.RefData naming the datasets read). An error is a storage
// fault worth a redelivery; missing reference data is not an error.
func (s *Service) Complete(ctx context.Context, f subscription.EventFacts, bundle *fhir.Node) (subscription.EventFacts, error) {
	if err := s.Observe(f.EventCode, bundle); err != nil {
		return f, err
	}
	out, en, err := s.Enrich(ctx, f, bundle)
	if err != nil {
		return f, err
	}
	if len(en.Unmapped) > 0 {
		s.log.Debug("refdata: event facts partly unmapped", "event", f.EventCode, "unmapped", en.Unmapped, "versions", en.Versions)
	}
	return out, nil
}
