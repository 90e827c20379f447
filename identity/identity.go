// Package identity tells who is calling the public FHIR API and whether
// they may do what they ask: Spine-style headers (fromASID, toASID,
// InteractionID), a JWT with the NEMS claims, an optional client
// certificate, and the registry of systems (ASID → organisation, grants,
// mailboxes). It implements broker.Authorizer and subscription.Identifier
// so that each surface asks one place, and it provides the hardening
// middleware and per-caller rate limits of the public listener.
package identity

import (
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/ems-broker/ems/fhir"
)

// Identifier systems of the system|value forms real clients send
// (clients.md).
const (
	ASIDSystem = "https://fhir.nhs.uk/Id/accredited-system"
	ODSSystem  = "https://fhir.nhs.uk/Id/ods-organization-code"
)

// Operation is what the request asks to do: the scopes and InteractionIDs
// that fit it.
type Operation struct {
	Name string // for logs: "publish", "subscription.create" ...
	// Scopes are the JWT scope values accepted.
	Scopes []string
	// Interactions are the InteractionID values accepted; empty: the
	// header is not checked (the broker checks publish itself).
	Interactions []string
}

// Caller is an authenticated caller.
type Caller struct {
	System System
	// User is requesting_user when the token names one.
	User string
	// Patient is requesting_patient when the token names one.
	Patient string
	// Token is the verified JWT; nil when none was sent (only possible
	// when identity is not required).
	Token *Token
	// Certificate tells the ASID came from (or was confirmed by) a client
	// certificate.
	Certificate bool
}

// Options configure an Authenticator.
type Options struct {
	// Registry of known systems. Mandatory (may be empty).
	Registry *Registry
	// Verifier checks JWTs; nil refuses every Authorization header when
	// identity is required, and ignores none: a token that is sent is
	// always checked.
	Verifier *Verifier
	// RequireIdentity makes fromASID, toASID, InteractionID and a JWT
	// mandatory on every call, as Spine does. Off, a call without a JWT is
	// identified by fromASID alone (development, or a deployment behind a
	// gateway that has authenticated the caller).
	RequireIdentity bool
	// ServiceASIDs are this service's own ASIDs: toASID must be one of
	// them when sent. Empty: toASID is not checked.
	ServiceASIDs []string
	// CertASIDs maps a client certificate's subject common name, a DNS or
	// URI SAN, or its full subject string to an ASID.
	CertASIDs map[string]string
	// RequireClientCert refuses requests without a mapped certificate.
	RequireClientCert bool
	// Limiter limits each caller's request rate; nil: unlimited.
	Limiter *Limiter
	// Logger for refusals; nil: slog.Default().
	Logger *slog.Logger
}

// Authenticator establishes callers. Safe for concurrent use.
type Authenticator struct {
	opts Options
}

