// Package broker accepts event messages: the $process-message endpoint, its
// content negotiation and size limits, the orchestration of validation, the
// mapping of every failure to an OperationOutcome, and the durable publish
// that a 202 promises. It knows nothing of subscriptions or delivery.
package broker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/ems-broker/ems/fhir"
	"github.com/ems-broker/ems/fhir/catalog"
)

// ProcessMessagePath is where publishers POST event messages.
const ProcessMessagePath = "/STU3/Events/1/$process-message"

// DefaultMaxBodyBytes is the NEMS limit of 3 MB per event message, read as
// MiB (publish.md §1).
const DefaultMaxBodyBytes = 3 << 20

// interactionPrefix starts the publish InteractionID
// urn:nhs:names:services:events:{PublishCode}.Write.
const interactionPrefix = "urn:nhs:names:services:events:"

// Caller is who published a message, as far as the identity layer knows.
type Caller struct {
	ASID string
	ODS  string
}

// Authorizer decides whether the caller of r may publish ev. It returns the
// caller's identity, or an issue (ASID_CHECK_FAILED, ACCESS_DENIED ...)
// refusing the request. Nil allows every caller and takes the ASID from the
// fromASID header.
type Authorizer interface {
	AuthorizePublish(r *http.Request, ev catalog.Event) (Caller, *fhir.Issue)
}

// Options configure a Handler.
type Options struct {
	// Publisher stores accepted events. Mandatory.
	Publisher Publisher
	// Catalog is the event-type table. Mandatory.
	Catalog *catalog.Catalog
	// Logger; zero value: slog.Default().
	Logger *slog.Logger
	// Registerer for metrics; nil: none registered.
	Registerer prometheus.Registerer
	// MaxBodyBytes; zero: DefaultMaxBodyBytes.
	MaxBodyBytes int64
	// AllowJSON accepts application/fhir+json bodies. NEMS takes XML only;
	// this service takes both unless configured otherwise.
	AllowJSON bool
	// CheckNHSNumber enforces the Modulus 11 check digit.
	CheckNHSNumber bool
	// Profiles adds profile validation; nil: generic rules only.
	Profiles ProfileValidator
	// Authorizer; nil: every caller may publish every enabled event.
	Authorizer Authorizer
	// MaxIssues caps the issues in one OperationOutcome; zero: 100.
	MaxIssues int
	// Limits bound the parser; zero value: fhir.DefaultLimits().
	Limits fhir.Limits
	// PublishTimeout bounds the wait for the store's acknowledgement;
	// zero: 10s.
	PublishTimeout time.Duration
	// MaxInFlight bounds the messages processed at once (zero: 64). A
	// request that finds no slot within QueueWait (zero: 1s) is answered
	// 429 with Retry-After before its body is read: under overload the
	// service sheds load with an answer the caller can retry, instead of
	// holding every request's body and parse tree in memory (one 60 s run
	// at twice the sustainable rate grew emsd to 1.6 GiB without it).
	MaxInFlight int
	QueueWait   time.Duration
	// Now; nil: time.Now.
	Now func() time.Time
}

// Handler serves $process-message.
type Handler struct {
	opts      Options
	slots     chan struct{}
	validator *Validator
	log       *slog.Logger
	metrics   *metrics
}

