package profile

import (
	"sort"
	"strings"
	"sync"

	"github.com/ems-broker/ems/fhir"
	"github.com/ems-broker/ems/fhir/profile/internal/rules"
)

// Validate checks resource (located at at, e.g. "Bundle.entry[2].resource")
// against the base STU3 definition of its type, the given profiles and every
// known profile it names in meta.profile. A meta.profile the validator does
// not know gives a warning, not an error. resolve, when not nil, finds
// references inside the message (see ValidateBundle); without it local
// references are not resolved.
func (v *Validator) Validate(resource *fhir.Node, at fhir.Path, resolve Resolver, profileURLs ...string) []fhir.Issue {
	w := v.walker(resolve)
	v.validate(w, resource, at, -1, profileURLs)
	return w.release()
}

// walkers keeps the walkers of finished calls, whose scratch stacks have
// grown to the size messages need.
var walkers sync.Pool

func (v *Validator) walker(resolve Resolver) *walker {
	w, _ := walkers.Get().(*walker)
	if w == nil {
		w = &walker{}
	}
	*w = walker{v: v, seen: w.seen, names: w.names[:0], steps: w.steps[:0], assign: w.assign[:0], counts: w.counts[:0]}
	clear(w.seen)
	if resolve != nil {
		w.env.Resolve = resolve
	}
	return w
}

// release returns the issues found and puts w back in the pool, holding
// nothing of the message.
func (w *walker) release() []fhir.Issue {
	issues := w.issues
	clear(w.steps[:cap(w.steps)])
	if len(w.seen) > 64 {
		w.seen = nil // keep the pool small after a message full of problems
	}
	*w = walker{seen: w.seen, names: w.names[:0], steps: w.steps[:0], assign: w.assign[:0], counts: w.counts[:0]}
	walkers.Put(w)
	return issues
}

// validate checks res at path, or, when entry is not negative, at
// Bundle.entry[entry].resource.
func (v *Validator) validate(w *walker, res *fhir.Node, path fhir.Path, entry int, profileURLs []string) {
	if path == "" {
		path = fhir.Path(res.ResourceType)
	}
	at := w.rootLoc(path)
	if entry >= 0 {
		at = w.field(w.index(at, "entry", entry), "resource")
	}
	w.env.Resource = res
	base := v.profiles[v.set.Types[res.ResourceType]]
	if base == nil || base.Kind != "resource" {
		w.prof = &rules.Profile{Name: "STU3"}
		w.unsupported(res.ResourceType, at)
		return
	}
	w.prof = base.Profile
	var buf [4]*profile
	profiles := append(buf[:0], base)
	addProfile := func(url string, l loc) {
		p := v.profiles[url]
		switch {
		case p == nil:
			w.add(fhir.SeverityWarning, fhir.InvalidResource, "not-supported", l, "unknown profile '"+url+"' not checked")
			return
		case p.Type != res.ResourceType:
			w.errorf("structure", l, "profile '"+url+"' constrains "+p.Type+", not "+res.ResourceType)
			return
		}
		for _, q := range profiles {
			if q == p {
				return
			}
		}
		profiles = append(profiles, p)
	}
	for _, u := range profileURLs {
		addProfile(u, at)
	}
	if meta := res.Child("meta"); meta != nil {
		i := 0
		lm := w.field(at, "meta")
		for _, c := range meta.Children {
			if c.Name == "profile" {
				l := w.index(lm, "profile", i)
				addProfile(c.Value, l)
				i++
			}
		}
	}
	// Profiles first, the base definition last: an issue both report is
	// kept once, attributed to the profile the publisher claimed.
	for _, p := range profiles[1:] {
		w.resource(res, at, p)
	}
	w.resource(res, at, base)
}

// BundleOptions say how a message bundle is checked.
type BundleOptions struct {
	// Event is the EventType-1 code of the message; when empty it is read
	// from MessageHeader.event. It selects the profile of each resource
	// type (EventProfiles).
	Event string
	// Extra adds a profile per resource type on top of the event's (a
	// deployment requiring, say, EMS-HealthcareService-1).
	Extra map[string]string
}

// ValidateBundle checks a message Bundle and every resource in it: the
// Bundle against its base definition, each entry's resource against the
// profile its event requires for its type (EventProfiles) plus the known
// profiles in its meta.profile. References between entries are resolved
// through the entries' fullUrls.
func (v *Validator) ValidateBundle(bundle *fhir.Node, opts BundleOptions) []fhir.Issue {
	entries := bundle.ChildrenNamed("entry")
	idx := newIndex(entries)
	w := v.walker(idx.resolve)
	w.skipEntries = true
	var bundleProfiles []string
	if p := opts.Extra["Bundle"]; p != "" {
		bundleProfiles = append(bundleProfiles, p)
	}
	v.validate(w, bundle, "Bundle", -1, bundleProfiles)
	event := opts.Event
	if event == "" {
		for _, e := range entries {
			if r := e.Child("resource").Resource(); r != nil && r.ResourceType == "MessageHeader" {
				event = r.Str("event", "code")
				break
			}
		}
	}
	for i, e := range entries {
		r := e.Child("resource").Resource()
		if r == nil || w.full {
			continue
		}
		var buf [2]string
		profiles := buf[:0]
		if p := ProfileFor(event, r.ResourceType); p != "" {
			profiles = append(profiles, p)
		}
		if p := opts.Extra[r.ResourceType]; p != "" {
			profiles = append(profiles, p)
		}
		v.validate(w, r, "Bundle", i, profiles)
	}
	return w.release()
}

