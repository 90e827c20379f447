package main

import (
	"net/url"
	"sort"
	"strconv"
	"time"

	"github.com/spf13/cobra"

	"github.com/ems-broker/ems/delivery"
)

// endpointRow is what endpoint list shows for one endpoint.
type endpointRow struct {
	Endpoint    string    `json:"endpoint"`
	Channel     string    `json:"channel,omitempty"`
	Breaker     string    `json:"breaker"`
	Backlog     int       `json:"backlog"` // pending or retrying deliveries
	Dead        int       `json:"dead"`
	LastSuccess time.Time `json:"lastSuccess,omitzero"`
	LastFailure time.Time `json:"lastFailure,omitzero"`
	LastError   string    `json:"lastError,omitempty"`
}

func newEndpointCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:     "endpoint",
		Aliases: []string{"endpoints"},
		Short:   "Inspect delivery endpoints and their circuit breakers",
		Example: `  emsctl endpoint list
  emsctl endpoint reset https://hooks.example.org/ems`,
	}
	list := &cobra.Command{
		Use:   "list",
		Short: "List endpoints: breaker state, backlog, last success and failure",
		Long: `List every endpoint that has deliveries or a circuit breaker: the breaker's
state (closed, open, half-open), the backlog (deliveries pending or retrying),
the dead letters, and the last successful and failed attempts. Until the server
has an endpoint summary route, emsctl builds this from the breaker states and
the delivery log.`,
		Example: `  emsctl endpoint list
  emsctl endpoint list -o json | jq '.[] | select(.breaker != "closed")'`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := g.admin()
			if err != nil {
				return err
			}
			var br struct {
				Breakers map[string]string `json:"breakers"`
			}
			if _, err := c.get(cmd.Context(), breakersPath, nil, &br); err != nil {
				return err
			}
			var dl struct {
				Deliveries []*delivery.Record `json:"deliveries"`
			}
			if _, err := c.get(cmd.Context(), deliveriesPath, url.Values{"limit": {everything}, "attempts": {"true"}}, &dl); err != nil {
				return err
			}
			rows := endpointRows(br.Breakers, dl.Deliveries)
			t := newTable("ENDPOINT", "CHANNEL", "BREAKER", "BACKLOG", "DEAD", "LAST SUCCESS", "LAST FAILURE", "LAST ERROR")
			for _, r := range rows {
				t.add(r.Endpoint, r.Channel, r.Breaker, strconv.Itoa(r.Backlog), strconv.Itoa(r.Dead),
					ts(r.LastSuccess), ts(r.LastFailure), r.LastError)
			}
			return g.show(cmd, mustJSON(rows), t)
		},
	}
	reset := &cobra.Command{
		Use:   "reset ENDPOINT",
		Short: "Close an endpoint's circuit breaker so delivery tries it at once",
		Long: `Close a webhook endpoint's circuit breaker, so that delivery stops waiting
out the cool-down and tries the endpoint again at once. An endpoint that has
no breaker (nothing was delivered to it since emsd started) is not found.`,
		Example: `  emsctl endpoint reset https://hooks.example.org/ems`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.admin()
			if err != nil {
				return err
			}
			var res struct {
				Endpoint string `json:"endpoint"`
				Breaker  string `json:"breaker"`
			}
			raw, err := c.postJSON(cmd.Context(), breakersPath+"/reset", url.Values{"endpoint": {args[0]}}, nil, &res)
			if err != nil {
				return err
			}
			t := newTable("ENDPOINT", "BREAKER")
			t.add(res.Endpoint, res.Breaker)
			return g.show(cmd, raw, t)
		},
	}
	cmd.AddCommand(list, reset)
	return cmd
}

// endpointRows summarises the delivery log per endpoint. The server keys
// breakers by endpoint token (a hash of channel and endpoint), so a breaker
// is named by the deliveries that share its token; one with no delivery in
// the log shows by its token. A breaker the server has not created yet is
// closed.
func endpointRows(breakers map[string]string, recs []*delivery.Record) []endpointRow {
	by := map[string]*endpointRow{}
	for _, rec := range recs {
		tok := delivery.EndpointToken(rec.Channel, rec.Endpoint)
		r, ok := by[tok]
		if !ok {
			r = &endpointRow{Endpoint: rec.Endpoint, Channel: rec.Channel, Breaker: "closed"}
			if b, ok := breakers[tok]; ok {
				r.Breaker = b
			}
			by[tok] = r
		}
		switch rec.State {
		case delivery.StatePending, delivery.StateRetrying:
			r.Backlog++
		case delivery.StateDead:
			r.Dead++
		}
		for _, a := range rec.Attempts {
			// "stored" is a mailbox delivery: storing it is the delivery.
			if a.Outcome == delivery.StateDelivered || a.Outcome == "stored" {
				if a.At.After(r.LastSuccess) {
					r.LastSuccess = a.At
				}
			} else if a.At.After(r.LastFailure) {
				r.LastFailure = a.At
				r.LastError = lastOutcome(a.Status, a.Error)
			}
		}
	}
	for tok, b := range breakers {
		if _, ok := by[tok]; !ok {
			by[tok] = &endpointRow{Endpoint: tok, Breaker: b}
		}
	}
	out := make([]endpointRow, 0, len(by))
	for _, r := range by {
		out = append(out, *r)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Endpoint < out[j].Endpoint })
	return out
}
