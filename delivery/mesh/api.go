package mesh

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"
)

// gzipWriters are reused: a writer's set-up costs more than compressing a
// typical bundle.
var gzipWriters = sync.Pool{New: func() any {
	zw, _ := gzip.NewWriterLevel(nil, gzip.BestSpeed)
	return zw
}}

// APIPrefix is where the MESH API is mounted.
const APIPrefix = "/messageexchange"

// HandlerOptions configure the MESH inbox API.
type HandlerOptions struct {
	Store *Store
	Auth  *Authenticator
	// ChunkSize splits bodies larger than it into chunks (206 until the
	// last); default 20 MiB, real MESH's chunk size.
	ChunkSize int
	Logger    *slog.Logger
	Now       func() time.Time
	// OnAck is told of every first acknowledgement (for metrics/log).
	OnAck func(mailbox, id string)
}

type handler struct {
	HandlerOptions

	mu     sync.Mutex
	counts map[string]countAt
}

type countAt struct {
	n  int
	at time.Time
}

func (h *handler) approxCount(ctx context.Context, mb string) (int, error) {
	if h.Store.Ready() {
		return h.Store.Count(ctx, mb) // from the index: cheaper than the cache
	}
	now := h.Now()
	h.mu.Lock()
	c, ok := h.counts[mb]
	h.mu.Unlock()
	if ok && now.Sub(c.at) < time.Second {
		return c.n, nil
	}
	n, err := h.Store.Count(ctx, mb)
	if err != nil {
		return 0, err
	}
	h.mu.Lock()
	h.counts[mb] = countAt{n: n, at: now}
	h.mu.Unlock()
	return n, nil
}

// NewHandler returns the MESH inbox API, to be mounted at APIPrefix + "/".
func NewHandler(o HandlerOptions) http.Handler {
	if o.ChunkSize <= 0 {
		o.ChunkSize = 20 << 20
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	h := &handler{HandlerOptions: o, counts: map[string]countAt{}}
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+APIPrefix+"/_ping", h.ping)
	mux.HandleFunc("GET "+APIPrefix+"/{mb}", h.auth(h.handshake))
	mux.HandleFunc("POST "+APIPrefix+"/{mb}", h.auth(h.handshake))
	mux.HandleFunc("GET "+APIPrefix+"/{mb}/inbox", h.auth(h.inbox))
	mux.HandleFunc("GET "+APIPrefix+"/{mb}/count", h.auth(h.count))
	mux.HandleFunc("GET "+APIPrefix+"/{mb}/inbox/{id}", h.auth(h.retrieve))
	mux.HandleFunc("GET "+APIPrefix+"/{mb}/inbox/{id}/{chunk}", h.auth(h.retrieve))
	mux.HandleFunc("PUT "+APIPrefix+"/{mb}/inbox/{id}/status/acknowledged", h.auth(h.ack))
	return mux
}

func v2(r *http.Request) bool {
	return strings.Contains(r.Header.Get("Accept"), "application/vnd.mesh.v2+json")
}

func writeJSON(w http.ResponseWriter, r *http.Request, status int, v any) {
	ct := "application/json"
	if v2(r) {
		ct = "application/vnd.mesh.v2+json"
	}
	w.Header().Set("Content-Type", ct)
	w.WriteHeader(status)
	if v != nil {
		_ = json.NewEncoder(w).Encode(v)
	}
}

func fail(w http.ResponseWriter, r *http.Request, status int, desc string) {
	if v2(r) {
		writeJSON(w, r, status, map[string]any{"message": desc, "internal_id": strconv.FormatInt(time.Now().UnixNano(), 36)})
		return
	}
	writeJSON(w, r, status, map[string]any{"errorDescription": desc})
}

func (h *handler) auth(next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		mb := r.PathValue("mb")
		if err := h.Auth.Check(r.Header.Get("Authorization"), mb); err != nil {
			h.Logger.Warn("MESH authentication refused", "mailbox", mb, "path", r.URL.Path, "reason", err.Error())
			fail(w, r, http.StatusForbidden, "Authentication failed")
			return
		}
		next(w, r)
	}
}

