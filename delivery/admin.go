package delivery

import (
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"time"
)

// AdminPrefix is where the admin routes live.
const AdminPrefix = "/admin/v1"

// AdminOptions configure the admin API.
type AdminOptions struct {
	Log        *Log
	Replayer   *Replayer
	Dispatcher *Dispatcher // for breaker states; may be nil
}

// NewAdminHandler serves the delivery log, dead letters, replay and
// breaker states as JSON.
func NewAdminHandler(o AdminOptions) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+AdminPrefix+"/deliveries", func(w http.ResponseWriter, r *http.Request) {
		q := query(r)
		recs, err := o.Log.List(q)
		if err != nil {
			writeErr(w, http.StatusInternalServerError, err)
			return
		}
		if r.URL.Query().Get("attempts") != "true" {
			for _, rec := range recs {
				rec.Attempts = nil
			}
		}
		writeJSON(w, http.StatusOK, map[string]any{"deliveries": recs})
	})
	mux.HandleFunc("GET "+AdminPrefix+"/deliveries/{id}", func(w http.ResponseWriter, r *http.Request) {
		rec, err := o.Log.Get(r.PathValue("id"))
		if errors.Is(err, ErrNoRecord) {
			writeErr(w, http.StatusNotFound, err)
			return
		}
		if err != nil {
			writeErr(w, http.StatusInternalServerError, err)
			return
		}
		writeJSON(w, http.StatusOK, rec)
	})
	mux.HandleFunc("GET "+AdminPrefix+"/dead-letters", func(w http.ResponseWriter, r *http.Request) {
		dls, err := o.Replayer.DeadLetters(r.Context(), query(r))
		if err != nil {
			writeErr(w, http.StatusInternalServerError, err)
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{"deadLetters": dls})
	})
	// Replay one (?job=ID) or every dead letter matching the filter.
	mux.HandleFunc("POST "+AdminPrefix+"/dead-letters/replay", func(w http.ResponseWriter, r *http.Request) {
		q := query(r)
		q.Limit = 0
		job := r.URL.Query().Get("job")
		if job == "" && q.Endpoint == "" && q.EventID == "" && q.NHSNumber == "" && r.URL.Query().Get("all") != "true" {
			writeErr(w, http.StatusBadRequest, errors.New("give job, endpoint, event, nhs or all=true"))
			return
		}
		dls, err := o.Replayer.DeadLetters(r.Context(), q)
		if err != nil {
			writeErr(w, http.StatusInternalServerError, err)
			return
		}
		var replayed []string
		refused := map[string]string{}
		for _, dl := range dls {
			if job != "" && dl.JobID != job {
				continue
			}
			if err := o.Replayer.Replay(r.Context(), dl); err != nil {
				refused[dl.JobID] = err.Error()
				continue
			}
			replayed = append(replayed, dl.JobID)
		}
		if job != "" && len(replayed) == 0 && len(refused) == 0 {
			writeErr(w, http.StatusNotFound, errors.New("no dead letter for job "+job))
			return
		}
		status := http.StatusOK
		if len(replayed) == 0 && len(refused) > 0 {
			status = http.StatusConflict
		}
		writeJSON(w, status, map[string]any{"replayed": replayed, "refused": refused})
	})
	mux.HandleFunc("GET "+AdminPrefix+"/breakers", func(w http.ResponseWriter, _ *http.Request) {
		states := map[string]string{}
		if o.Dispatcher != nil {
			states = o.Dispatcher.BreakerStates()
		}
		writeJSON(w, http.StatusOK, map[string]any{"breakers": states})
	})
	mux.HandleFunc("POST "+AdminPrefix+"/breakers/reset", func(w http.ResponseWriter, r *http.Request) {
		ep := r.URL.Query().Get("endpoint")
		if ep == "" || o.Dispatcher == nil {
			writeErr(w, http.StatusBadRequest, errors.New("give endpoint"))
			return
		}
		if !o.Dispatcher.ResetBreaker(ep) {
			writeErr(w, http.StatusNotFound, errors.New("no breaker for endpoint "+ep))
			return
		}
		writeJSON(w, http.StatusOK, map[string]string{"endpoint": ep, "breaker": Closed.String()})
	})
	return mux
}

func query(r *http.Request) Query {
	v := r.URL.Query()
	q := Query{Endpoint: v.Get("endpoint"), EventID: v.Get("event"), NHSNumber: v.Get("nhs"), State: v.Get("state"), Channel: v.Get("channel"), Limit: 100}
	if t, err := time.Parse(time.RFC3339, v.Get("since")); err == nil {
		q.Since = t
	}
	if n, err := strconv.Atoi(v.Get("limit")); err == nil && n > 0 {
		q.Limit = n
	}
	return q
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

func writeErr(w http.ResponseWriter, status int, err error) {
	writeJSON(w, status, map[string]string{"error": err.Error()})
}
