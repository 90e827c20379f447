package subscription

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/ems-broker/ems/fhir/catalog"
	bolt "go.etcd.io/bbolt"
)

// EventFacts is what the matcher needs to know about one event. Delivery
// fills it from the event headers and the patient's demographics; the
// geography comes from reference data and is taken as given here.
type EventFacts struct {
	EventCode        string
	MessageEventType string
	// NHSNumber is the routing NHS number; "" (a birth notification with no
	// mother's number) means only generic subscriptions can match.
	NHSNumber string
	// BirthDate and EventDate give the whole-year age for Patient.age;
	// a zero EventDate means "now" (the matcher's clock).
	BirthDate, EventDate time.Time
	// GPPractice is the registered GP practice ODS code (GP_GP_GP) and
	// GPSubICB its parent sub-ICB (CHO_GP_CCG).
	GPPractice string
	GPSubICB   string
	// Registered says whether the patient has a registered GP; nil = unknown.
	Registered *bool
	// SubICB, LocalAuthority and Country are derived from the home postcode;
	// a change of address gives both the new and the previous value.
	SubICB, LocalAuthority, Country []string
	// Sensitive (PDS S or I flag): nothing is delivered.
	Sensitive bool
	// RefData names the reference-data versions the geography and GP
	// hierarchy came from ("nspl@3,subicb@1,epraccur@2"); generic matches
	// carry it in their explanation.
	RefData string
}

// Match is one subscription an event matched, and why.
type Match struct {
	SubscriptionID   string
	Kind             Kind
	RuleType         RuleType // generic only
	OrganisationCode string   // generic only: the code the rule matched
	RefData          string   // generic only: EventFacts.RefData
	Tag              string
	Owner            string
	ChannelType      string
	Endpoint         string
	Payload          string
}

// Lookup is one index probe for an event: explicit by NHS number, or
// generic by rule type and organisation code.
type Lookup struct {
	Kind         Kind
	NHSNumber    string
	Rule         RuleType
	Organisation string
}

// IndexReader yields the active subscriptions indexed under an event code
// and any of the lookups, with the facts needed to filter them. The entry
// is only valid during the call and must not be modified. The Store
// implements it with bbolt prefix scans, MemIndex with maps.
type IndexReader interface {
	Candidates(eventCode string, lookups []Lookup, fn func(id string, e *MatchEntry)) error
}

// MatchEntry is what a match index holds per subscription, so that
// filtering never reads the primary record.
type MatchEntry struct {
	Kind               Kind
	Rule               RuleType
	Organisation       string
	HasAgeLT, HasAgeGT bool
	AgeLT, AgeGT       int
	Registration       Registration
	End                time.Time
	Tag                string
	Owner              string
	ChannelType        string
	Endpoint           string
	Payload            string
}

func entryOf(sub *Subscription) MatchEntry {
	c := sub.Criteria
	return MatchEntry{Kind: c.Kind, Rule: c.Rule, Organisation: c.Organisation,
		HasAgeLT: c.HasAgeLT, HasAgeGT: c.HasAgeGT, AgeLT: c.AgeLT, AgeGT: c.AgeGT,
		Registration: c.Registration, End: indexEnd(sub.End), Tag: c.Tag, Owner: sub.Owner,
		ChannelType: sub.Channel.Type, Endpoint: sub.Channel.Endpoint, Payload: sub.Channel.Payload}
}

// Both indexes that hold an end (the match entry here, the expiry index in
// store.go) keep it as int64 Unix nanoseconds, which cover only
// 1677-09-21T00:12:43.145224192Z to 2262-04-11T23:47:16.854775807Z, while a
// client may send any future instant up to 9999. UnixNano of a time outside
// that range is undefined (it wraps: an end in 2263 read back as 1678, so
// the subscription never matched). The indexes therefore hold an end
// clamped to the range: every end inside it is encoded exactly as before
// (no format change), and one after 2262 acts as the last representable
// instant for matching and expiry. The record keeps the end as sent.
var (
	firstIndexEnd = time.Unix(0, math.MinInt64).UTC()
	lastIndexEnd  = time.Unix(0, math.MaxInt64).UTC()
)