func (h *handler) ping(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, r, http.StatusOK, map[string]any{
		"mesh_build_version": "ems", "vcs_sha": "ems", "now": h.Now().UTC().Format(time.RFC3339), "status": "ok"})
}

func (h *handler) handshake(w http.ResponseWriter, r *http.Request) {
	for _, k := range []string{"Mex-ClientVersion", "Mex-OSName", "Mex-OSVersion"} {
		if r.Header.Get(k) == "" {
			fail(w, r, http.StatusBadRequest, "missing header "+k)
			return
		}
	}
	if v2(r) {
		writeJSON(w, r, http.StatusOK, nil)
		return
	}
	writeJSON(w, r, http.StatusOK, map[string]string{"mailboxId": r.PathValue("mb")})
}

// workflowFilter compiles the forms X, !X, X*, !X*, *X*, !*X*.
func workflowFilter(f string) Filter {
	if f == "" {
		return nil
	}
	neg := strings.HasPrefix(f, "!")
	f = strings.TrimPrefix(f, "!")
	var match func(string) bool
	switch {
	case len(f) > 1 && strings.HasPrefix(f, "*") && strings.HasSuffix(f, "*"):
		s := f[1 : len(f)-1]
		match = func(w string) bool { return strings.Contains(w, s) }
	case strings.HasSuffix(f, "*"):
		s := f[:len(f)-1]
		match = func(w string) bool { return strings.HasPrefix(w, s) }
	default:
		match = func(w string) bool { return w == f }
	}
	return func(m *Message) bool { return match(m.Workflow) != neg }
}

func (h *handler) inbox(w http.ResponseWriter, r *http.Request) {
	mb := r.PathValue("mb")
	q := r.URL.Query()
	limit := 500
	if s := q.Get("max_results"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 10 || n > 5000 {
			fail(w, r, http.StatusBadRequest, "max_results must be an integer from 10 to 5000")
			return
		}
		limit = n
	}
	msgs, more, err := h.Store.List(r.Context(), mb, q.Get("continue_from"), limit, workflowFilter(q.Get("workflow_filter")))
	if err != nil {
		h.Logger.Error("listing MESH inbox", "mailbox", mb, "err", err)
		fail(w, r, http.StatusInternalServerError, "inbox unavailable")
		return
	}
	ids := make([]string, len(msgs))
	for i, m := range msgs {
		ids[i] = m.ID
	}
	if !v2(r) {
		writeJSON(w, r, http.StatusOK, map[string]any{"messages": ids})
		return
	}
	// approx_inbox_count is approximate by contract: a count at most a
	// second old saves a stream-info request on every page of a drain.
	n, err := h.approxCount(r.Context(), mb)
	if err != nil {
		n = len(ids)
	}
	self := r.URL.Path
	if r.URL.RawQuery != "" {
		self += "?" + r.URL.RawQuery
	}
	links := map[string]string{"self": self}
	if more && len(ids) > 0 {
		nq := url.Values{}
		nq.Set("max_results", strconv.Itoa(limit))
		nq.Set("continue_from", ids[len(ids)-1])
		if f := q.Get("workflow_filter"); f != "" {
			nq.Set("workflow_filter", f)
		}
		links["next"] = r.URL.Path + "?" + nq.Encode()
	}
	writeJSON(w, r, http.StatusOK, map[string]any{"messages": ids, "links": links, "approx_inbox_count": n})
}

func (h *handler) count(w http.ResponseWriter, r *http.Request) {
	mb := r.PathValue("mb")
	n, err := h.Store.Count(r.Context(), mb)
	if err != nil {
		fail(w, r, http.StatusInternalServerError, "inbox unavailable")
		return
	}
	if v2(r) {
		writeJSON(w, r, http.StatusOK, map[string]any{"count": n})
		return
	}
	writeJSON(w, r, http.StatusOK, map[string]any{"count": n, "internalID": strconv.FormatInt(h.Now().UnixNano(), 36), "allResultsIncluded": true})
}

// copied lists the stored Mex-* headers a retrieve returns when set.
var copied = []string{"Mex-From", "Mex-To", "Mex-WorkflowID", "Mex-LocalID", "Mex-PartnerID", "Mex-Subject",
	"Mex-Content-Compressed", "Mex-Content-Encrypted", "Mex-Content-Checksum", "Mex-Content-Type"}

