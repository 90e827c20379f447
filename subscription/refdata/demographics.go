package refdata

import (
	"bufio"
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/ems-broker/ems/fhir"
	bolt "go.etcd.io/bbolt"
)

var (
	bucketPatients = []byte("refdata.demographics")         // nhs → Patient JSON
	bucketPatStage = []byte("refdata.demographics.staging") // a CSV bootstrap before it is merged
)

// Patient is what the demographics source knows of one patient: the PDS
// facts generic subscriptions match on.
type Patient struct {
	NHSNumber string `json:"nhsNumber"`
	// GPPractice is the registered practice's ODS code; Registered says
	// whether there is one (nil: not known).
	GPPractice string `json:"gpPractice,omitempty"`
	Registered *bool  `json:"registered,omitempty"`
	// Postcode is the home postcode; PreviousPostcode the one before the
	// last change of address.
	Postcode         string `json:"postcode,omitempty"`
	PreviousPostcode string `json:"previousPostcode,omitempty"`
	BirthDate        string `json:"birthDate,omitempty"` // YYYY-MM-DD
	DeathDate        string `json:"deathDate,omitempty"` // YYYY-MM-DD
	Deceased         bool   `json:"deceased,omitempty"`
	// Sensitive: PDS S flag (restricted record); never routed to generic
	// subscriptions, and nothing at all is delivered (subscriptions.md §6).
	Sensitive bool      `json:"sensitive,omitempty"`
	Updated   time.Time `json:"updated"`
	// Seq is, per group of fields, the EMS_EVENTS sequence of the newest
	// event that set it (see observation.apply). Records from before it,
	// from Put or from a bootstrap CSV have none: sequence 0.
	Seq FieldSeqs `json:"seq,omitzero"`
}

// FieldSeqs are the stream sequences of the events that last set each
// group of a Patient's fields. In cluster mode two nodes can observe two
// events of one patient in either order; an older event must not undo a
// newer one's change.
type FieldSeqs struct {
	GP        uint64 `json:"gp,omitempty"`        // GPPractice, Registered
	Address   uint64 `json:"address,omitempty"`   // Postcode, PreviousPostcode
	Birth     uint64 `json:"birth,omitempty"`     // BirthDate
	Death     uint64 `json:"death,omitempty"`     // Deceased, DeathDate
	Sensitive uint64 `json:"sensitive,omitempty"` // Sensitive
}

// Demographics is where the enricher reads a patient's record. The bbolt
// store below keeps it from the events; a PDS lookup can replace it.
type Demographics interface {
	Patient(ctx context.Context, nhs string) (Patient, bool, error)
}

// DemographicsFunc adapts a function to Demographics.
type DemographicsFunc func(ctx context.Context, nhs string) (Patient, bool, error)

// Patient implements Demographics.
func (f DemographicsFunc) Patient(ctx context.Context, nhs string) (Patient, bool, error) {
	return f(ctx, nhs)
}

var _ Demographics = (*DemographicsStore)(nil)

// DemographicsStore keeps one Patient per NHS number in bbolt.
type DemographicsStore struct {
	db        *bolt.DB
	now       func() time.Time
	batchRows int

	// Group commit of Observe's writes (see commit).
	mu      sync.Mutex
	queue   []commitReq
	writing bool
}

type commitReq struct {
	fn   func(*bolt.Tx) error
	done chan error
}

// maxGroup bounds one group commit's transaction.
const maxGroup = 1000

// commit runs fn in a write transaction shared with every caller that
// queued while the previous one was committing: one fsync for the group,
// and no wait when there is no group. bbolt's own Batch waits out a timer
// (10 ms) unless 1000 calls queue, and the fan-out's workers (4 to 32),
// each blocked on its own write, never fill it: 3.7-4.6 ms per changed
// event with 4 workers, 0.5-1.1 ms with 32, against 1.0-1.7 and
// 0.24-0.46 ms here (BenchmarkComplete). fn is run again, alone, when
// another caller's function failed the shared transaction, so it must be
// idempotent (it re-reads under the transaction).
func (d *DemographicsStore) commit(fn func(*bolt.Tx) error) error {
	r := commitReq{fn: fn, done: make(chan error, 1)}
	d.mu.Lock()
	d.queue = append(d.queue, r)
	start := !d.writing
	d.writing = true
	d.mu.Unlock()
	if start {
		go d.drain()
	}
	return <-r.done
}

