package subscription

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/ems-broker/ems/fhir"
	"github.com/ems-broker/ems/fhir/catalog"
	"github.com/google/uuid"
	bolt "go.etcd.io/bbolt"
)

// PathPrefix is where the API is mounted.
const PathPrefix = "/STU3/Subscription"

// Options configure the subscription API.
type Options struct {
	// Store, or DB to build one in, holds the subscriptions.
	Store *Store
	DB    *bolt.DB
	// Catalog decides which event codes may be subscribed to.
	Catalog *catalog.Catalog
	// Identifier tells who is calling (required).
	Identifier Identifier
	// Mailboxes says who owns a MESH mailbox; when nil and Identifier
	// implements MailboxOwners, Identifier is used. With neither, mailbox
	// ownership is not checked.
	Mailboxes MailboxOwners
	Logger    *slog.Logger
	Now       func() time.Time
	Policy    Policy
	// BaseURL is the public base ("https://ems.example.org") used in
	// Location and fullUrl; empty means derive it from the request.
	BaseURL string
	// MaxBodyBytes bounds a request body (default 64 KiB: a subscription
	// is a few hundred bytes).
	MaxBodyBytes int64
}

// Handler serves /STU3/Subscription. Mount it on both the collection and
// the instance paths:
//
//	mux.Handle(subscription.PathPrefix, h)
//	mux.Handle(subscription.PathPrefix+"/", h)
type Handler struct {
	svc     *Service
	ident   Identifier
	base    string
	maxBody int64
	log     *slog.Logger
}

// NewHandler builds the API and the service behind it.
func NewHandler(opts Options) (*Handler, error) {
	if opts.Identifier == nil {
		return nil, errors.New("subscription handler: no Identifier")
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Catalog == nil {
		opts.Catalog = catalog.Default()
	}
	if opts.Store == nil {
		if opts.DB == nil {
			return nil, errors.New("subscription handler: neither Store nor DB given")
		}
		st, err := NewStore(StoreOptions{DB: opts.DB, Now: opts.Now})
		if err != nil {
			return nil, err
		}
		opts.Store = st
	}
	if opts.Mailboxes == nil {
		if mo, ok := opts.Identifier.(MailboxOwners); ok {
			opts.Mailboxes = mo
		}
	}
	if opts.MaxBodyBytes <= 0 {
		opts.MaxBodyBytes = 64 << 10
	}
	if opts.Policy.DuplicateStatus == 0 {
		opts.Policy.DuplicateStatus = http.StatusUnprocessableEntity
	}
	svc := &Service{store: opts.Store, catalog: opts.Catalog, mailboxes: opts.Mailboxes, policy: opts.Policy, now: opts.Now, log: opts.Logger}
	return &Handler{svc: svc, ident: opts.Identifier, base: strings.TrimSuffix(opts.BaseURL, "/"), maxBody: opts.MaxBodyBytes, log: opts.Logger}, nil
}

// Service returns the service for the admin API, the expiry sweep and the
// matcher.
func (h *Handler) Service() *Service { return h.svc }

// ServeHTTP implements http.Handler.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rest, ok := strings.CutPrefix(r.URL.Path, PathPrefix)
	if !ok || (rest != "" && rest[0] != '/') {
		http.NotFound(w, r)
		return
	}
	id := strings.Trim(rest, "/")
	rf := responseFormat(r, fhir.FormatUnknown)
	if strings.Contains(id, "/") {
		h.writeOutcome(w, rf, outcomeOf(fhir.NotImplemented, "", "only /STU3/Subscription and /STU3/Subscription/{id} are served"))
		return
	}
	var allow string
	switch {
	case id == "" && (r.Method == http.MethodGet || r.Method == http.MethodPost):
	case id != "" && (r.Method == http.MethodGet || r.Method == http.MethodPut || r.Method == http.MethodDelete):
	case id == "":
		allow = "GET, POST"
	default:
		allow = "GET, PUT, DELETE"
	}
	if allow != "" {
		w.Header().Set("Allow", allow)
		h.writeOutcome(w, rf, outcomeOf(fhir.MethodNotAllowed, "", r.Method+" is not allowed here; allowed: "+allow))
		return
	}
	caller, o := h.ident.Identify(r)
	if o != nil {
		h.writeOutcome(w, rf, o)
		return
	}
	switch {
	case r.Method == http.MethodPost:
		h.create(w, r, caller)
	case r.Method == http.MethodGet && id == "":
		h.search(w, r, caller)
	case r.Method == http.MethodGet:
		h.read(w, r, caller, id)
	case r.Method == http.MethodPut:
		h.update(w, r, caller, id)
	default:
		h.delete(w, r, caller, id)
	}
}