func (h *handler) retrieve(w http.ResponseWriter, r *http.Request) {
	mb, id := r.PathValue("mb"), r.PathValue("id")
	chunk := 1
	if s := r.PathValue("chunk"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			fail(w, r, http.StatusNotFound, "no such chunk")
			return
		}
		chunk = n
	}
	m, err := h.Store.Get(r.Context(), mb, id)
	switch {
	case errors.Is(err, ErrNotFound):
		fail(w, r, http.StatusNotFound, "Message does not exist")
		return
	case errors.Is(err, ErrGone):
		fail(w, r, http.StatusGone, "Message has been acknowledged")
		return
	case err != nil:
		h.Logger.Error("reading MESH message", "mailbox", mb, "id", id, "err", err)
		fail(w, r, http.StatusInternalServerError, "inbox unavailable")
		return
	}
	if to := m.Header.Get("Mex-To"); to != "" && to != mb {
		fail(w, r, http.StatusForbidden, "not the recipient")
		return
	}
	total := max(1, (len(m.Body)+h.ChunkSize-1)/h.ChunkSize)
	if chunk > total {
		fail(w, r, http.StatusNotFound, "no such chunk")
		return
	}
	part := m.Body[min((chunk-1)*h.ChunkSize, len(m.Body)):min(chunk*h.ChunkSize, len(m.Body))]

	hd := w.Header()
	for _, k := range copied {
		if v := m.Header.Get(k); v != "" {
			hd.Set(k, v)
		}
	}
	name := m.Header.Get("Mex-FileName")
	if name == "" {
		name = id + ".dat"
	}
	hd.Set("Mex-FileName", name)
	hd.Set("Mex-MessageID", id)
	hd.Set("Mex-AddressType", "ALL")
	hd.Set("Mex-Version", "1.0")
	hd.Set("Mex-MessageType", "DATA")
	hd.Set("Mex-StatusCode", "00")
	hd.Set("Mex-StatusEvent", "TRANSFER")
	hd.Set("Mex-StatusDescription", "Transferred to recipient mailbox")
	hd.Set("Mex-StatusSuccess", "SUCCESS")
	hd.Set("Mex-StatusTimestamp", m.Stored.UTC().Format("20060102150405"))
	hd.Set("Mex-Chunk-Range", strconv.Itoa(chunk)+":"+strconv.Itoa(total))
	hd.Set("Mex-Total-Chunks", strconv.Itoa(total))
	hd.Set("Content-Type", "application/octet-stream")
	hd.Set("Last-Modified", m.Stored.UTC().Format(http.TimeFormat))
	status := http.StatusOK
	if chunk < total {
		status = http.StatusPartialContent
	}
	if strings.Contains(r.Header.Get("Accept-Encoding"), "gzip") {
		var buf bytes.Buffer
		zw := gzipWriters.Get().(*gzip.Writer)
		zw.Reset(&buf)
		_, _ = zw.Write(part)
		_ = zw.Close()
		gzipWriters.Put(zw)
		part = buf.Bytes()
		hd.Set("Content-Encoding", "gzip")
	}
	hd.Set("Content-Length", strconv.Itoa(len(part)))
	w.WriteHeader(status)
	if r.Method != http.MethodHead {
		_, _ = w.Write(part)
	}
}

func (h *handler) ack(w http.ResponseWriter, r *http.Request) {
	mb, id := r.PathValue("mb"), r.PathValue("id")
	first, err := h.Store.ackFirst(r.Context(), mb, id, h.Now())
	switch {
	case errors.Is(err, ErrNotFound):
		fail(w, r, http.StatusNotFound, "Message does not exist")
		return
	case err != nil:
		h.Logger.Error("acknowledging MESH message", "mailbox", mb, "id", id, "err", err)
		fail(w, r, http.StatusInternalServerError, "inbox unavailable")
		return
	}
	if first && h.OnAck != nil {
		h.OnAck(mb, id)
	}
	if v2(r) {
		writeJSON(w, r, http.StatusOK, nil)
		return
	}
	writeJSON(w, r, http.StatusOK, map[string]string{"messageId": id})
}