// drain commits the queue, group by group, until it is empty.
func (d *DemographicsStore) drain() {
	for {
		d.mu.Lock()
		n := min(len(d.queue), maxGroup)
		if n == 0 {
			d.writing = false
			d.mu.Unlock()
			return
		}
		group := slices.Clone(d.queue[:n])
		d.queue = slices.Delete(d.queue, 0, n)
		d.mu.Unlock()
		err := d.db.Update(func(tx *bolt.Tx) error {
			for _, r := range group {
				if err := r.fn(tx); err != nil {
					return err
				}
			}
			return nil
		})
		if err == nil {
			for _, r := range group {
				r.done <- nil
			}
			continue
		}
		// One function failed and rolled the group back: run each alone,
		// so that only its caller sees its error.
		for _, r := range group {
			r.done <- d.db.Update(r.fn)
		}
	}
}

// OpenDemographics creates the bucket.
func OpenDemographics(db *bolt.DB, now func() time.Time) (*DemographicsStore, error) {
	if now == nil {
		now = time.Now
	}
	err := db.Update(func(tx *bolt.Tx) error {
		if _, err := tx.CreateBucketIfNotExists(bucketPatients); err != nil {
			return err
		}
		// A bootstrap a restart interrupted is discarded whole.
		if tx.Bucket(bucketPatStage) != nil {
			return tx.DeleteBucket(bucketPatStage)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("opening demographics: %w", err)
	}
	return &DemographicsStore{db: db, now: now, batchRows: 50000}, nil
}

// Patient implements Demographics.
func (d *DemographicsStore) Patient(_ context.Context, nhs string) (Patient, bool, error) {
	var p Patient
	var ok bool
	err := d.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketPatients).Get([]byte(nhs))
		if b == nil {
			return nil
		}
		ok = true
		return json.Unmarshal(b, &p)
	})
	if err != nil {
		return p, false, fmt.Errorf("reading demographics of %s: %w", nhs, err)
	}
	return p, ok, nil
}

// Put stores a patient's record whole.
func (d *DemographicsStore) Put(p Patient) error {
	if !fhir.ValidNHSNumber(p.NHSNumber) {
		return fmt.Errorf("demographics: %q is not an NHS number", p.NHSNumber)
	}
	if p.Updated.IsZero() {
		p.Updated = d.now().UTC()
	}
	b, _ := json.Marshal(p)
	return d.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketPatients).Put([]byte(p.NHSNumber), b) })
}

// Observe updates the store from one accepted event. PDS events are the
// record's own changes and overwrite what is known; other publishers'
// bundles only fill in what is not known yet, because subscriptions.md §4
// matches on PDS, not on message content. The event has no stream
// sequence: it is applied as the newest (ObserveSeq).
func (d *DemographicsStore) Observe(eventCode string, bundle *fhir.Node) error {
	return d.ObserveSeq(eventCode, bundle, 0)
}

// ObserveSeq is Observe for the event at stream sequence seq: an event
// older than the one that last set a group of fields does not overwrite
// it (observation.apply). A redelivered event can reach the store after
// newer ones of the same patient even on one node.
func (d *DemographicsStore) ObserveSeq(eventCode string, bundle *fhir.Node, seq uint64) error {
	obs := observePatients(eventCode, bundle)
	authoritative := isPDSEvent(eventCode)
	// Most events change nothing (a vaccination for a known patient): find
	// out under a read transaction, so they cost no write and no fsync.
	changed := false
	err := d.db.View(func(tx *bolt.Tx) error {
		for _, o := range obs {
			if o.nhs == "" {
				continue
			}
			_, ch, err := d.next(tx, o, authoritative, seq)
			if err != nil {
				return err
			}
			changed = changed || ch
		}
		return nil
	})
	if err != nil || !changed {
		return err
	}
	// A group commit, not one Update per event: the fan-out observes from
	// several workers at once, and one fsync per event capped it at a few
	// hundred events a second. The function re-reads under the write
	// transaction, so the re-run that commit may make of it is harmless.
	return d.commit(func(tx *bolt.Tx) error {
		for _, o := range obs {
			if o.nhs == "" {
				continue // nothing to key it by (a mother without a number)
			}
			p, ch, err := d.next(tx, o, authoritative, seq)
			if err != nil {
				return err
			}
			if !ch {
				continue
			}
			p.Updated = d.now().UTC()
			v, _ := json.Marshal(p)
			if err := tx.Bucket(bucketPatients).Put([]byte(o.nhs), v); err != nil {
				return err
			}
		}
		return nil
	})
}