// responseFormat picks the answer's format: _format, then Accept, then the
// request body's format, then XML (the NEMS default).
func responseFormat(r *http.Request, body fhir.Format) fhir.Format {
	if v := r.URL.Query().Get("_format"); v != "" {
		if f, ok := fhir.FormatForParam(v); ok {
			return f
		}
	}
	for _, part := range strings.Split(r.Header.Get("Accept"), ",") {
		if f, ok := fhir.FormatForContentType(strings.TrimSpace(part)); ok {
			return f
		}
	}
	if body != fhir.FormatUnknown {
		return body
	}
	return fhir.FormatXML
}

// readBody reads and parses a Subscription body. Without a Content-Type
// the format is sniffed, as NHS subscriber scripts send none.
func (h *Handler) readBody(w http.ResponseWriter, r *http.Request) (*fhir.Node, fhir.Format, *fhir.Outcome) {
	data, err := io.ReadAll(http.MaxBytesReader(w, r.Body, h.maxBody))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return nil, fhir.FormatUnknown, outcomeOf(fhir.PayloadTooLarge, "", fmt.Sprintf("the body is larger than %d bytes", h.maxBody))
		}
		return nil, fhir.FormatUnknown, outcomeOf(fhir.BadRequest, "", "reading the body: "+err.Error())
	}
	var f fhir.Format
	if ct := r.Header.Get("Content-Type"); ct != "" {
		var ok bool
		if f, ok = fhir.FormatForContentType(ct); !ok {
			return nil, fhir.FormatUnknown, outcomeOf(fhir.UnsupportedMediaType, "", fmt.Sprintf("Content-Type %q is not FHIR XML or JSON", ct))
		}
	} else if f = fhir.Sniff(data); f == fhir.FormatUnknown {
		return nil, f, outcomeOf(fhir.MessageNotWellFormed, "", "the body is neither XML nor JSON (no Content-Type was sent)")
	}
	root, err := fhir.Parse(data, f, fhir.DefaultLimits())
	if err != nil {
		expr := ""
		var de *fhir.DecodeError
		if errors.As(err, &de) {
			expr = de.Path
		}
		return nil, f, outcomeOf(fhir.MessageNotWellFormed, expr, "the body is not well-formed FHIR "+strings.ToUpper(f.String())+": "+err.Error())
	}
	return root, f, nil
}

func (h *Handler) baseURL(r *http.Request) string {
	if h.base != "" {
		return h.base
	}
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	return scheme + "://" + r.Host
}

func (h *Handler) location(r *http.Request, id string) string {
	return h.baseURL(r) + PathPrefix + "/" + id
}

func setVersionHeaders(w http.ResponseWriter, sub *Subscription) {
	w.Header().Set("ETag", `W/"`+strconv.FormatUint(sub.VersionID, 10)+`"`)
	w.Header().Set("Last-Modified", sub.LastUpdated.UTC().Format(http.TimeFormat))
}

func (h *Handler) create(w http.ResponseWriter, r *http.Request, c Caller) {
	root, bf, o := h.readBody(w, r)
	rf := responseFormat(r, bf)
	if o != nil {
		h.writeOutcome(w, rf, o)
		return
	}
	sub, warnings, o := h.svc.Create(r.Context(), c, root)
	if o != nil {
		h.writeOutcome(w, rf, o)
		return
	}
	w.Header().Set("Location", h.location(r, sub.ID))
	setVersionHeaders(w, sub)
	if len(warnings) == 0 {
		w.WriteHeader(http.StatusCreated)
		return
	}
	h.writeResource(w, rf, http.StatusCreated, (&fhir.Outcome{Issues: warnings}).Node())
}

