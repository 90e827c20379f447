package broker

import (
	"strings"

	"github.com/ems-broker/ems/fhir"
)

// bundle indexes a message Bundle's entries so that references can be
// resolved without rescanning the entry list for every one of them.
type bundle struct {
	root    *fhir.Node
	entries []entry
	// byURL maps each entry's fullUrl, without a urn:uuid: prefix, so that
	// "urn:uuid:X" finds an entry whose fullUrl is a bare X (two official
	// PDS examples) and the reverse.
	byURL map[string]*entry
}

type entry struct {
	index    int
	fullURL  string
	resource *fhir.Node // nil when the entry has none
	at       fhir.Path  // Bundle.entry[i].resource
}

func indexBundle(root *fhir.Node) *bundle {
	b := &bundle{root: root}
	for _, e := range root.Children {
		if e.Name != "entry" {
			continue
		}
		n := len(b.entries)
		b.entries = append(b.entries, entry{
			index:    n,
			fullURL:  e.Str("fullUrl"),
			resource: e.Child("resource").Resource(),
		})
	}
	b.byURL = make(map[string]*entry, len(b.entries))
	for i := range b.entries {
		e := &b.entries[i]
		e.at = fhir.Path("Bundle").Index("entry", e.index).Field("resource")
		k := strings.TrimPrefix(e.fullURL, "urn:uuid:")
		if _, dup := b.byURL[k]; k != "" && !dup {
			b.byURL[k] = e
		}
	}
	return b
}

// resolve finds the entry a reference points at inside the bundle: by
// fullUrl, or by "Type/id" (relative, or the tail of an absolute RESTful
// URL), following the FHIR bundle resolution rules.
func (b *bundle) resolve(ref string) *entry {
	if ref == "" {
		return nil
	}
	if e, ok := b.byURL[strings.TrimPrefix(ref, "urn:uuid:")]; ok {
		return e
	}
	slash := strings.LastIndexByte(ref, '/')
	if slash <= 0 {
		return nil
	}
	id := ref[slash+1:]
	typ := ref[strings.LastIndexByte(ref[:slash], '/')+1 : slash]
	for i := range b.entries {
		r := b.entries[i].resource
		if r != nil && r.ResourceType == typ && r.Str("id") == id {
			return &b.entries[i]
		}
	}
	return nil
}

// resourcesOfType returns the entries holding a resource of the given type.
func (b *bundle) resourcesOfType(t string) []*entry {
	var out []*entry
	for i := range b.entries {
		if r := b.entries[i].resource; r != nil && r.ResourceType == t {
			out = append(out, &b.entries[i])
		}
	}
	return out
}

// looksLikeUUID reports whether s has the 8-4-4-4-12 hex form.
func looksLikeUUID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i := 0; i < 36; i++ {
		c := s[i]
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return false
			}
		default:
			if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F') {
				return false
			}
		}
	}
	return true
}