// next is a patient's record after observation o, and whether it differs
// from the stored one (compared in its stored form, Updated aside).
func (d *DemographicsStore) next(tx *bolt.Tx, o observation, authoritative bool, seq uint64) (Patient, bool, error) {
	var p Patient
	v := tx.Bucket(bucketPatients).Get([]byte(o.nhs))
	if v != nil {
		if err := json.Unmarshal(v, &p); err != nil {
			return p, false, fmt.Errorf("demographics of %s: %w", o.nhs, err)
		}
	}
	p.NHSNumber = o.nhs
	o.apply(&p, authoritative, seq)
	now, _ := json.Marshal(p)
	return p, !bytes.Equal(now, v), nil
}

func isPDSEvent(code string) bool { return strings.HasPrefix(code, "pds-") }

const (
	systemNHSNumber     = "https://fhir.nhs.uk/Id/nhs-number"
	systemODS           = "https://fhir.nhs.uk/Id/ods-organization-code"
	urlDeathStatus      = "https://fhir.hl7.org.uk/STU3/StructureDefinition/Extension-CareConnect-DeathNotificationStatus-1"
	systemConfidential  = "http://hl7.org/fhir/v3/Confidentiality"
	eventChangeOfAddr   = "pds-change-of-address-1"
	eventChangeOfGP     = "pds-change-of-gp-1"
	eventRecordChange   = "pds-record-change-1"
	eventBirthNotifying = "pds-birth-notification-1"
)

// observation is what one Patient resource of a bundle says; the *Known
// flags tell "absent" from "says there is none".
type observation struct {
	nhs                string
	patient            *fhir.Node
	gp                 string
	gpKnown            bool // generalPractitioner present, or a change of GP without one (de-registration)
	postcode, previous string
	birthDate          string
	deathDate          string
	deceased           *bool // nil: not stated
	sensitive          *bool
}

// apply is p after this observation, from the event at stream sequence
// seq (0: not known, a direct Observe, applied as the newest).
//
// PDS events are authoritative: each group of fields they state is
// overwritten, and stamped with seq, unless p.Seq says a newer event set
// that group. Such an older event only fills what the newer one left
// unknown, and it never undoes what the newer one stated, "none" included
// (a de-registration, a removed death notification). So the fields end
// the same whichever order two nodes observe two events in: each group
// holds what the newest event stating it said.
//
// Other publishers only fill what is not known, and leave no stamp: in
// stream order a PDS statement would overwrite the fill anyway, so an
// older PDS event still may. The exception are the flags they can raise
// (deceased, sensitive): raising one is a statement newer than an older
// PDS event's "no", so it is stamped, and a raise older than the group's
// stamp is dropped, as a PDS "no" after it would have cleared it.
func (o observation) apply(p *Patient, authoritative bool, seq uint64) {
	// fresh: the observation may overwrite a group last set by event at.
	fresh := func(at uint64) bool { return seq == 0 || seq >= at }
	stamp := func(at *uint64) {
		if seq != 0 {
			*at = seq
		}
	}
	s := &p.Seq
	if o.gpKnown {
		switch {
		case authoritative && fresh(s.GP):
			p.GPPractice = o.gp
			reg := o.gp != ""
			p.Registered = &reg
			stamp(&s.GP)
		case p.Registered == nil:
			p.GPPractice = o.gp
			reg := o.gp != ""
			p.Registered = &reg
		}
	}
	if o.postcode != "" {
		switch {
		case authoritative && fresh(s.Address):
			if o.previous != "" {
				p.PreviousPostcode = o.previous // a change of address names it
			} else if p.Postcode != "" && p.Postcode != o.postcode {
				p.PreviousPostcode = p.Postcode
			}
			p.Postcode = o.postcode
			stamp(&s.Address)
		case p.Postcode == "":
			p.Postcode = o.postcode
			if o.previous != "" {
				p.PreviousPostcode = o.previous
			}
		case authoritative && p.PreviousPostcode == "" && o.postcode != p.Postcode:
			// An older event's home is one the patient has left.
			p.PreviousPostcode = o.postcode
		}
	}
	if o.birthDate != "" {
		switch {
		case authoritative && fresh(s.Birth):
			p.BirthDate = o.birthDate
			stamp(&s.Birth)
		case p.BirthDate == "":
			p.BirthDate = o.birthDate
		}
	}
	if o.deceased != nil && fresh(s.Death) {
		switch {
		case authoritative:
			p.Deceased, p.DeathDate = *o.deceased, o.deathDate
			stamp(&s.Death)
		case *o.deceased:
			if !p.Deceased {
				p.Deceased, p.DeathDate = true, o.deathDate
			}
			stamp(&s.Death)
		}
	}
	if o.sensitive != nil && fresh(s.Sensitive) && (authoritative || *o.sensitive) {
		p.Sensitive = *o.sensitive
		stamp(&s.Sensitive)
	}
}

