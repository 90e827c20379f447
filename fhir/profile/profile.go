// Package profile validates FHIR STU3 resources against StructureDefinition
// snapshots: the base STU3 definition of each resource type, the CareConnect
// and EMS profiles an event requires, and any known profile a resource claims
// in meta.profile. It is generic: the rules are compiled from the
// definitions (see internal/compile), not written per resource, and a
// deployment or a test can add its own definitions with Extend.
//
// The compiled rules of the NHS definitions are embedded (rules.gob.gz,
// produced by go generate from the conformance folder listed in SOURCES.md);
// decoding them takes a few milliseconds at start-up.
package profile

//go:generate go run ./internal/gen -src ../../../shared/conformance -out rules.gob.gz

import (
	"bytes"
	_ "embed"
	"fmt"
	"sync"

	"github.com/ems-broker/ems/fhir"
	"github.com/ems-broker/ems/fhir/profile/internal/build"
	"github.com/ems-broker/ems/fhir/profile/internal/compile"
	"github.com/ems-broker/ems/fhir/profile/internal/invariant"
	"github.com/ems-broker/ems/fhir/profile/internal/load"
	"github.com/ems-broker/ems/fhir/profile/internal/rules"
)

//go:embed rules.gob.gz
var embedded []byte

// DefaultMaxIssues caps the issues of one validation when Options leave it
// zero: enough to fix a message, not enough to flood a response.
const DefaultMaxIssues = 100

// Resolver finds the resource a reference points at inside the message
// (the caller's fullUrl index), or returns nil.
type Resolver func(reference string) *fhir.Node

// Options configure a Validator.
type Options struct {
	// MaxIssues caps the issues returned by one call (DefaultMaxIssues when
	// zero). The last issue then says the list was cut.
	MaxIssues int
}

// Validator checks resources against compiled profiles. It is safe for
// concurrent use.
type Validator struct {
	set *rules.Set
	vs  map[string]*valueSet
	// profiles wraps set.Profiles with the element trees the walker uses
	// (compiled.go).
	profiles map[string]*profile
	// typeProfiles is profiles[set.Types[code]] resolved once: the
	// walker asks for it at every element, and hashing the two long
	// profile URLs was 4.5 % of emsd's CPU under ems-bench.
	typeProfiles map[string]*profile
	extensionURL string // set.Types["Extension"]
	slab         []elem // backs the profiles' elems (compiled.go)
	opts         Options
}

type valueSet struct {
	name      string
	codes     map[string]map[string]struct{}
	codeSets  []map[string]struct{} // the values of codes, to range without a map iterator
	systems   map[string]bool
	unchecked bool
}

var (
	loadOnce sync.Once
	loaded   *rules.Set
	loadErr  error
)

// embeddedSet decodes the embedded rules once per process.
func embeddedSet() (*rules.Set, error) {
	loadOnce.Do(func() { loaded, loadErr = decodeEmbedded() })
	return loaded, loadErr
}

func decodeEmbedded() (*rules.Set, error) {
	s, err := rules.Decode(bytes.NewReader(embedded))
	if err != nil {
		return nil, fmt.Errorf("loading embedded profile rules: %w", err)
	}
	return s, nil
}

// New returns a validator over the embedded NHS and STU3 rules.
func New(opts Options) (*Validator, error) {
	s, err := embeddedSet()
	if err != nil {
		return nil, err
	}
	return newValidator(s, opts), nil
}

func newValidator(s *rules.Set, opts Options) *Validator {
	if opts.MaxIssues <= 0 {
		opts.MaxIssues = DefaultMaxIssues
	}
	v := &Validator{set: s, vs: map[string]*valueSet{}, opts: opts, extensionURL: s.Types["Extension"]}
	for url, r := range s.ValueSets {
		vs := &valueSet{name: r.Name, codes: map[string]map[string]struct{}{}, systems: map[string]bool{}, unchecked: r.Unchecked}
		if vs.name == "" {
			vs.name = url
		}
		for sys, codes := range r.Codes {
			m := make(map[string]struct{}, len(codes))
			for _, c := range codes {
				m[c] = struct{}{}
			}
			vs.codes[sys] = m
			vs.codeSets = append(vs.codeSets, m)
		}
		for _, sys := range r.Systems {
			vs.systems[sys] = true
		}
		v.vs[url] = vs
	}
	v.compileProfiles()
	return v
}

// Extend compiles extra conformance resources (StructureDefinitions with
// snapshots, ValueSets, CodeSystems; XML or JSON) on top of the validator's
// rules and returns a new validator that knows them too. Types and value
// sets already known are reused, so a definition only needs what is new.
func (v *Validator) Extend(definitions ...[]byte) (*Validator, error) {
	var nodes []*fhir.Node
	var roots []string
	for i, d := range definitions {
		n, err := load.Bytes(d)
		if err != nil {
			return nil, fmt.Errorf("reading definition %d: %w", i, err)
		}
		nodes = append(nodes, n)
		if n.ResourceType == "StructureDefinition" {
			roots = append(roots, n.Str("url"))
		}
	}
	s, err := compile.Compile(nodes, compile.Options{
		Roots:     roots,
		Invariant: invariant.Supported,
		Unchecked: build.Unchecked,
		Base:      v.set,
	})
	if err != nil {
		return nil, fmt.Errorf("compiling definitions: %w", err)
	}
	return newValidator(s, v.opts), nil
}

// Known reports whether url names a profile the validator can check.
func (v *Validator) Known(url string) bool { return v.set.Profiles[url] != nil }
