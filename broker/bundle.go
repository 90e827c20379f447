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
	// byURL maps every form a reference to an entry may take: its fullUrl,
	// the bare uuid of a urn:uuid: fullUrl (and the urn:uuid: form of a bare
	// uuid fullUrl, which two official PDS examples use), and
	// "Type/id".
	byURL map[string]*entry
}

type entry struct {
	index    int
	fullURL  string
	resource *fhir.Node // nil when the entry has none
	at       fhir.Path  // Bundle.entry[i].resource
}

func indexBundle(root *fhir.Node) *bundle {
	b := &bundle{root: root, byURL: map[string]*entry{}}
	for i, e := range root.ChildrenNamed("entry") {
		b.entries = append(b.entries, entry{
			index:    i,
			fullURL:  e.Str("fullUrl"),
			resource: e.Child("resource").Resource(),
			at:       fhir.Path("Bundle").Index("entry", i).Field("resource"),
		})
	}
	for i := range b.entries {
		e := &b.entries[i]
		add := func(k string) {
			if _, dup := b.byURL[k]; k != "" && !dup {
				b.byURL[k] = e
			}
		}
		add(e.fullURL)
		if uuid, ok := strings.CutPrefix(e.fullURL, "urn:uuid:"); ok {
			add(uuid)
		} else if looksLikeUUID(e.fullURL) {
			add("urn:uuid:" + e.fullURL)
		}
		if e.resource != nil {
			if id := e.resource.Str("id"); id != "" {
				add(e.resource.ResourceType + "/" + id)
			}
		}
	}
	return b
}

// resolve finds the entry a reference points at inside the bundle.
func (b *bundle) resolve(ref string) *entry {
	if e, ok := b.byURL[ref]; ok {
		return e
	}
	// An absolute RESTful URL ending in Type/id resolves to the entry with
	// that type and id (FHIR bundle resolution rules, §2.36.4.1).
	if i := strings.LastIndex(ref, "/"); i > 0 {
		if j := strings.LastIndex(ref[:i], "/"); j >= 0 {
			if e, ok := b.byURL[ref[j+1:]]; ok {
				return e
			}
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
