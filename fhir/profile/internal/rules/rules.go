// Package rules is the compact, serialisable form a StructureDefinition
// snapshot is compiled into: one tree of Element rules per profile, plus the
// expanded value sets the bindings name. The compiler writes it, the
// validator only reads it; nothing here knows FHIR XML or JSON.
package rules

// Set is everything the validator needs: profiles (resource profiles,
// data types, extensions) by canonical URL and value sets by URL.
type Set struct {
	Profiles  map[string]*Profile
	ValueSets map[string]*ValueSet
	// Types maps a type code ("Identifier", "Patient") to the URL of its
	// base definition, so that an element whose snapshot does not unroll its
	// children can be checked against the type's own definition.
	Types map[string]string
	// ResourceTypes lists every resource type of the base specification,
	// compiled or not, so that a resource of a valid type the set does not
	// cover can be told from a misspelt one.
	ResourceTypes []string
	// Notes lists what the compiler accepted without a full rule: extensible
	// bindings whose value set cannot be expanded offline (they would only
	// warn) and optional slices without a discriminator value (published
	// defects). Anything that could forbid an instance fails compilation
	// instead of landing here.
	Notes []string
}

// Profile is one compiled StructureDefinition.
type Profile struct {
	URL  string
	Name string // used in diagnostics: "CareConnect-Patient-1"
	// Type is the constrained type: "Patient", "Extension", "Identifier".
	Type string
	// Kind is primitive-type, complex-type or resource.
	Kind string
	// Context lists where an extension may be used (contextType resource):
	// "Patient", "Patient.identifier", "Element".
	Context []string
	Root    *Element
}

// Unbounded is the Max of an element whose max is "*".
const Unbounded = -1

// Element is one element definition of a snapshot with its children. The
// tree follows element ids, so a slice owns the constraints written under
// it ("Patient.identifier:nhsNumber.system").
type Element struct {
	ID   string // element id, for diagnostics
	Name string // last path segment, "value[x]" for a (renamed) choice
	// Path is the element's path in its base resource or type
	// ("Patient.identifier"); extension contexts are matched against it.
	Path      string
	SliceName string
	Min       int
	Max       int // Unbounded for "*"
	// Repeats is true when the base definition allows more than one
	// (max "*" or > 1): such elements are arrays in JSON and indexed in
	// locations, even when a profile narrows them to 0..1.
	Repeats bool
	Types   []Type
	// ContentRef names (by element id, without "#") the element whose
	// children this element reuses (Questionnaire.item.item style).
	ContentRef string
	Fixed      *Fixed
	Slicing    *Slicing
	Slices     []*Element
	Children   []*Element
	Binding    *Binding
	// Invariants are the constraint keys that apply at this element; the
	// validator evaluates them natively (see package invariant).
	Invariants []Invariant
}

// Type is one allowed type of an element.
type Type struct {
	Code string
	// Profile is the type profile: the extension definition for an
	// Extension, SimpleQuantity for a Quantity.
	Profile string
	// TargetProfiles are the allowed targets of a Reference.
	TargetProfiles []string
}

// Fixed is a fixed primitive value: the element must carry exactly Value.
type Fixed struct {
	Type  string // "uri", "code", "string"
	Value string
}

// Slicing describes how repetitions of an element are split into slices.
type Slicing struct {
	// Discriminators are the paths of value discriminators, relative to
	// the sliced element ("system", "coding.system", "url").
	Discriminators []string
	Rules          string // open, closed, openAtEnd
	Ordered        bool
	// Values holds, per slice (same order as Element.Slices), the expected
	// value of each discriminator.
	Values [][]string
}

// Binding ties a coded element to a value set.
type Binding struct {
	Strength string // required, extensible, preferred, example
	ValueSet string
}

// Invariant is one constraint at an element.
type Invariant struct {
	Key      string
	Severity string
	Human    string
}

// ValueSet is an expanded value set.
type ValueSet struct {
	URL  string
	Name string
	// Codes holds the allowed codes per code system.
	Codes map[string][]string
	// Systems are code systems allowed as a whole because they cannot be
	// expanded offline (SNOMED CT filters, LOINC, UCUM): any code of these
	// systems is accepted.
	Systems []string
	// Unchecked is set for value sets that cannot be evaluated at all
	// (external, e.g. BCP-47 languages, MIME types).
	Unchecked bool
}
