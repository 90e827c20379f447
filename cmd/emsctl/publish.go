package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/ems-broker/ems/broker"
)

// publishResult is one file's answer from the publish API.
type publishResult struct {
	File      string `json:"file"`
	Status    int    `json:"status"`
	MessageID string `json:"messageId,omitempty"`
	Outcome   string `json:"outcome,omitempty"` // the OperationOutcome's issues, one line
}

func newEventPublishCmd(g *globals) *cobra.Command {
	var who callerFlags
	cmd := &cobra.Command{
		Use:   "publish FILE...",
		Short: "Publish event messages to the public API, as a publisher system",
		Long: `Publish event messages (FHIR Bundles, XML or JSON) to the public
$process-message API as the publisher system with the given ASID: the server
checks them exactly as it would a publisher's. Every file is sent even if an
earlier one fails; the exit code is 0 only if all were accepted.`,
		Example: `  emsctl event publish --asid 200000000112 pds-change-of-address.xml
  emsctl event publish --asid 200000000112 \
      --interaction urn:nhs:names:services:events:PDS-Change-Of-Address-1.Write change.xml
  emsctl event publish --public https://ems.example.org --asid 200000000112 *.xml -o json`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var results []publishResult
			failed := 0
			for _, f := range args {
				r, err := publishFile(cmd.Context(), g, f, &who)
				if err != nil {
					return err
				}
				if r.Status != http.StatusAccepted {
					failed++
				}
				results = append(results, r)
			}
			t := newTable("FILE", "STATUS", "MESSAGE ID", "OUTCOME")
			for _, r := range results {
				t.add(r.File, strconv.Itoa(r.Status), r.MessageID, r.Outcome)
			}
			if err := g.show(cmd, mustJSON(results), t); err != nil {
				return err
			}
			if failed > 0 {
				return &exitError{exitFailure, fmt.Errorf("%d of %d messages not accepted", failed, len(args))}
			}
			return nil
		},
	}
	who.bind(cmd, "publisher")
	return cmd
}

// publishFile sends one file; a refused message is a result, not an error.
func publishFile(ctx context.Context, g *globals, file string, who *callerFlags) (publishResult, error) {
	body, err := readInput(g, file)
	if err != nil {
		return publishResult{}, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, g.public+broker.ProcessMessagePath, bytes.NewReader(body))
	if err != nil {
		return publishResult{}, &exitError{exitFailure, err}
	}
	req.Header.Set("Content-Type", fhirContentType(body))
	req.Header.Set("Accept", "application/fhir+json")
	if err := who.apply(req, os.Getenv); err != nil {
		return publishResult{}, err
	}
	resp, err := (&http.Client{Timeout: g.timeout}).Do(req)
	if err != nil {
		return publishResult{}, &exitError{exitFailure, fmt.Errorf("publishing %s: %w", file, err)}
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	r := publishResult{File: file, Status: resp.StatusCode, MessageID: resp.Header.Get("X-Event-Message-Id")}
	if len(bytes.TrimSpace(raw)) > 0 {
		r.Outcome = outcomeText(raw)
	}
	if r.Status == http.StatusAccepted && r.Outcome == "" {
		r.Outcome = "accepted"
	}
	r.Outcome = strings.TrimSpace(r.Outcome)
	return r, nil
}
