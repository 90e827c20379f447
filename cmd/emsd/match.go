package main

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"

	"github.com/ems-broker/ems/admin"
	"github.com/ems-broker/ems/broker"
	"github.com/ems-broker/ems/delivery"
	"github.com/ems-broker/ems/fhir"
	"github.com/ems-broker/ems/subscription"
)

// matchAnswer is the answer of POST /admin/v1/match: which active
// subscriptions an event would match and where it would go, computed the
// way the fan-out computes it, without publishing anything.
type matchAnswer struct {
	Event struct {
		ID               string `json:"id"`
		Code             string `json:"code"`
		MessageEventType string `json:"messageEventType"`
		NHSNumber        string `json:"nhsNumber,omitempty"`
	} `json:"event"`
	Matches []matchEntry `json:"matches"`
}

type matchEntry struct {
	Subscription   string `json:"subscription"`
	Owner          string `json:"owner"`
	Kind           string `json:"kind"`
	Rule           string `json:"rule,omitempty"`
	Organisation   string `json:"organisation,omitempty"`
	Tag            string `json:"tag,omitempty"`
	Channel        string `json:"channel"`
	Endpoint       string `json:"endpoint"`
	RefdataVersion string `json:"refdataVersion,omitempty"`
}

// enrichFunc completes an event's facts from demographics and reference
// data without recording anything (the dry run must not change state).
type enrichFunc func(ctx context.Context, f subscription.EventFacts, bundle *fhir.Node) (subscription.EventFacts, error)

// registerMatch mounts the dry run. It validates the event as the publish
// API does (so a message the broker would refuse is refused here with the
// same diagnostics) and matches it with the fan-out's own facts, completed
// from the same reference data.
func registerMatch(srv *admin.Server, v *broker.Validator, m *subscription.Matcher, enrich enrichFunc) {
	srv.Handle("POST /admin/v1/match", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, broker.DefaultMaxBodyBytes))
		if err != nil {
			matchError(w, http.StatusBadRequest, "reading the event: "+err.Error())
			return
		}
		root, err := fhir.Parse(body, fhir.Sniff(body), fhir.DefaultLimits())
		if err != nil {
			matchError(w, http.StatusBadRequest, string(fhir.MessageNotWellFormed)+": "+err.Error())
			return
		}
		msg, issues := v.Validate(root)
		var errs []string
		for _, i := range issues {
			if i.IsError() {
				errs = append(errs, string(i.Code)+" "+i.Diagnostics)
			}
		}
		if len(errs) > 0 {
			matchError(w, http.StatusBadRequest, "the event is not valid: "+strings.Join(errs, "; "))
			return
		}
		facts := delivery.Facts(msg.Event.Code, msg.MessageEventType, msg.NHSNumber, root)
		if enrich != nil {
			if facts, err = enrich(r.Context(), facts, root); err != nil {
				matchError(w, http.StatusInternalServerError, "reading reference data: "+err.Error())
				return
			}
		}
		matches, err := m.Match(facts)
		if err != nil {
			matchError(w, http.StatusInternalServerError, "matching: "+err.Error())
			return
		}
		var out matchAnswer
		out.Event.ID, out.Event.Code, out.Event.MessageEventType, out.Event.NHSNumber = msg.ID, msg.Event.Code, msg.MessageEventType, msg.NHSNumber
		out.Matches = []matchEntry{}
		for _, x := range matches {
			out.Matches = append(out.Matches, matchEntry{Subscription: x.SubscriptionID, Owner: x.Owner, Kind: x.Kind.String(),
				Rule: string(x.RuleType), Organisation: x.OrganisationCode, Tag: x.Tag, Channel: x.ChannelType, Endpoint: x.Endpoint,
				RefdataVersion: x.RefData})
		}
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		_ = enc.Encode(out)
	}))
}

func matchError(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": msg})
}