func (h *Handler) read(w http.ResponseWriter, r *http.Request, c Caller, id string) {
	rf := responseFormat(r, fhir.FormatUnknown)
	sub, o := h.svc.Get(r.Context(), c, id)
	if o != nil {
		h.writeOutcome(w, rf, o)
		return
	}
	// Subscriber IG asks for every read to be auditable (who, when, what).
	h.log.InfoContext(r.Context(), "subscription read", "id", id, "asid", c.ASID, "ods", c.ODS)
	setVersionHeaders(w, sub)
	h.writeResource(w, rf, http.StatusOK, toNode(sub))
}

// parseIfMatch accepts W/"3", "3" and 3.
func parseIfMatch(v string) (uint64, bool) {
	v = strings.TrimSpace(v)
	v = strings.TrimPrefix(v, "W/")
	v = strings.Trim(v, `"`)
	n, err := strconv.ParseUint(v, 10, 64)
	return n, err == nil && n > 0
}

func (h *Handler) update(w http.ResponseWriter, r *http.Request, c Caller, id string) {
	var ifVersion uint64
	if v := r.Header.Get("If-Match"); v != "" {
		n, ok := parseIfMatch(v)
		if !ok {
			h.writeOutcome(w, responseFormat(r, fhir.FormatUnknown), outcomeOf(fhir.PreconditionFailed, "", fmt.Sprintf("If-Match %q is not a version ETag such as W/\"1\"", v)))
			return
		}
		ifVersion = n
	} else if h.svc.policy.RequireIfMatch {
		h.writeOutcome(w, responseFormat(r, fhir.FormatUnknown), outcomeOf(fhir.PreconditionFailed, "", "an update needs If-Match with the version being replaced"))
		return
	}
	root, bf, o := h.readBody(w, r)
	rf := responseFormat(r, bf)
	if o != nil {
		h.writeOutcome(w, rf, o)
		return
	}
	sub, _, o := h.svc.Update(r.Context(), c, id, ifVersion, root)
	if o != nil {
		h.writeOutcome(w, rf, o)
		return
	}
	setVersionHeaders(w, sub)
	h.writeResource(w, rf, http.StatusOK, toNode(sub))
}

func (h *Handler) delete(w http.ResponseWriter, r *http.Request, c Caller, id string) {
	if o := h.svc.Delete(r.Context(), c, id); o != nil {
		h.writeOutcome(w, responseFormat(r, fhir.FormatUnknown), o)
		return
	}
	w.WriteHeader(http.StatusOK)
}

// Search paging bounds.
const (
	defaultCount = 50
	maxCount     = 500
)

