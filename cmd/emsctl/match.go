package main

import (
	"bytes"
	"fmt"
	"net/http"

	"github.com/spf13/cobra"
)

const matchPath = "/admin/v1/match"

// matchAnswer is the dry-run route's answer.
type matchAnswer struct {
	Event struct {
		ID        string `json:"id"`
		Code      string `json:"code"`
		NHSNumber string `json:"nhsNumber,omitempty"`
	} `json:"event"`
	Matches []struct {
		Subscription   string `json:"subscription"`
		Owner          string `json:"owner"`
		Kind           string `json:"kind"`
		Rule           string `json:"rule,omitempty"`
		Organisation   string `json:"organisation,omitempty"`
		Tag            string `json:"tag,omitempty"`
		Channel        string `json:"channel"`
		Endpoint       string `json:"endpoint"`
		RefdataVersion string `json:"refdataVersion,omitempty"`
	} `json:"matches"`
}

func newEventMatchCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "match FILE",
		Short: "Dry-run: which subscriptions and endpoints would receive this event, and why",
		Long: `Ask the server which active subscriptions an event message would match and
where it would be delivered, without publishing or delivering anything: for
each match the subscription, its owner, the rule (explicit by NHS number, or the
generic rule and the organisation code it matched), the tag, the endpoint and
the reference-data version the rule was evaluated against.`,
		Example: `  emsctl event match pds-change-of-address.xml
  emsctl event match vaccination.json -o json | jq -r '.matches[].endpoint' | sort -u`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.admin()
			if err != nil {
				return err
			}
			body, err := readInput(g, args[0])
			if err != nil {
				return err
			}
			var a matchAnswer
			raw, err := c.call(cmd.Context(), http.MethodPost, matchPath, nil, bytes.NewReader(body), fhirContentType(body), &a)
			if err != nil {
				return err
			}
			t := newTable("SUBSCRIPTION", "OWNER", "KIND", "RULE", "ORGANISATION", "TAG", "CHANNEL", "ENDPOINT", "REFDATA")
			endpoints := map[string]bool{}
			for _, m := range a.Matches {
				t.add(m.Subscription, m.Owner, m.Kind, m.Rule, m.Organisation, m.Tag, m.Channel, m.Endpoint, m.RefdataVersion)
				endpoints[m.Endpoint] = true
			}
			summary := fmt.Sprintf("%s %s: %d subscriptions, %d endpoints", a.Event.Code, a.Event.ID, len(a.Matches), len(endpoints))
			return g.show(cmd, raw, t, summary)
		},
	}
}