// New checks opts and returns the authenticator.
func New(opts Options) (*Authenticator, error) {
	if opts.Registry == nil {
		return nil, errors.New("identity: Options.Registry is mandatory")
	}
	if opts.RequireIdentity && opts.Verifier == nil {
		return nil, errors.New("identity: identity is required but no JWT verifier is configured")
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	for name, asid := range opts.CertASIDs {
		if _, ok := opts.Registry.Lookup(asid); !ok {
			return nil, fmt.Errorf("identity: certificate %q maps to ASID %s, which is not registered", name, asid)
		}
	}
	return &Authenticator{opts: opts}, nil
}

// Registry returns the registry the authenticator uses.
func (a *Authenticator) Registry() *Registry { return a.opts.Registry }

// refused notes issue as the request's refusal, for the audit record.
func (a *Authenticator) refused(r *http.Request, issue *fhir.Issue) *fhir.Issue {
	if st := stateOf(r.Context()); st != nil {
		st.code, st.reason = string(issue.Code), issue.Diagnostics
	}
	return issue
}

// refusal is a failed check: its Spine code and what to tell the caller.
func refusal(code fhir.SpineCode, expr, format string, args ...any) *fhir.Issue {
	sev := fhir.SeverityError
	return &fhir.Issue{Severity: sev, Code: code, Expression: expr, Diagnostics: fmt.Sprintf(format, args...)}
}

// Authenticate establishes the caller of r for op. The order is transport
// to content: certificate, headers, registry, token, token against
// request, rate. Every refusal names the failing header or claim but never
// echoes the token.
func (a *Authenticator) Authenticate(r *http.Request, op Operation) (Caller, *fhir.Issue) {
	c, issue := a.authenticate(r, op)
	if st := stateOf(r.Context()); st != nil {
		st.caller, st.operation = c, op.Name
	}
	if issue != nil {
		a.opts.Logger.Warn("caller refused", "operation", op.Name, "asid", c.System.ASID, "ods", c.System.ODS,
			"code", string(issue.Code), "reason", issue.Diagnostics, "remote", r.RemoteAddr)
		return c, a.refused(r, issue)
	}
	if a.opts.Limiter != nil {
		if ok, wait := a.opts.Limiter.Allow("asid:" + c.System.ASID); !ok {
			setRetryAfter(r, wait)
			return c, a.refused(r, refusal(fhir.TooManyRequests, "", "ASID %s is over its request rate; retry after %s", c.System.ASID, wait.Round(time.Second)))
		}
	}
	return c, nil
}

func (a *Authenticator) authenticate(r *http.Request, op Operation) (Caller, *fhir.Issue) {
	certASID, issue := a.certificateASID(r)
	if issue != nil {
		return Caller{}, issue
	}

	from := r.Header.Get("fromASID")
	if from != "" && !asidRE.MatchString(from) {
		return Caller{}, refusal(fhir.MissingOrInvalidHeader, "fromASID", "fromASID is not an ASID (digits only)")
	}
	switch {
	case from == "" && certASID != "":
		from = certASID
	case from == "":
		return Caller{}, refusal(fhir.MissingOrInvalidHeader, "fromASID", "the fromASID header is required")
	case certASID != "" && from != certASID:
		return Caller{}, refusal(fhir.ASIDCheckFailed, "fromASID", "fromASID %s is not the ASID of the client certificate", from)
	}
	sys, known := a.opts.Registry.Lookup(from)
	if !known {
		return Caller{System: System{ASID: from}}, refusal(fhir.ASIDCheckFailed, "fromASID", "ASID %s is not registered with this service", from)
	}
	c := Caller{System: sys, Certificate: certASID != ""}

	if issue := a.checkHeaders(r, op); issue != nil {
		return c, issue
	}

	raw, present := bearer(r.Header.Get("Authorization"))
	if !present {
		if a.opts.RequireIdentity {
			return c, refusal(fhir.MissingOrInvalidHeader, "Authorization", "the Authorization header with a JWT is required")
		}
		return c, nil
	}
	if a.opts.Verifier == nil {
		return c, refusal(fhir.MissingOrInvalidHeader, "Authorization", "this service is not configured to verify JWTs")
	}
	tok, err := a.opts.Verifier.Verify(raw)
	if err != nil {
		return c, refusal(fhir.MissingOrInvalidHeader, "Authorization", "the JWT is not valid: %v", err)
	}
	c.Token = tok
	issue = a.checkClaims(&c, tok.Claims, op)
	return c, issue
}

// checkHeaders checks toASID and InteractionID: optional unless identity is
// required, always checked when sent.
func (a *Authenticator) checkHeaders(r *http.Request, op Operation) *fhir.Issue {
	to := r.Header.Get("toASID")
	switch {
	case to == "" && a.opts.RequireIdentity:
		return refusal(fhir.MissingOrInvalidHeader, "toASID", "the toASID header is required")
	case to != "" && !asidRE.MatchString(to):
		return refusal(fhir.MissingOrInvalidHeader, "toASID", "toASID is not an ASID (digits only)")
	case to != "" && len(a.opts.ServiceASIDs) > 0 && !slices.Contains(a.opts.ServiceASIDs, to):
		return refusal(fhir.ASIDCheckFailed, "toASID", "toASID %s is not this service", to)
	}
	iid := r.Header.Get("InteractionID")
	switch {
	case iid == "" && a.opts.RequireIdentity:
		return refusal(fhir.MissingOrInvalidHeader, "InteractionID", "the InteractionID header is required")
	case iid != "" && len(op.Interactions) > 0 && !slices.Contains(op.Interactions, iid):
		return refusal(fhir.MissingOrInvalidHeader, "InteractionID", "InteractionID %q does not fit this request (want %s)", iid, strings.Join(op.Interactions, " or "))
	}
	return nil
}

// checkClaims applies the NEMS claim rules (publish.md §2) and ties the
// token to the request.
func (a *Authenticator) checkClaims(c *Caller, claims Claims, op Operation) *fhir.Issue {
	str := func(name string) (string, *fhir.Issue) {
		if !claims.Has(name) {
			return "", nil
		}
		s, ok := claims.String(name)
		if !ok || s == "" {
			return "", refusal(fhir.MissingOrInvalidHeader, "Authorization", "JWT claim %s is not a non-empty string", name)
		}
		return s, nil
	}
	scope, issue := str("scope")
	if issue != nil {
		return issue
	}
	if !scopeAllowed(scope, op.Scopes) {
		return refusal(fhir.MissingOrInvalidHeader, "Authorization", "JWT scope %q does not allow this request (want %s)", scope, strings.Join(op.Scopes, " or "))
	}

	system, issue := str("requesting_system")
	if issue != nil {
		return issue
	}
	if system == "" {
		return refusal(fhir.MissingOrInvalidHeader, "Authorization", "JWT claim requesting_system is required")
	}
	asid, ok := identifierValue(system, ASIDSystem)
	if !ok {
		return refusal(fhir.MissingOrInvalidHeader, "Authorization", "JWT requesting_system %q is not an ASID", system)
	}
	if asid != c.System.ASID {
		return refusal(fhir.RequestUnmatched, "Authorization", "JWT requesting_system %s is not fromASID %s", asid, c.System.ASID)
	}

	orgUK, issue := str("requesting_organisation")
	if issue != nil {
		return issue
	}
	orgUS, issue := str("requesting_organization")
	if issue != nil {
		return issue
	}
	var orgs []string
	for _, raw := range []string{orgUK, orgUS} {
		if raw == "" {
			continue
		}
		ods, ok := identifierValue(raw, ODSSystem)
		if !ok {
			return refusal(fhir.MissingOrInvalidHeader, "Authorization", "JWT requesting organisation %q is not an ODS code", raw)
		}
		orgs = append(orgs, ods)
	}
	switch {
	case len(orgs) == 0:
		return refusal(fhir.MissingOrInvalidHeader, "Authorization", "JWT claim requesting_organisation (or requesting_organization) is required")
	case len(orgs) == 2 && orgs[0] != orgs[1]:
		return refusal(fhir.MissingOrInvalidHeader, "Authorization", "JWT requesting_organisation %s and requesting_organization %s disagree", orgs[0], orgs[1])
	case orgs[0] != c.System.ODS:
		return refusal(fhir.RequestUnmatched, "Authorization", "JWT requesting organisation %s is not the organisation of ASID %s", orgs[0], c.System.ASID)
	}

	user, issue := str("requesting_user")
	if issue != nil {
		return issue
	}
	sub, issue := str("sub")
	if issue != nil {
		return issue
	}
	if sub == "" {
		return refusal(fhir.MissingOrInvalidHeader, "Authorization", "JWT claim sub is required")
	}
	if user != "" {
		if sub != user {
			return refusal(fhir.MissingOrInvalidHeader, "Authorization", "JWT sub must equal requesting_user when that claim is present")
		}
		c.User = user
	} else if v, ok := identifierValue(sub, ASIDSystem); !ok || v != asid {
		return refusal(fhir.MissingOrInvalidHeader, "Authorization", "JWT sub must equal requesting_system when requesting_user is absent")
	}

	patient, issue := str("requesting_patient")
	if issue != nil {
		return issue
	}
	if patient != "" {
		nhs, _ := identifierValue(patient, fhir.NHSNumberSystem)
		if problem := fhir.NHSNumberProblem(nhs); problem != "" {
			return refusal(fhir.MissingOrInvalidHeader, "Authorization", "JWT requesting_patient is not a valid NHS number: %s", problem)
		}
		c.Patient = nhs
	}
	return nil
}

// scopeAllowed accepts a scope claim holding one of want, alone or among
// space-separated scopes (OAuth 2 form).
func scopeAllowed(scope string, want []string) bool {
	for _, s := range strings.Fields(scope) {
		if slices.Contains(want, s) {
			return true
		}
	}
	return false
}

// identifierValue reads a bare value or a system|value pair whose system
// is system. Any other system is refused: an ODS code is not an ASID.
func identifierValue(s, system string) (string, bool) {
	if sys, v, ok := strings.Cut(s, "|"); ok {
		if sys != system || v == "" || strings.Contains(v, "|") {
			return "", false
		}
		return v, true
	}
	return s, s != ""
}

// bearer extracts the token from an Authorization value: "Bearer <jwt>"
// (any case), or the bare JWT some older scripts send.
func bearer(h string) (string, bool) {
	h = strings.TrimSpace(h)
	if h == "" {
		return "", false
	}
	if scheme, rest, ok := strings.Cut(h, " "); ok && strings.EqualFold(scheme, "Bearer") {
		return strings.TrimSpace(rest), true
	}
	return h, true
}

// certificateASID maps the verified client certificate to an ASID. The TLS
// layer has already checked the chain against the configured CA.
func (a *Authenticator) certificateASID(r *http.Request) (string, *fhir.Issue) {
	var leaf *x509.Certificate
	if r.TLS != nil && len(r.TLS.VerifiedChains) > 0 && len(r.TLS.VerifiedChains[0]) > 0 {
		leaf = r.TLS.VerifiedChains[0][0]
	}
	if leaf == nil {
		if a.opts.RequireClientCert {
			return "", refusal(fhir.AccessDenied, "", "a client certificate from the configured CA is required")
		}
		return "", nil
	}
	for _, name := range CertificateNames(leaf) {
		if asid, ok := a.opts.CertASIDs[name]; ok {
			return asid, nil
		}
	}
	if a.opts.RequireClientCert {
		return "", refusal(fhir.ASIDCheckFailed, "", "the client certificate %q is not registered to an ASID", leaf.Subject.String())
	}
	return "", nil
}

// CertificateNames are the names a certificate can be registered under, in
// order of preference: URI SANs, DNS SANs, subject CN, full subject.
func CertificateNames(c *x509.Certificate) []string {
	var names []string
	for _, u := range c.URIs {
		names = append(names, u.String())
	}
	names = append(names, c.DNSNames...)
	if c.Subject.CommonName != "" {
		names = append(names, c.Subject.CommonName)
	}
	return append(names, c.Subject.String())
}
