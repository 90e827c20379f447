package refdata

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/ems-broker/ems/fhir"
	"github.com/ems-broker/ems/subscription"
)

// Enrichment is how an event's facts were derived, for the match
// explanation and for operators asking "why did (not) this match".
type Enrichment struct {
	// Versions are the reference datasets read ("nspl@3,subicb@1,epraccur@2").
	Versions string `json:"versions,omitempty"`
	// FromStore: the demographics store knew the patient.
	FromStore bool           `json:"fromStore"`
	Practice  *Practice      `json:"practice,omitempty"`
	Postcodes []PostcodeArea `json:"postcodes,omitempty"`
	// Unmapped lists postcodes, practices or sub-ICB GSS codes the active
	// reference data does not know.
	Unmapped []string `json:"unmapped,omitempty"`
}

// Enricher fills the geography and registration facts of an event.
type Enricher struct {
	refs *Store
	demo Demographics
}

// NewEnricher reads reference data from refs and patients from demo (nil:
// the bundle alone).
func NewEnricher(refs *Store, demo Demographics) *Enricher {
	return &Enricher{refs: refs, demo: demo}
}

// Enrich completes f (as delivery derived it from the headers) for matching:
// the patient's record comes from the demographics source, the bundle
// filling what it does not know; for PDS events the bundle is the record's
// own new state and wins. A change of address gives both the new and the
// previous postcode's areas. A sensitive patient is marked so and matches
// nothing. Missing reference data is not an error: the facts it would give
// stay empty and only explicit subscriptions can match.
func (e *Enricher) Enrich(ctx context.Context, f subscription.EventFacts, bundle *fhir.Node) (subscription.EventFacts, Enrichment, error) {
	var en Enrichment
	obs := observePatients(f.EventCode, bundle)
	o, inBundle := eventPatient(f.EventCode, f.NHSNumber, obs, bundle)
	var p Patient
	if e.demo != nil && f.NHSNumber != "" {
		rec, ok, err := e.demo.Patient(ctx, f.NHSNumber)
		if err != nil {
			return f, en, fmt.Errorf("enriching %s: %w", f.EventCode, err)
		}
		if ok {
			p, en.FromStore = rec, true
		}
	}
	if inBundle {
		// Sequence 0: the event is matched with what its own bundle says,
		// even when the store already holds a newer event's change, as it
		// would have been in stream order.
		o.apply(&p, isPDSEvent(f.EventCode) || !en.FromStore, 0)
	}
	if p.Sensitive {
		f.Sensitive = true
		return f, en, nil
	}
	if p.BirthDate != "" {
		if t, err := time.Parse("2006-01-02", p.BirthDate); err == nil {
			f.BirthDate = t
		}
	}
	if p.Registered != nil {
		reg := *p.Registered
		f.Registered, f.GPPractice = &reg, p.GPPractice
	}
	postcodes := []string{}
	if p.Postcode != "" {
		postcodes = append(postcodes, p.Postcode)
	}
	if f.EventCode == eventChangeOfAddr {
		prev := o.previous
		if prev == "" {
			prev = p.PreviousPostcode
		}
		if prev != "" && !slices.Contains(postcodes, prev) {
			postcodes = append(postcodes, prev)
		}
	}
	f.GPSubICB, f.SubICB, f.LocalAuthority, f.Country = "", nil, nil, nil
	if f.GPPractice == "" && len(postcodes) == 0 {
		return f, en, nil
	}
	err := e.refs.View(func(r *Reader) error {
		en.Versions = r.Label()
		if f.GPPractice != "" {
			pr, ok, err := r.Practice(f.GPPractice)
			switch {
			case errors.Is(err, ErrNoData):
			case err != nil:
				return err
			case ok:
				en.Practice, f.GPSubICB = &pr, pr.SubICB
			default:
				en.Unmapped = append(en.Unmapped, "practice "+f.GPPractice)
			}
		}
		for _, pc := range postcodes {
			a, ok, err := r.Postcode(pc)
			switch {
			case errors.Is(err, ErrNoData):
				continue
			case err != nil:
				return err
			case !ok:
				en.Unmapped = append(en.Unmapped, "postcode "+DisplayPostcode(pc))
				continue
			}
			en.Postcodes = append(en.Postcodes, a)
			f.LocalAuthority = appendNew(f.LocalAuthority, a.LocalAuthority)
			f.Country = appendNew(f.Country, a.Country)
			if a.SubICBGSS == "" {
				continue
			}
			s, ok, err := r.SubICB(a.SubICBGSS)
			switch {
			case errors.Is(err, ErrNoData):
			case err != nil:
				return err
			case ok:
				f.SubICB = appendNew(f.SubICB, s.ODS)
			default:
				// Welsh and Scottish health areas are not sub-ICBs.
				en.Unmapped = append(en.Unmapped, "sub-ICB "+a.SubICBGSS)
			}
		}
		return nil
	})
	if err != nil {
		return f, en, fmt.Errorf("enriching %s: reading reference data: %w", f.EventCode, err)
	}
	f.RefData = en.Versions
	return f, en, nil
}

func appendNew(s []string, v string) []string {
	if v == "" || slices.Contains(s, v) {
		return s
	}
	return append(s, v)
}
