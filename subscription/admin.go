package subscription

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
)

// AdminOptions configure the operator routes.
type AdminOptions struct {
	// Actor names the operator behind a request (the admin API's
	// authenticated identity). Mandatory.
	Actor func(r *http.Request) string
	// RecordChange, when set, receives a subscription's state before and
	// after an operator's change, for the audit log.
	RecordChange func(ctx context.Context, before, after any)
}

// Registrar is the admin mux.
type Registrar interface {
	Handle(pattern string, h http.Handler)
}

// RegisterAdmin mounts the operator routes of the subscription service
// under /admin/v1/subscriptions. They may act on every organisation's
// subscriptions: authentication and audit are the admin API's, not ours.
func RegisterAdmin(r Registrar, svc *Service, opts AdminOptions) error {
	if opts.Actor == nil {
		return errors.New("subscription admin: AdminOptions.Actor is mandatory")
	}
	if opts.RecordChange == nil {
		opts.RecordChange = func(context.Context, any, any) {}
	}
	a := &admin{svc: svc, opts: opts}
	r.Handle("GET /admin/v1/subscriptions", http.HandlerFunc(a.list))
	r.Handle("GET /admin/v1/subscriptions/pending", http.HandlerFunc(a.pending))
	r.Handle("GET /admin/v1/subscriptions/{id}", http.HandlerFunc(a.get))
	r.Handle("DELETE /admin/v1/subscriptions/{id}", http.HandlerFunc(a.delete))
	for action, do := range map[string]func(id, actor, note string) (*Subscription, error){
		"approve": svc.Approve,
		"reject":  svc.Reject,
		"suspend": svc.Suspend,
		"resume":  svc.Resume,
	} {
		r.Handle("POST /admin/v1/subscriptions/{id}/"+action, a.transition(do))
	}
	return nil
}

type admin struct {
	svc  *Service
	opts AdminOptions
}

// AdminList is the answer of the list routes.
type AdminList struct {
	Subscriptions []*Subscription `json:"subscriptions"`
	// Next is the id to pass as "after" for the next page; empty on the
	// last page.
	Next string `json:"next,omitempty"`
}

// AdminDetail is one subscription with its history.
type AdminDetail struct {
	Subscription *Subscription  `json:"subscription"`
	History      []HistoryEntry `json:"history"`
}

func (a *admin) list(w http.ResponseWriter, r *http.Request) {
	q, err := adminQuery(r)
	if err != nil {
		adminError(w, http.StatusBadRequest, err.Error())
		return
	}
	subs, more, err := a.svc.Store().List(q)
	if err != nil {
		adminError(w, http.StatusInternalServerError, "listing subscriptions: "+err.Error())
		return
	}
	writeAdminList(w, subs, more)
}

func (a *admin) pending(w http.ResponseWriter, r *http.Request) {
	q, err := adminQuery(r)
	if err != nil {
		adminError(w, http.StatusBadRequest, err.Error())
		return
	}
	subs, more, err := a.svc.ListPending(q.After, q.Limit)
	if err != nil {
		adminError(w, http.StatusInternalServerError, "listing pending subscriptions: "+err.Error())
		return
	}
	// The review queue is worked oldest first.
	sortByCreated(subs)
	writeAdminList(w, subs, more)
}

func writeAdminList(w http.ResponseWriter, subs []*Subscription, more bool) {
	out := AdminList{Subscriptions: subs}
	if out.Subscriptions == nil {
		out.Subscriptions = []*Subscription{}
	}
	if more && len(subs) > 0 {
		out.Next = subs[len(subs)-1].ID
	}
	adminJSON(w, http.StatusOK, out)
}

func (a *admin) get(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	sub, err := a.svc.Store().Get(id)
	if err != nil {
		a.storeError(w, id, err)
		return
	}
	hist, err := a.svc.History(id)
	if err != nil {
		adminError(w, http.StatusInternalServerError, "reading history: "+err.Error())
		return
	}
	if hist == nil {
		hist = []HistoryEntry{}
	}
	adminJSON(w, http.StatusOK, AdminDetail{Subscription: sub, History: hist})
}

func (a *admin) delete(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	before, err := a.svc.Store().Get(id)
	if err != nil {
		a.storeError(w, id, err)
		return
	}
	if err := a.svc.AdminDelete(id, a.opts.Actor(r)); err != nil {
		a.storeError(w, id, err)
		return
	}
	a.opts.RecordChange(r.Context(), before, nil)
	adminJSON(w, http.StatusOK, map[string]string{"deleted": id})
}

// transition serves approve, reject, suspend and resume. The optional body
// {"note": "..."} is kept in the subscription's history.
func (a *admin) transition(do func(id, actor, note string) (*Subscription, error)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := r.PathValue("id")
		var body struct {
			Note string `json:"note"`
		}
		if r.ContentLength != 0 {
			if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 4096)).Decode(&body); err != nil {
				adminError(w, http.StatusBadRequest, "body: expected {\"note\": \"...\"}: "+err.Error())
				return
			}
		}
		before, err := a.svc.Store().Get(id)
		if err != nil {
			a.storeError(w, id, err)
			return
		}
		after, err := do(id, a.opts.Actor(r), body.Note)
		if err != nil {
			a.storeError(w, id, err)
			return
		}
		a.opts.RecordChange(r.Context(), before, after)
		adminJSON(w, http.StatusOK, after)
	})
}

func (a *admin) storeError(w http.ResponseWriter, id string, err error) {
	switch {
	case errors.Is(err, ErrNotFound):
		adminError(w, http.StatusNotFound, "subscription "+id+" not found")
	case errors.Is(err, ErrTransition):
		adminError(w, http.StatusConflict, err.Error())
	default:
		adminError(w, http.StatusInternalServerError, err.Error())
	}
}

// adminQuery reads the list filters; every bad one is named.
func adminQuery(r *http.Request) (Query, error) {
	v := r.URL.Query()
	q := Query{
		Owner:     v.Get("owner"),
		Status:    Status(v.Get("status")),
		Endpoint:  v.Get("endpoint"),
		Event:     v.Get("event"),
		NHSNumber: v.Get("nhs"),
		Rule:      RuleType(v.Get("rule")),
		After:     v.Get("after"),
		Limit:     100,
	}
	if q.Status != "" && !q.Status.Valid() {
		return q, fmt.Errorf("status: %q is not requested, active, error or off", q.Status)
	}
	if q.Rule != "" && !validRule(q.Rule) {
		return q, fmt.Errorf("rule: %q is not a subscription rule type", q.Rule)
	}
	switch k := v.Get("kind"); k {
	case "":
	case Explicit.String():
		q.Kind = Explicit
	case Generic.String():
		q.Kind = Generic
	default:
		return q, fmt.Errorf("kind: %q is not explicit or generic", k)
	}
	if s := v.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > 1000 {
			return q, fmt.Errorf("limit: %q is not a number from 1 to 1000", s)
		}
		q.Limit = n
	}
	return q, nil
}

func sortByCreated(subs []*Subscription) {
	// Insertion sort: a page is at most 1000 items and usually sorted.
	for i := 1; i < len(subs); i++ {
		for j := i; j > 0 && subs[j].Created.Before(subs[j-1].Created); j-- {
			subs[j], subs[j-1] = subs[j-1], subs[j]
		}
	}
}

func adminJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

func adminError(w http.ResponseWriter, status int, msg string) {
	adminJSON(w, status, map[string]string{"error": msg})
}
