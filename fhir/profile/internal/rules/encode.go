package rules

import (
	"bytes"
	"compress/gzip"
	"encoding/gob"
	"fmt"
	"io"
	"sort"
)

// file is the serialised form of a Set: maps become sorted slices, so that
// the same definitions always produce the same bytes (gob writes maps in
// random order, which would make every go generate a spurious diff).
type file struct {
	Profiles      []*Profile
	ValueSets     []*ValueSet
	Types         [][2]string
	ResourceTypes []string
	Notes         []string
}

// Encode writes s as gzip-compressed gob.
func Encode(s *Set) ([]byte, error) {
	f := file{ResourceTypes: s.ResourceTypes, Notes: s.Notes}
	for _, p := range s.Profiles {
		f.Profiles = append(f.Profiles, p)
	}
	sort.Slice(f.Profiles, func(i, j int) bool { return f.Profiles[i].URL < f.Profiles[j].URL })
	for _, vs := range s.ValueSets {
		f.ValueSets = append(f.ValueSets, vs)
	}
	sort.Slice(f.ValueSets, func(i, j int) bool { return f.ValueSets[i].URL < f.ValueSets[j].URL })
	for k, v := range s.Types {
		f.Types = append(f.Types, [2]string{k, v})
	}
	sort.Slice(f.Types, func(i, j int) bool { return f.Types[i][0] < f.Types[j][0] })
	// Value sets go first, one by one, with their code maps as sorted pairs.
	var buf bytes.Buffer
	zw, err := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	if err != nil {
		return nil, err
	}
	enc := gob.NewEncoder(zw)
	if err := enc.Encode(len(f.ValueSets)); err != nil {
		return nil, err
	}
	for _, vs := range f.ValueSets {
		if err := enc.Encode(stableValueSet(vs)); err != nil {
			return nil, fmt.Errorf("encoding value set %s: %w", vs.URL, err)
		}
	}
	f.ValueSets = nil
	if err := enc.Encode(&f); err != nil {
		return nil, fmt.Errorf("encoding rules: %w", err)
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// valueSetFile is a ValueSet with its code map as sorted pairs.
type valueSetFile struct {
	URL, Name string
	Systems   []string
	Codes     []systemCodes
	Unchecked bool
}

type systemCodes struct {
	System string
	Codes  []string
}

func stableValueSet(vs *ValueSet) valueSetFile {
	out := valueSetFile{URL: vs.URL, Name: vs.Name, Systems: vs.Systems, Unchecked: vs.Unchecked}
	for sys, codes := range vs.Codes {
		out.Codes = append(out.Codes, systemCodes{sys, codes})
	}
	sort.Slice(out.Codes, func(i, j int) bool { return out.Codes[i].System < out.Codes[j].System })
	return out
}

// Decode reads what Encode wrote.
func Decode(r io.Reader) (*Set, error) {
	zr, err := gzip.NewReader(r)
	if err != nil {
		return nil, fmt.Errorf("opening rules: %w", err)
	}
	dec := gob.NewDecoder(zr)
	var n int
	if err := dec.Decode(&n); err != nil {
		return nil, fmt.Errorf("decoding rules: %w", err)
	}
	s := &Set{Profiles: map[string]*Profile{}, ValueSets: make(map[string]*ValueSet, n), Types: map[string]string{}}
	for i := 0; i < n; i++ {
		var vf valueSetFile
		if err := dec.Decode(&vf); err != nil {
			return nil, fmt.Errorf("decoding value set %d: %w", i, err)
		}
		vs := &ValueSet{URL: vf.URL, Name: vf.Name, Systems: vf.Systems, Unchecked: vf.Unchecked, Codes: make(map[string][]string, len(vf.Codes))}
		for _, sc := range vf.Codes {
			vs.Codes[sc.System] = sc.Codes
		}
		s.ValueSets[vs.URL] = vs
	}
	var f file
	if err := dec.Decode(&f); err != nil {
		return nil, fmt.Errorf("decoding rules: %w", err)
	}
	for _, p := range f.Profiles {
		s.Profiles[p.URL] = p
	}
	for _, t := range f.Types {
		s.Types[t[0]] = t[1]
	}
	s.ResourceTypes, s.Notes = f.ResourceTypes, f.Notes
	return s, nil
}