// indexEnd is the end the indexes hold for end (the zero time, no end,
// stays zero).
func indexEnd(end time.Time) time.Time {
	switch {
	case end.IsZero():
		return end
	case end.Before(firstIndexEnd):
		return firstIndexEnd
	case end.After(lastIndexEnd):
		return lastIndexEnd
	}
	return end
}

// indexNanos is indexEnd as Unix nanoseconds, which cannot overflow.
func indexNanos(t time.Time) int64 {
	return indexEnd(t).UnixNano()
}

// matchEntryVersion is the first byte of a match index value.
const matchEntryVersion = 1

// encodeMatchEntry is a compact binary form: the matcher decodes one per
// candidate, so JSON would dominate the match cost.
func encodeMatchEntry(e MatchEntry) []byte {
	b := make([]byte, 0, 64)
	b = append(b, matchEntryVersion, byte(e.Kind), byte(e.Registration))
	flags := byte(0)
	if e.HasAgeLT {
		flags |= 1
	}
	if e.HasAgeGT {
		flags |= 2
	}
	b = append(b, flags)
	b = binary.AppendUvarint(b, uint64(e.AgeLT))
	b = binary.AppendUvarint(b, uint64(e.AgeGT))
	var end int64
	if !e.End.IsZero() {
		end = indexNanos(e.End)
	}
	b = binary.AppendVarint(b, end)
	for _, s := range []string{string(e.Rule), e.Organisation, e.Tag, e.Owner, e.ChannelType, e.Endpoint, e.Payload} {
		b = binary.AppendUvarint(b, uint64(len(s)))
		b = append(b, s...)
	}
	return b
}

var errBadEntry = errors.New("corrupt match index entry")

func decodeMatchEntry(b []byte) (MatchEntry, error) {
	var e MatchEntry
	if len(b) < 4 || b[0] != matchEntryVersion {
		return e, errBadEntry
	}
	e.Kind, e.Registration = Kind(b[1]), Registration(b[2])
	e.HasAgeLT, e.HasAgeGT = b[3]&1 != 0, b[3]&2 != 0
	b = b[4:]
	uv := func() uint64 {
		v, n := binary.Uvarint(b)
		if n <= 0 {
			b = nil
			return 0
		}
		b = b[n:]
		return v
	}
	e.AgeLT, e.AgeGT = int(uv()), int(uv())
	end, n := binary.Varint(b)
	if n <= 0 {
		return e, errBadEntry
	}
	b = b[n:]
	if end != 0 {
		e.End = time.Unix(0, end).UTC()
	}
	strs := make([]string, 7)
	for i := range strs {
		l := uv()
		if b == nil || uint64(len(b)) < l {
			return e, errBadEntry
		}
		strs[i], b = string(b[:l]), b[l:]
	}
	e.Rule, e.Organisation, e.Tag, e.Owner, e.ChannelType, e.Endpoint, e.Payload = RuleType(strs[0]), strs[1], strs[2], strs[3], strs[4], strs[5], strs[6]
	return e, nil
}

// Candidates implements IndexReader with one read transaction and one
// prefix scan per lookup: cost grows with the number of candidates, not
// with the number of stored subscriptions.
func (s *Store) Candidates(eventCode string, lookups []Lookup, fn func(id string, e *MatchEntry)) error {
	return s.db.View(func(tx *bolt.Tx) error {
		for _, l := range lookups {
			var prefix []byte
			var c *bolt.Cursor
			if l.Kind == Explicit {
				prefix, c = append(key(eventCode, l.NHSNumber), 0), tx.Bucket(bucketExplicit).Cursor()
			} else {
				prefix, c = append(key(eventCode, string(l.Rule), l.Organisation), 0), tx.Bucket(bucketGeneric).Cursor()
			}
			for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
				e, err := decodeMatchEntry(v)
				if err != nil {
					return fmt.Errorf("match index %q: %w", k, err)
				}
				fn(string(k[len(prefix):]), &e)
			}
		}
		return nil
	})
}

// MatcherOptions configure a Matcher.
type MatcherOptions struct {
	Index   IndexReader
	Catalog *catalog.Catalog
	Now     func() time.Time
}

// Matcher answers which active subscriptions an event matches.
type Matcher struct {
	index   IndexReader
	catalog *catalog.Catalog
	now     func() time.Time
}