// index resolves references inside a bundle by fullUrl, and relative
// "Type/id" references by resource type and id.
type index struct {
	byURL map[string]*fhir.Node
}

func newIndex(entries []*fhir.Node) *index {
	x := &index{byURL: make(map[string]*fhir.Node, 2*len(entries))}
	// each calls fn for every key in entry order: a fullUrl as it is, or a
	// key made up of a+b+c (urn:uuid:{u}, {Type}/{id}). The made-up keys
	// are cut from one string instead of being allocated one by one, and
	// the map is filled in entry order, so a later entry still wins a
	// clash.
	each := func(fn func(r *fhir.Node, made bool, a, b, c string)) {
		for _, e := range entries {
			r := e.Child("resource").Resource()
			if r == nil {
				continue
			}
			if u := e.Str("fullUrl"); u != "" {
				fn(r, false, u, "", "")
				if !strings.Contains(u, ":") {
					// A bare uuid fullUrl (a defect of official examples
					// that must not be rejected) still answers urn:uuid:
					// references.
					fn(r, true, "urn:uuid:", u, "")
				}
			}
			if id := r.Str("id"); id != "" {
				fn(r, true, r.ResourceType, "/", id)
			}
		}
	}
	size := 0
	each(func(_ *fhir.Node, made bool, a, b, c string) {
		if made {
			size += len(a) + len(b) + len(c)
		}
	})
	var sb strings.Builder
	sb.Grow(size)
	each(func(_ *fhir.Node, made bool, a, b, c string) {
		if made {
			sb.WriteString(a)
			sb.WriteString(b)
			sb.WriteString(c)
		}
	})
	keys := sb.String()
	each(func(r *fhir.Node, made bool, a, b, c string) {
		if !made {
			x.byURL[a] = r
			return
		}
		n := len(a) + len(b) + len(c)
		x.byURL[keys[:n]] = r
		keys = keys[n:]
	})
	return x
}

func (x *index) resolve(ref string) *fhir.Node {
	if r := x.byURL[ref]; r != nil {
		return r
	}
	// An absolute URL ending in Type/id resolves to the entry with that
	// type and id (FHIR's bundle resolution rule).
	if i := strings.LastIndexByte(ref, '/'); i > 0 {
		if j := strings.LastIndexByte(ref[:i], '/'); j >= 0 {
			return x.byURL[ref[j+1:]]
		}
	}
	return nil
}

var (
	defaultOnce sync.Once
	defaultV    *Validator
	defaultErr  error
)

// Default is the validator over the embedded rules with default options,
// created on first use.
func Default() (*Validator, error) {
	defaultOnce.Do(func() { defaultV, defaultErr = New(Options{}) })
	return defaultV, defaultErr
}

// ValidateBundle checks a message bundle with the Default validator; see
// (*Validator).ValidateBundle. The offline CLI and the publish path call it.
func ValidateBundle(bundle *fhir.Node, opts BundleOptions) []fhir.Issue {
	v, err := Default()
	if err != nil {
		return []fhir.Issue{{Severity: fhir.SeverityFatal, Code: fhir.InternalServerError, Diagnostics: err.Error()}}
	}
	return v.ValidateBundle(bundle, opts)
}

// Validate checks one resource with the Default validator; see
// (*Validator).Validate.
func Validate(resource *fhir.Node, at fhir.Path, resolve Resolver, profileURLs ...string) []fhir.Issue {
	v, err := Default()
	if err != nil {
		return []fhir.Issue{{Severity: fhir.SeverityFatal, Code: fhir.InternalServerError, Diagnostics: err.Error()}}
	}
	return v.Validate(resource, at, resolve, profileURLs...)
}

// unsupported reports a resource whose type has no compiled definition: a
// warning for a real STU3 type the rules leave out (it is not validated), an
// error for a name STU3 does not have.
func (w *walker) unsupported(typ string, at loc) {
	i := sort.SearchStrings(w.v.set.ResourceTypes, typ)
	if i < len(w.v.set.ResourceTypes) && w.v.set.ResourceTypes[i] == typ {
		w.add(fhir.SeverityWarning, fhir.InvalidResource, "not-supported", at, "resource type '"+typ+"' is not validated by this service")
		return
	}
	w.errorf("structure", at, "'"+typ+"' is not an STU3 resource type")
}