// observePatients reads every Patient with an NHS number in the bundle.
func observePatients(eventCode string, bundle *fhir.Node) []observation {
	if bundle == nil {
		return nil
	}
	byURL := map[string]*fhir.Node{}
	var patients []*fhir.Node
	for _, e := range bundle.ChildrenNamed("entry") {
		r := e.Child("resource").Resource()
		if r == nil {
			continue
		}
		// Some published examples give fullUrl without the urn:uuid: their
		// references carry; index both spellings.
		byURL[strings.TrimPrefix(e.Str("fullUrl"), "urn:uuid:")] = r
		if id := r.Str("id"); id != "" {
			byURL[r.ResourceType+"/"+id] = r
		}
		if r.ResourceType == "Patient" {
			patients = append(patients, r)
		}
	}
	var out []observation
	for _, p := range patients {
		o := observation{patient: p}
		for _, id := range p.ChildrenNamed("identifier") {
			if id.Str("system") == systemNHSNumber && fhir.ValidNHSNumber(id.Str("value")) {
				o.nhs = id.Str("value")
				break
			}
		}
		for _, gp := range p.ChildrenNamed("generalPractitioner") {
			code := gp.Str("identifier", "value")
			if org := byURL[strings.TrimPrefix(gp.Str("reference"), "urn:uuid:")]; org != nil && org.ResourceType == "Organization" {
				for _, id := range org.ChildrenNamed("identifier") {
					if id.Str("system") == systemODS && id.Str("value") != "" {
						code = id.Str("value")
						break
					}
				}
			}
			if code != "" {
				o.gp, o.gpKnown = strings.ToUpper(code), true
				break
			}
		}
		if !o.gpKnown && eventCode == eventChangeOfGP {
			o.gpKnown = true // events.md §3.2: absent generalPractitioner = de-registration
		}
		for _, a := range p.ChildrenNamed("address") {
			pc, ok := NormalisePostcode(a.Str("postalCode"))
			if !ok {
				continue
			}
			switch a.Str("use") {
			case "home", "":
				if o.postcode == "" {
					o.postcode = pc
				}
			case "old":
				if o.previous == "" {
					o.previous = pc
				}
			}
		}
		if b := p.Str("birthDate"); len(b) >= 10 {
			o.birthDate = b[:10]
		}
		if dt := p.Str("deceasedDateTime"); dt != "" {
			t := true
			o.deceased = &t
			o.deathDate = dt[:min(10, len(dt))]
		} else if db := p.Child("deceasedBoolean"); db != nil {
			t := db.Value == "true"
			o.deceased = &t
		}
		if ext := p.Extension(urlDeathStatus); ext != nil {
			for _, c := range ext.ChildrenNamed("extension") {
				if c.Str("url") == "deathNotificationStatus" && c.Str("valueCodeableConcept", "coding", "code") == "U" {
					f := false // status U: the death notification was removed
					o.deceased, o.deathDate = &f, ""
				}
			}
		}
		for _, s := range p.ChildrenNamed("meta") {
			for _, sec := range s.ChildrenNamed("security") {
				if sec.Str("system") == systemConfidential && (sec.Str("code") == "R" || sec.Str("code") == "V") {
					t := true
					o.sensitive = &t
				}
			}
		}
		if o.sensitive == nil && eventCode == eventRecordChange {
			f := false // a record change carries the whole current record: no label, no flag
			o.sensitive = &f
		}
		out = append(out, o)
	}
	// Only patients with an NHS number can be stored; the enricher still
	// uses the others (a baby without one yet).
	return out
}