// search answers GET /STU3/Subscription?… with a searchset Bundle of the
// caller's own subscriptions (an extension beyond NEMS).
func (h *Handler) search(w http.ResponseWriter, r *http.Request, c Caller) {
	rf := responseFormat(r, fhir.FormatUnknown)
	q := Query{Owner: c.ODS, Limit: defaultCount}
	foreign := false
	fail := func(param, msg string) {
		h.writeOutcome(w, rf, outcomeOf(fhir.InvalidParameter, "", "search parameter "+param+": "+msg))
	}
	params := r.URL.Query()
	for name, vals := range params {
		if len(vals) != 1 {
			fail(name, "may be given only once")
			return
		}
		v := vals[0]
		switch name {
		case "_format":
		case "status":
			if !Status(v).Valid() {
				fail(name, fmt.Sprintf("%q is not requested, active, error or off", v))
				return
			}
			q.Status = Status(v)
		case "contact":
			ods := strings.TrimPrefix(v, odsURLPrefix)
			if ods != c.ODS {
				foreign = true // only ever the caller's own: an empty result
			}
		case "channel.endpoint", "url":
			q.Endpoint = v
		case "event":
			q.Event = v
		case "nhs-number", "Patient.identifier":
			if _, n, ok := strings.Cut(v, "|"); ok {
				v = n
			}
			if !fhir.ValidNHSNumber(v) {
				h.writeOutcome(w, rf, outcomeOf(fhir.InvalidNHSNumber, "", "search parameter "+name+": "+v+" "+fhir.NHSNumberProblem(v)))
				return
			}
			q.NHSNumber = v
		case "subscriptionRuleType", "rule-type":
			if !validRule(RuleType(v)) {
				fail(name, fmt.Sprintf("%q is not a rule type", v))
				return
			}
			q.Rule = RuleType(v)
		case "kind":
			switch v {
			case "explicit":
				q.Kind = Explicit
			case "generic":
				q.Kind = Generic
			default:
				fail(name, "must be explicit or generic")
				return
			}
		case "_count":
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 || n > maxCount {
				fail(name, fmt.Sprintf("must be 1 to %d", maxCount))
				return
			}
			q.Limit = n
		case "_after":
			q.After = v
		default:
			fail(name, "is not supported (status, contact, channel.endpoint, url, event, nhs-number, subscriptionRuleType, kind, _count, _after, _format)")
			return
		}
	}
	var subs []*Subscription
	var more bool
	total := 0
	if !foreign {
		var err error
		subs, more, err = h.svc.store.List(q)
		if err == nil {
			all := q
			all.After, all.Limit = "", 0
			var every []*Subscription
			every, _, err = h.svc.store.List(all)
			total = len(every)
		}
		if err != nil {
			h.writeOutcome(w, rf, h.svc.storeFailure(r.Context(), "searching subscriptions", err))
			return
		}
	}
	self := h.baseURL(r) + PathPrefix
	if r.URL.RawQuery != "" {
		self += "?" + r.URL.RawQuery
	}
	b := &fhir.Node{Name: "Bundle", ResourceType: "Bundle"}
	b.Children = append(b.Children,
		fhir.Prim("id", uuid.NewString()),
		&fhir.Node{Name: "meta", Children: []*fhir.Node{fhir.Prim("lastUpdated", h.svc.now().UTC().Format("2006-01-02T15:04:05.000Z07:00"))}},
		fhir.Prim("type", "searchset"),
		fhir.Prim("total", strconv.Itoa(total)),
		&fhir.Node{Name: "link", Children: []*fhir.Node{fhir.Prim("relation", "self"), fhir.Prim("url", self)}},
	)
	if more && len(subs) > 0 {
		next := url.Values{}
		for k, v := range params {
			next[k] = v
		}
		next.Set("_after", subs[len(subs)-1].ID)
		b.Children = append(b.Children, &fhir.Node{Name: "link", Children: []*fhir.Node{fhir.Prim("relation", "next"), fhir.Prim("url", h.baseURL(r)+PathPrefix+"?"+next.Encode())}})
	}
	for _, sub := range subs {
		b.Children = append(b.Children, &fhir.Node{Name: "entry", Children: []*fhir.Node{
			fhir.Prim("fullUrl", h.location(r, sub.ID)),
			{Name: "resource", Children: []*fhir.Node{toNode(sub)}},
			{Name: "search", Children: []*fhir.Node{fhir.Prim("mode", "match")}},
		}})
	}
	h.writeResource(w, rf, http.StatusOK, b)
}

func (h *Handler) writeOutcome(w http.ResponseWriter, f fhir.Format, o *fhir.Outcome) {
	status := o.HTTPStatus()
	if len(o.Issues) > 0 && o.Issues[0].Code == fhir.DuplicateRejected {
		status = h.svc.policy.DuplicateStatus
	}
	h.writeResource(w, f, status, o.Node())
}

func (h *Handler) writeResource(w http.ResponseWriter, f fhir.Format, status int, n *fhir.Node) {
	body, err := fhir.Marshal(n, f, false)
	if err != nil {
		h.log.Error("encoding response", "err", err)
		w.WriteHeader(http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", f.ContentType())
	w.WriteHeader(status)
	_, _ = w.Write(body)
}
