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
	v.validate(w, resource, at, profileURLs)
	return w.issues
}

func (v *Validator) walker(resolve Resolver) *walker {
	w := &walker{v: v}
	if resolve != nil {
		w.env.Resolve = resolve
	}
	return w
}

func (v *Validator) validate(w *walker, res *fhir.Node, path fhir.Path, profileURLs []string) {
	if path == "" {
		path = fhir.Path(res.ResourceType)
	}
	at := w.rootLoc(path)
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
	idx := newIndex(bundle)
	w := v.walker(idx.resolve)
	w.skipEntries = true
	var bundleProfiles []string
	if p := opts.Extra["Bundle"]; p != "" {
		bundleProfiles = append(bundleProfiles, p)
	}
	v.validate(w, bundle, "Bundle", bundleProfiles)
	event := opts.Event
	entries := bundle.ChildrenNamed("entry")
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
		var profiles []string
		if p := ProfileFor(event, r.ResourceType); p != "" {
			profiles = append(profiles, p)
		}
		if p := opts.Extra[r.ResourceType]; p != "" {
			profiles = append(profiles, p)
		}
		v.validate(w, r, fhir.Path("Bundle").Index("entry", i).Field("resource"), profiles)
	}
	return w.issues
}

// index resolves references inside a bundle by fullUrl, and relative
// "Type/id" references by resource type and id.
type index struct {
	byURL map[string]*fhir.Node
}

func newIndex(bundle *fhir.Node) *index {
	entries := bundle.ChildrenNamed("entry")
	x := &index{byURL: make(map[string]*fhir.Node, 3*len(entries))}
	for _, e := range entries {
		r := e.Child("resource").Resource()
		if r == nil {
			continue
		}
		if u := e.Str("fullUrl"); u != "" {
			x.byURL[u] = r
			if !strings.Contains(u, ":") {
				// A bare uuid fullUrl (a defect of official examples that
				// must not be rejected) still answers urn:uuid: references.
				x.byURL["urn:uuid:"+u] = r
			}
		}
		if id := r.Str("id"); id != "" {
			x.byURL[r.ResourceType+"/"+id] = r
		}
	}
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