// eventPatient picks the Patient an event is about: the one with the
// routing NHS number; for a birth notification without the mother's number,
// the baby (events.md §3.2: the RelatedPerson's patient); else the first.
func eventPatient(eventCode, nhs string, obs []observation, bundle *fhir.Node) (observation, bool) {
	if nhs != "" {
		for _, o := range obs {
			if o.nhs == nhs {
				return o, true
			}
		}
	}
	if eventCode == eventBirthNotifying && nhs == "" && bundle != nil {
		var babyRef string
		byURL := map[string]*fhir.Node{}
		for _, e := range bundle.ChildrenNamed("entry") {
			r := e.Child("resource").Resource()
			if r == nil {
				continue
			}
			byURL[strings.TrimPrefix(e.Str("fullUrl"), "urn:uuid:")] = r
			byURL[r.ResourceType+"/"+r.Str("id")] = r
			if r.ResourceType == "RelatedPerson" && babyRef == "" {
				babyRef = strings.TrimPrefix(r.Str("patient", "reference"), "urn:uuid:")
			}
		}
		if baby := byURL[babyRef]; baby != nil {
			for _, o := range obs {
				if o.patient == baby {
					return o, true
				}
			}
		}
	}
	if len(obs) > 0 {
		return obs[0], true
	}
	return observation{}, false
}

// demographicsColumns are the bootstrap CSV's header names.
var demographicsColumns = []string{"nhs_number", "gp_practice", "registered", "postcode", "previous_postcode", "birth_date", "death_date", "sensitive"}

// ImportCSV bootstraps the store from a CSV with a header naming some of
// nhs_number (mandatory), gp_practice, registered (true/false), postcode,
// previous_postcode, birth_date, death_date (YYYY-MM-DD) and sensitive
// (true/false). The rows go to a staging bucket first and are merged only
// when the whole file has validated, so a bad row changes nothing. Rows
// replace the stored records of the same NHS number.
func (d *DemographicsStore) ImportCSV(ctx context.Context, r io.Reader, name string) (int64, error) {
	return d.importCSV(ctx, r, name, func(batch []kv) error {
		return d.db.Update(func(tx *bolt.Tx) error {
			dst := tx.Bucket(bucketPatients)
			for _, e := range batch {
				if err := dst.Put([]byte(e.k), e.v); err != nil {
					return err
				}
			}
			return nil
		})
	})
}

// importCSV validates and stages the whole file in bbolt, then hands the
// records to merge in batches: the bbolt store's own bucket, or the
// cluster's KV bucket.
func (d *DemographicsStore) importCSV(ctx context.Context, r io.Reader, name string, merge func([]kv) error) (int64, error) {
	cs := csv.NewReader(bufio.NewReaderSize(r, 1<<16))
	cs.ReuseRecord = true
	cs.FieldsPerRecord = -1
	fail := func(line, col int, colName string, err error) error {
		return &ImportError{File: name, Line: line, Column: col, ColumnName: colName, Err: err}
	}
	hdr, err := cs.Read()
	if err != nil {
		if err == io.EOF {
			err = errors.New("empty file: expected a header row")
		}
		return 0, fail(1, 0, "", err)
	}
	idx := map[string]int{}
	names := make([]string, len(hdr))
	for i, h := range hdr {
		h = strings.ToLower(strings.TrimSpace(strings.TrimPrefix(h, "\ufeff")))
		names[i] = h
		known := false
		for _, c := range demographicsColumns {
			known = known || c == h
		}
		if !known {
			return 0, fail(1, i+1, hdr[i], fmt.Errorf("unknown column; expected some of %s", strings.Join(demographicsColumns, ", ")))
		}
		if _, dup := idx[h]; dup {
			return 0, fail(1, i+1, hdr[i], errors.New("column given twice"))
		}
		idx[h] = i
	}
	if _, ok := idx["nhs_number"]; !ok {
		return 0, fail(1, 0, "", errors.New("header has no nhs_number column"))
	}
	if err := d.db.Update(func(tx *bolt.Tx) error {
		if tx.Bucket(bucketPatStage) != nil {
			return errors.New("a demographics import is already running")
		}
		_, err := tx.CreateBucket(bucketPatStage)
		return err
	}); err != nil {
		return 0, fmt.Errorf("starting demographics import: %w", err)
	}
	defer d.db.Update(func(tx *bolt.Tx) error { return tx.DeleteBucket(bucketPatStage) })
	var rows int64
	batch := make([]Patient, 0, d.batchRows)
	put := func(dst []byte) error {
		err := d.db.Update(func(tx *bolt.Tx) error {
			b := tx.Bucket(dst)
			for _, p := range batch {
				v, _ := json.Marshal(p)
				if err := b.Put([]byte(p.NHSNumber), v); err != nil {
					return err
				}
			}
			return nil
		})
		batch = batch[:0]
		return err
	}
	now := d.now().UTC()
	for {
		rec, err := cs.Read()
		if err == io.EOF {
			break
		}
		line, _ := cs.FieldPos(0)
		if err != nil {
			return 0, fail(line, 0, "", err)
		}
		if len(rec) != len(hdr) {
			return 0, fail(line, min(len(rec), len(hdr))+1, "", fmt.Errorf("row has %d fields, the header %d", len(rec), len(hdr)))
		}
		p, col, err := demographicsRow(rec, idx)
		if err != nil {
			return 0, fail(line, col+1, names[col], err)
		}
		p.Updated = now
		batch = append(batch, p)
		rows++
		if len(batch) == d.batchRows {
			if err := ctx.Err(); err != nil {
				return 0, err
			}
			if err := put(bucketPatStage); err != nil {
				return 0, fmt.Errorf("staging demographics: %w", err)
			}
		}
	}
	if err := put(bucketPatStage); err != nil {
		return 0, fmt.Errorf("staging demographics: %w", err)
	}
	// Merge in batches: each record is replaced whole, so a reader sees
	// either the old or the new record of a patient, never a mixture.
	var after []byte
	for {
		var out []kv
		err := d.db.View(func(tx *bolt.Tx) error {
			c := tx.Bucket(bucketPatStage).Cursor()
			k, v := c.First()
			if after != nil {
				if k, v = c.Seek(after); k != nil && string(k) == string(after) {
					k, v = c.Next()
				}
			}
			for ; k != nil && len(out) < d.batchRows; k, v = c.Next() {
				out = append(out, kv{string(k), bytes.Clone(v)})
			}
			return nil
		})
		if err == nil && len(out) > 0 {
			err = merge(out)
		}
		if err != nil {
			return 0, fmt.Errorf("merging demographics: %w", err)
		}
		if len(out) == 0 {
			break
		}
		after = []byte(out[len(out)-1].k)
	}
	return rows, nil
}