// NewHandler validates opts and returns the handler.
func NewHandler(opts Options) (*Handler, error) {
	if opts.Publisher == nil {
		return nil, errors.New("broker: Options.Publisher is mandatory")
	}
	if opts.Catalog == nil {
		return nil, errors.New("broker: Options.Catalog is mandatory")
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.MaxBodyBytes <= 0 {
		opts.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if opts.Limits == (fhir.Limits{}) {
		opts.Limits = fhir.DefaultLimits()
	}
	if opts.PublishTimeout <= 0 {
		opts.PublishTimeout = 10 * time.Second
	}
	if opts.MaxInFlight <= 0 {
		opts.MaxInFlight = 64
	}
	if opts.QueueWait <= 0 {
		opts.QueueWait = time.Second
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	m, err := newMetrics(opts.Registerer, opts.Catalog)
	if err != nil {
		return nil, err
	}
	return &Handler{
		opts:  opts,
		slots: make(chan struct{}, opts.MaxInFlight),
		validator: &Validator{
			Catalog:        opts.Catalog,
			CheckNHSNumber: opts.CheckNHSNumber,
			Profiles:       opts.Profiles,
			MaxIssues:      opts.MaxIssues,
		},
		log:     opts.Logger,
		metrics: m,
	}, nil
}

// ServeHTTP implements http.Handler.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := h.opts.Now()
	if !h.acquire(r.Context()) {
		o := single(fhir.TooManyRequests, "", "the service is at its limit of messages in progress; retry after 1s with the same MessageHeader.id")
		w.Header().Set("Retry-After", "1")
		writeOutcome(w, NegotiateResponse(r), o.HTTPStatus(), o)
		h.metrics.observe("", "throttled", h.opts.Now().Sub(start))
		return
	}
	defer func() { <-h.slots }()
	out := h.process(w, r)
	h.metrics.observe(out.event, out.outcome, h.opts.Now().Sub(start))
}

// acquire takes a processing slot, waiting up to QueueWait for one.
func (h *Handler) acquire(ctx context.Context) bool {
	select {
	case h.slots <- struct{}{}:
		return true
	default:
	}
	t := time.NewTimer(h.opts.QueueWait)
	defer t.Stop()
	select {
	case h.slots <- struct{}{}:
		return true
	case <-t.C:
		return false
	case <-ctx.Done():
		return false
	}
}

// result is what one request came to, for metrics and logs.
type result struct {
	event   string
	outcome string
}

func (h *Handler) process(w http.ResponseWriter, r *http.Request) result {
	respond := NegotiateResponse(r)
	fail := func(outcome string, o *fhir.Outcome) result {
		writeOutcome(w, respond, o.HTTPStatus(), o)
		return result{event: "", outcome: outcome}
	}
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		return fail("rejected", single(fhir.MethodNotAllowed, "", "$process-message accepts POST only, not "+r.Method))
	}
	format, ok := requestFormat(r.Header.Get("Content-Type"))
	if !ok || (format == fhir.FormatJSON && !h.opts.AllowJSON) {
		return fail("rejected", single(fhir.UnsupportedMediaType, "", fmt.Sprintf("Content-Type %q is not accepted; send application/fhir+xml%s", r.Header.Get("Content-Type"), map[bool]string{true: " or application/fhir+json"}[h.opts.AllowJSON])))
	}
	if r.ContentLength > h.opts.MaxBodyBytes {
		// Refuse before reading a byte: a 50 MB body must cost nothing.
		w.Header().Set("Connection", "close")
		return fail("rejected", single(fhir.PayloadTooLarge, "", fmt.Sprintf("the message is %d bytes; the limit is %d", r.ContentLength, h.opts.MaxBodyBytes)))
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, h.opts.MaxBodyBytes))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			w.Header().Set("Connection", "close")
			return fail("rejected", single(fhir.PayloadTooLarge, "", fmt.Sprintf("the message exceeds the limit of %d bytes", h.opts.MaxBodyBytes)))
		}
		return fail("rejected", single(fhir.BadRequest, "", "reading the request body: "+err.Error()))
	}

	root, issues := h.parse(body, format)
	if root == nil {
		return fail("rejected", &fhir.Outcome{Issues: issues})
	}
	msg, found := h.validator.Validate(root)
	issues = append(issues, found...)
	if msg.Event.Code != "" {
		issues = append(issues, h.checkInteraction(r, msg.Event)...)
	}
	outcome := &fhir.Outcome{Issues: issues}
	log := h.log.With("message_id", msg.ID, "event", msg.Event.Code)
	if outcome.Errors() {
		log.Info("message rejected", "status", outcome.HTTPStatus(), "issues", len(issues), "first", firstError(issues))
		writeOutcome(w, respond, outcome.HTTPStatus(), outcome)
		return result{event: msg.Event.Code, outcome: "rejected"}
	}

	caller := Caller{ASID: r.Header.Get("fromASID")}
	if h.opts.Authorizer != nil {
		var refused *fhir.Issue
		if caller, refused = h.opts.Authorizer.AuthorizePublish(r, msg.Event); refused != nil {
			o := &fhir.Outcome{Issues: []fhir.Issue{*refused}}
			log.Warn("publish refused", "asid", caller.ASID, "code", refused.Code)
			writeOutcome(w, respond, o.HTTPStatus(), o)
			return result{event: msg.Event.Code, outcome: "refused"}
		}
	}

	event := Event{
		Subject: fhir.EventSubject(msg.Event.Code, msg.NHSNumber),
		MsgID:   msg.ID,
		Header:  h.headers(msg, caller, format),
		Body:    body,
	}
	ctx, cancel := context.WithTimeout(r.Context(), h.opts.PublishTimeout)
	defer cancel()
	res, err := h.opts.Publisher.Publish(ctx, event)
	if err != nil {
		log.Error("storing message failed", "err", err)
		o := single(fhir.InternalServerError, "", "the message could not be stored; retry with the same MessageHeader.id")
		w.Header().Set("Retry-After", "1")
		writeOutcome(w, respond, o.HTTPStatus(), o)
		return result{event: msg.Event.Code, outcome: "error"}
	}
	// One line per accepted message: the warnings are counted and the
	// first named, since logging every one cost a few per cent of the
	// publish path (ems-bench profile) and repeats the same few defects.
	warnings, first := 0, ""
	for _, i := range issues {
		if i.Severity == fhir.SeverityWarning {
			if warnings == 0 {
				first = i.Expression + ": " + i.Diagnostics
			}
			warnings++
		}
	}
	if warnings > 0 {
		log.Info("message accepted", "seq", res.Sequence, "duplicate", res.Duplicate, "warnings", warnings, "first_warning", first)
	} else {
		log.Info("message accepted", "seq", res.Sequence, "duplicate", res.Duplicate)
	}
	w.Header().Set("X-Event-Message-Id", msg.ID)
	switch msg.Event.State {
	case catalog.Deprecated, catalog.NoLongerSupported:
		o := &fhir.Outcome{Issues: []fhir.Issue{{Severity: fhir.SeverityInformation, Code: fhir.Deprecated, Diagnostics: msg.Event.DeprecationText()}}}
		writeOutcome(w, respond, http.StatusAccepted, o)
	default:
		w.WriteHeader(http.StatusAccepted)
	}
	if res.Duplicate {
		return result{event: msg.Event.Code, outcome: "duplicate"}
	}
	return result{event: msg.Event.Code, outcome: "accepted"}
}