// NewMatcher returns a matcher over the given index.
func NewMatcher(opts MatcherOptions) *Matcher {
	m := &Matcher{index: opts.Index, catalog: opts.Catalog, now: opts.Now}
	if m.now == nil {
		m.now = time.Now
	}
	return m
}

// Match returns the matching subscriptions, sorted by id, each once.
func (m *Matcher) Match(f EventFacts) ([]Match, error) {
	if m.catalog != nil {
		if ev, ok := m.catalog.Lookup(f.EventCode); !ok || ev.State == catalog.Withdrawn {
			return nil, nil
		}
	}
	return MatchFacts(f, m.index, m.now())
}

// Lookups lists the index probes an event needs (deduplicated).
func Lookups(f EventFacts) []Lookup {
	out := make([]Lookup, 0, 8)
	add := func(l Lookup) {
		for _, x := range out {
			if x == l {
				return
			}
		}
		out = append(out, l)
	}
	if f.NHSNumber != "" {
		add(Lookup{Kind: Explicit, NHSNumber: f.NHSNumber})
	}
	gen := func(r RuleType, codes ...string) {
		for _, c := range codes {
			if c != "" {
				add(Lookup{Kind: Generic, Rule: r, Organisation: c})
			}
		}
	}
	gen(RuleGPPractice, f.GPPractice)
	gen(RuleGPSubICB, f.GPSubICB)
	gen(RulePostcodeSubICB, f.SubICB...)
	gen(RulePostcodeLA, f.LocalAuthority...)
	gen(RuleCountry, f.Country...)
	return out
}

// MatchFacts is the pure matching function: candidates come from index
// lookups only, then the age, registration and end filters apply.
func MatchFacts(f EventFacts, idx IndexReader, now time.Time) ([]Match, error) {
	if f.Sensitive || f.EventCode == "" {
		return nil, nil
	}
	at := f.EventDate
	if at.IsZero() {
		at = now
	}
	out := make([]Match, 0, 8)
	err := idx.Candidates(f.EventCode, Lookups(f), func(id string, e *MatchEntry) {
		if !passes(e, f, at, now) {
			return
		}
		m := Match{SubscriptionID: id, Kind: e.Kind, Tag: e.Tag, Owner: e.Owner,
			ChannelType: e.ChannelType, Endpoint: e.Endpoint, Payload: e.Payload}
		if e.Kind == Generic {
			m.RuleType, m.OrganisationCode, m.RefData = e.Rule, e.Organisation, f.RefData
		}
		out = append(out, m)
	})
	if err != nil {
		return nil, fmt.Errorf("matching %s: %w", f.EventCode, err)
	}
	// One subscription is indexed once per event, and an event's lookups
	// are distinct, so a subscription can only come back twice if two
	// lookups are equal; still, sort and drop repeats so callers can rely
	// on "each once".
	slices.SortFunc(out, func(a, b Match) int { return strings.Compare(a.SubscriptionID, b.SubscriptionID) })
	out = slices.CompactFunc(out, func(a, b Match) bool { return a.SubscriptionID == b.SubscriptionID })
	return out, nil
}

func passes(e *MatchEntry, f EventFacts, at, now time.Time) bool {
	if !e.End.IsZero() && !now.Before(e.End) {
		return false
	}
	switch e.Registration {
	case RegisteredOnly:
		if f.Registered == nil || !*f.Registered {
			return false
		}
	case UnregisteredOnly:
		if f.Registered == nil || *f.Registered {
			return false
		}
	}
	if e.HasAgeLT || e.HasAgeGT {
		if f.BirthDate.IsZero() {
			return false // an age filter cannot be satisfied by an unknown age
		}
		age := AgeInYears(f.BirthDate, at)
		if e.HasAgeLT && !(age < e.AgeLT) || e.HasAgeGT && !(age > e.AgeGT) {
			return false
		}
	}
	return true
}

// AgeInYears is the whole-year age at instant at of someone born on birth
// (calendar dates; a 29 February birthday falls on 1 March in other years).
func AgeInYears(birth, at time.Time) int {
	by, bm, bd := birth.Date()
	ay, am, ad := at.Date()
	age := ay - by
	if am < bm || (am == bm && ad < bd) {
		age--
	}
	return age
}
