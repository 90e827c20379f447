package identity

import (
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/ems-broker/ems/broker"
	"github.com/ems-broker/ems/fhir"
)

// DefaultMaxBodyBytes is the global request body cap: above the largest
// route limit (publish, 3 MiB), so each route's own limit still answers
// with its own message, but low enough that no route can be made to read
// 50 MB.
const DefaultMaxBodyBytes = 4 << 20

// HardenOptions configure Harden.
type HardenOptions struct {
	// MaxBodyBytes caps every request body; zero: DefaultMaxBodyBytes.
	MaxBodyBytes int64
	// PerClient limits requests per remote IP address before any parsing
	// (a caller's verified ASID is limited by the Authenticator); nil:
	// unlimited.
	PerClient *Limiter
	// Logger for refusals; nil: slog.Default().
	Logger *slog.Logger
	// Audit receives a record of every refused request and every
	// successful state change (any method but GET and HEAD); nil: none.
	// It is called on the request's goroutine after the response: it
	// must not block (see AuditQueue).
	Audit func(AuditRecord)
}

// Harden wraps the public API: it refuses, before any handler parses
// anything, request lines and headers that are not valid UTF-8 or carry
// control characters, bodies over the cap, and clients over their rate;
// and it lets the Authenticator set Retry-After on the response.
func Harden(next http.Handler, opts HardenOptions) http.Handler {
	if opts.MaxBodyBytes <= 0 {
		opts.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		refuse := func(code fhir.SpineCode, msg string) {
			if opts.Audit != nil {
				opts.Audit(AuditRecord{Time: time.Now().UTC(), Method: r.Method, Path: r.URL.Path, Status: code.HTTPStatus(), Code: string(code), Reason: msg, Remote: r.RemoteAddr})
			}
			opts.Logger.Warn("request refused", "code", string(code), "reason", msg, "remote", r.RemoteAddr, "method", r.Method)
			WriteOutcome(w, r, &fhir.Outcome{Issues: []fhir.Issue{{Severity: fhir.SeverityError, Code: code, Diagnostics: msg}}})
		}
		if ok, wait := opts.PerClient.Allow("ip:" + clientIP(r)); !ok {
			w.Header().Set("Retry-After", strconv.Itoa(retryAfterSeconds(wait)))
			refuse(fhir.TooManyRequests, fmt.Sprintf("too many requests from this address; retry after %ds", retryAfterSeconds(wait)))
			return
		}
		if where := badText(r); where != "" {
			refuse(fhir.BadRequest, where+" is not valid UTF-8 text or holds control characters")
			return
		}
		if r.ContentLength > opts.MaxBodyBytes {
			w.Header().Set("Connection", "close")
			refuse(fhir.PayloadTooLarge, fmt.Sprintf("the body is %d bytes; this service takes at most %d", r.ContentLength, opts.MaxBodyBytes))
			return
		}
		if r.Body != nil && r.Body != http.NoBody {
			r.Body = http.MaxBytesReader(w, r.Body, opts.MaxBodyBytes)
		}
		if opts.Audit == nil {
			next.ServeHTTP(w, r.WithContext(withState(r.Context(), &requestState{header: w.Header()})))
			return
		}
		st := &requestState{header: w.Header()}
		rec := &statusRecorder{ResponseWriter: w, status: http.StatusOK}
		next.ServeHTTP(rec, r.WithContext(withState(r.Context(), st)))
		if rec.status >= 400 || (r.Method != http.MethodGet && r.Method != http.MethodHead && rec.status < 300) {
			opts.Audit(st.record(r, rec.status))
		}
	})
}

// badText names the first part of the request that is not clean text.
// net/http already refuses CR, LF and NUL in header values; invalid UTF-8
// it lets through, and an identity compared after a lossy decode is how
// two parsers come to disagree about who is calling.
func badText(r *http.Request) string {
	if !cleanText(r.URL.Path) {
		return "the request path"
	}
	if !cleanText(r.URL.RawQuery) {
		return "the query string"
	}
	for name, values := range r.URL.Query() {
		if !cleanText(name) {
			return "a query parameter name"
		}
		for _, v := range values {
			if !cleanText(v) {
				return "query parameter " + strconv.Quote(name)
			}
		}
	}
	for name, values := range r.Header {
		if !cleanText(name) {
			return "a header name"
		}
		for _, v := range values {
			if !cleanText(v) {
				return "header " + name
			}
		}
	}
	return ""
}

func cleanText(s string) bool {
	if !utf8.ValidString(s) {
		return false
	}
	for _, c := range s {
		if (c < 0x20 && c != '\t') || c == 0x7f {
			return false
		}
	}
	return true
}

func clientIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// WriteOutcome answers with o in the format the request negotiated.
func WriteOutcome(w http.ResponseWriter, r *http.Request, o *fhir.Outcome) {
	format := broker.NegotiateResponse(r)
	body, err := fhir.Marshal(o.Node(), format, false)
	if err != nil {
		http.Error(w, "internal error writing OperationOutcome", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", format.ContentType())
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(o.HTTPStatus())
	_, _ = w.Write(body)
}

// isWordByte reports whether b continues a run of letters or digits.
func isWordByte(b byte) bool {
	return b >= '0' && b <= '9' || b >= 'a' && b <= 'z' || b >= 'A' && b <= 'Z' || b == '_'
}