// parse decodes the body; XML also gets the element-order check. A nil root
// means the body could not be read as FHIR at all.
func (h *Handler) parse(body []byte, format fhir.Format) (*fhir.Node, []fhir.Issue) {
	root, err := fhir.Parse(body, format, h.opts.Limits)
	if err != nil {
		return nil, []fhir.Issue{decodeIssue(err)}
	}
	if format == fhir.FormatXML {
		return root, fhir.CheckElementOrder(root)
	}
	return root, nil
}

// decodeIssue turns a parser error into a MESSAGE_NOT_WELL_FORMED issue with
// the location the parser knows.
func decodeIssue(err error) fhir.Issue {
	is := fhir.Issue{Severity: fhir.SeverityError, Code: fhir.MessageNotWellFormed, Diagnostics: err.Error()}
	var de *fhir.DecodeError
	if errors.As(err, &de) {
		is.Expression = de.Path
	}
	return is
}

// checkInteraction compares a Spine InteractionID header, when sent, with the
// event in the bundle (publish.md §2: a mismatch is MISSING_OR_INVALID_HEADER).
func (h *Handler) checkInteraction(r *http.Request, ev catalog.Event) []fhir.Issue {
	got := r.Header.Get("InteractionID")
	if got == "" {
		return nil
	}
	want := interactionPrefix + ev.PublishCode + ".Write"
	// Spine-published PDS events have no PublishCode; the NEMS reference
	// implementation used the lower-case event code, which we accept for
	// every event.
	if (ev.PublishCode != "" && got == want) || got == interactionPrefix+ev.Code+".Write" {
		return nil
	}
	if ev.PublishCode == "" {
		want = interactionPrefix + ev.Code + ".Write"
	}
	return []fhir.Issue{{Severity: fhir.SeverityError, Code: fhir.MissingOrInvalidHeader, Expression: "InteractionID",
		Diagnostics: fmt.Sprintf("InteractionID %q does not match the event %s; expected %s", got, ev.Code, want)}}
}

func (h *Handler) headers(msg Message, caller Caller, format fhir.Format) nats.Header {
	hdr := nats.Header{}
	hdr.Set(fhir.HeaderEventCode, msg.Event.Code)
	hdr.Set(fhir.HeaderNHSNumber, msg.NHSNumber)
	hdr.Set(fhir.HeaderMessageEventType, msg.MessageEventType)
	hdr.Set(fhir.HeaderMessageID, msg.ID)
	hdr.Set(fhir.HeaderPublisherASID, caller.ASID)
	hdr.Set(fhir.HeaderPublisherODS, caller.ODS)
	hdr.Set(fhir.HeaderReceivedAt, h.opts.Now().UTC().Format(time.RFC3339Nano))
	hdr.Set(fhir.HeaderContentType, mediaType(format))
	return hdr
}

func single(code fhir.SpineCode, at, diagnostics string) *fhir.Outcome {
	o := &fhir.Outcome{}
	o.Error(code, at, diagnostics)
	return o
}

func firstError(issues []fhir.Issue) string {
	for _, i := range issues {
		if i.IsError() {
			return string(i.Code) + " at " + i.Expression + ": " + i.Diagnostics
		}
	}
	return ""
}

// requestFormat maps the Content-Type of a publish to a format; a missing
// Content-Type means XML (publish.md §2).
func requestFormat(contentType string) (fhir.Format, bool) {
	if strings.TrimSpace(contentType) == "" {
		return fhir.FormatXML, true
	}
	return fhir.FormatForContentType(contentType)
}

// NegotiateResponse picks the response format from _format, then Accept,
// defaulting to XML as NEMS does.
func NegotiateResponse(r *http.Request) fhir.Format {
	if f := r.URL.Query().Get("_format"); f != "" {
		if format, ok := fhir.FormatForParam(f); ok {
			return format
		}
	}
	for _, part := range strings.Split(r.Header.Get("Accept"), ",") {
		if format, ok := fhir.FormatForContentType(part); ok {
			return format
		}
	}
	return fhir.FormatXML
}

// writeOutcome writes an OperationOutcome in the negotiated format.
func writeOutcome(w http.ResponseWriter, format fhir.Format, status int, o *fhir.Outcome) {
	body, err := fhir.Marshal(o.Node(), format, false)
	if err != nil {
		http.Error(w, "internal error writing OperationOutcome", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", format.ContentType())
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

// mediaType names the format a message was published in, for the stored
// message's header (delivery converts JSON to XML for MESH).
func mediaType(f fhir.Format) string {
	if f == fhir.FormatJSON {
		return "application/fhir+json"
	}
	return "application/fhir+xml"
}
