// Package admin is the operator API's front door: its own listener's mux,
// operator authentication by named bearer tokens (compared in constant
// time), and the append-only audit log every mutating call is written to.
// The packages that own the data (subscription, delivery, reference data)
// provide the handlers; admin only decides who may call them and records
// what they changed.
package admin

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"
)

// Token is one operator credential.
type Token struct {
	Name  string // who the operator is, recorded in the audit log
	Value string
}

// Options configure a Server.
type Options struct {
	// Tokens are the accepted operator tokens. Mandatory: an admin API
	// without credentials is refused at construction.
	Tokens []Token
	// Audit records mutating calls. Mandatory.
	Audit *AuditLog
	// Logger; nil: slog.Default().
	Logger *slog.Logger
	// Now; nil: time.Now.
	Now func() time.Time
}

// Server is the admin API's handler.
type Server struct {
	mux    *http.ServeMux
	tokens []hashedToken
	audit  *AuditLog
	log    *slog.Logger
	now    func() time.Time
}

// hashedToken keeps a digest so that every comparison takes the same time
// whatever the lengths of the presented and the configured token.
type hashedToken struct {
	name string
	sum  [32]byte
}

// New validates opts and returns the server.
func New(opts Options) (*Server, error) {
	if len(opts.Tokens) == 0 {
		return nil, errors.New("admin: at least one operator token is required")
	}
	if opts.Audit == nil {
		return nil, errors.New("admin: Options.Audit is mandatory")
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	s := &Server{mux: http.NewServeMux(), audit: opts.Audit, log: opts.Logger, now: opts.Now}
	for _, t := range opts.Tokens {
		if t.Name == "" || len(t.Value) < 16 {
			return nil, fmt.Errorf("admin: token %q: needs a name and at least 16 characters", t.Name)
		}
		s.tokens = append(s.tokens, hashedToken{name: t.Name, sum: sha256.Sum256([]byte(t.Value))})
	}
	s.mux.HandleFunc("GET /admin/v1/audit", s.listAudit)
	return s, nil
}

// Handle registers a handler. Calls with a method other than GET and HEAD
// are written to the audit log with the operator, the target path and the
// response status.
func (s *Server) Handle(pattern string, h http.Handler) { s.mux.Handle(pattern, h) }

type operatorKey struct{}

type changeKey struct{}

// change is filled by a handler through RecordChange.
type change struct {
	before, after json.RawMessage
}

// RecordChange lets a handler behind the admin API put the target's state
// before and after its change into the audit entry of the call. Values are
// encoded as JSON; it does nothing outside an admin request.
func RecordChange(ctx context.Context, before, after any) {
	c, ok := ctx.Value(changeKey{}).(*change)
	if !ok {
		return
	}
	if before != nil {
		c.before, _ = json.Marshal(before)
	}
	if after != nil {
		c.after, _ = json.Marshal(after)
	}
}

// Operator returns the authenticated operator's name for a request served
// by the admin API.
func Operator(ctx context.Context) string {
	name, _ := ctx.Value(operatorKey{}).(string)
	return name
}

// ServeHTTP authenticates, serves and audits.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	name, ok := s.authenticate(r)
	if !ok {
		w.Header().Set("WWW-Authenticate", `Bearer realm="ems-admin"`)
		writeError(w, http.StatusUnauthorized, "a valid operator token is required (Authorization: Bearer <token>)")
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			s.record(r, "", http.StatusUnauthorized, time.Time{}, nil)
		}
		return
	}
	r = r.WithContext(context.WithValue(r.Context(), operatorKey{}, name))
	if r.Method == http.MethodGet || r.Method == http.MethodHead {
		s.mux.ServeHTTP(w, r)
		return
	}
	start := s.now()
	ch := &change{}
	r = r.WithContext(context.WithValue(r.Context(), changeKey{}, ch))
	rec := &statusRecorder{ResponseWriter: w, status: http.StatusOK}
	s.mux.ServeHTTP(rec, r)
	s.record(r, name, rec.status, start, ch)
}

func (s *Server) authenticate(r *http.Request) (string, bool) {
	auth := r.Header.Get("Authorization")
	token, ok := strings.CutPrefix(auth, "Bearer ")
	if !ok || token == "" {
		return "", false
	}
	sum := sha256.Sum256([]byte(token))
	name, found := "", 0
	for _, t := range s.tokens {
		// Compare against every token, never stopping early.
		if subtle.ConstantTimeCompare(sum[:], t.sum[:]) == 1 {
			name, found = t.name, 1
		}
	}
	return name, found == 1
}

func (s *Server) record(r *http.Request, operator string, status int, start time.Time, ch *change) {
	e := Entry{
		Time:     s.now().UTC(),
		Operator: operator,
		Method:   r.Method,
		Path:     r.URL.Path,
		Query:    r.URL.RawQuery,
		Status:   status,
		Remote:   r.RemoteAddr,
	}
	if !start.IsZero() {
		e.DurationMS = s.now().Sub(start).Milliseconds()
	}
	if ch != nil {
		e.Before, e.After = ch.before, ch.after
	}
	if err := s.audit.Append(e); err != nil {
		// An unrecorded change is an operational incident: say so loudly.
		s.log.Error("writing the admin audit log failed", "err", err, "operator", operator, "method", r.Method, "path", r.URL.Path)
	}
}

func (s *Server) listAudit(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	limit := 100
	if v := q.Get("limit"); v != "" {
		if _, err := fmt.Sscanf(v, "%d", &limit); err != nil || limit < 1 || limit > 10000 {
			writeError(w, http.StatusBadRequest, "limit: must be a number from 1 to 10000")
			return
		}
	}
	var since time.Time
	if v := q.Get("since"); v != "" {
		t, err := time.Parse(time.RFC3339, v)
		if err != nil {
			writeError(w, http.StatusBadRequest, "since: must be an RFC 3339 time, e.g. 2026-11-22T10:00:00Z")
			return
		}
		since = t
	}
	entries, err := s.audit.List(since, q.Get("operator"), limit)
	if err != nil {
		writeError(w, http.StatusInternalServerError, "reading the audit log: "+err.Error())
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"entries": entries})
}

type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (s *statusRecorder) WriteHeader(code int) {
	s.status = code
	s.ResponseWriter.WriteHeader(code)
}

// writeJSON answers with a JSON document.
func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

// writeError answers with the admin API's error shape.
func writeError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, map[string]string{"error": msg})
}