func demographicsRow(rec []string, idx map[string]int) (Patient, int, error) {
	var p Patient
	get := func(c string) (string, int) {
		i, ok := idx[c]
		if !ok {
			return "", -1
		}
		return strings.TrimSpace(rec[i]), i
	}
	boolean := func(c string) (*bool, int, error) {
		v, i := get(c)
		switch strings.ToLower(v) {
		case "":
			return nil, i, nil
		case "true", "y", "yes", "1":
			t := true
			return &t, i, nil
		case "false", "n", "no", "0":
			f := false
			return &f, i, nil
		}
		return nil, i, fmt.Errorf("%q is not true or false", v)
	}
	v, i := get("nhs_number")
	if prob := fhir.NHSNumberProblem(v); prob != "" {
		return p, i, fmt.Errorf("%q: %s", v, prob)
	}
	p.NHSNumber = v
	if v, i = get("gp_practice"); v != "" {
		if !isODS(strings.ToUpper(v)) {
			return p, i, fmt.Errorf("%q is not an ODS code", v)
		}
		p.GPPractice = strings.ToUpper(v)
		t := true
		p.Registered = &t
	}
	reg, i, err := boolean("registered")
	if err != nil {
		return p, i, err
	}
	if reg != nil {
		if *reg == false && p.GPPractice != "" {
			return p, i, errors.New("registered is false but gp_practice is set")
		}
		p.Registered = reg
	}
	for _, c := range []struct {
		col string
		dst *string
	}{{"postcode", &p.Postcode}, {"previous_postcode", &p.PreviousPostcode}} {
		if v, i := get(c.col); v != "" {
			k, ok := NormalisePostcode(v)
			if !ok {
				return p, i, fmt.Errorf("%q is not a postcode", v)
			}
			*c.dst = k
		}
	}
	for _, c := range []struct {
		col string
		dst *string
	}{{"birth_date", &p.BirthDate}, {"death_date", &p.DeathDate}} {
		if v, i := get(c.col); v != "" {
			if _, err := time.Parse("2006-01-02", v); err != nil {
				return p, i, fmt.Errorf("%q is not a date (YYYY-MM-DD)", v)
			}
			*c.dst = v
		}
	}
	p.Deceased = p.DeathDate != ""
	s, i, err := boolean("sensitive")
	if err != nil {
		return p, i, err
	}
	p.Sensitive = s != nil && *s
	return p, 0, nil
}
