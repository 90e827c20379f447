package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/ems-broker/ems/fhir"
)

// client calls the admin API. Every method returns the raw JSON answer too,
// so `-o json` shows exactly what the server said.
type client struct {
	base  string
	token string
	http  *http.Client
}

func newClient(base, token string, timeout time.Duration) *client {
	return &client{base: base, token: token, http: &http.Client{Timeout: timeout}}
}

// call sends one request and decodes a 2xx JSON answer into out (when not
// nil). Failures come back as *exitError with the code the answer's status
// implies and the server's own message.
func (c *client) call(ctx context.Context, method, path string, q url.Values, body io.Reader, contentType string, out any) (json.RawMessage, error) {
	u := c.base + path
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, method, u, body)
	if err != nil {
		return nil, &exitError{exitFailure, fmt.Errorf("%s %s: %w", method, path, err)}
	}
	if s, ok := body.(interface{ Size() int64 }); ok {
		req.ContentLength = s.Size()
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", "emsctl/"+version)
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // its text repeats the method and URL
		}
		return nil, &exitError{exitFailure, fmt.Errorf("%s %s: %w", method, c.base+path, err)}
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return nil, &exitError{exitFailure, fmt.Errorf("%s %s: reading the answer: %w", method, path, err)}
	}
	if resp.StatusCode >= 300 {
		return raw, adminFailure(method, path, resp, raw)
	}
	if out != nil {
		if err := json.Unmarshal(raw, out); err != nil {
			return raw, &exitError{exitFailure, fmt.Errorf("%s %s: the answer is not the expected JSON: %w", method, path, err)}
		}
	}
	return raw, nil
}

// adminFailure turns an error answer into an exit code and one line. The
// admin API answers {"error": "..."}; anything else (Go's plain-text "404
// page not found") means the server has no such route.
func adminFailure(method, path string, resp *http.Response, raw []byte) error {
	var e struct {
		Error string `json:"error"`
	}
	isJSON := strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") && json.Unmarshal(raw, &e) == nil && e.Error != ""
	if !isJSON {
		if resp.StatusCode == http.StatusNotFound || resp.StatusCode == http.StatusMethodNotAllowed {
			return &exitError{exitFailure, fmt.Errorf("%s %s: this emsd has no such admin route (%s); it may be older than this emsctl", method, path, resp.Status)}
		}
		msg := strings.TrimSpace(string(raw))
		if len(msg) > 200 {
			msg = msg[:200] + "..."
		}
		return &exitError{exitFailure, fmt.Errorf("%s %s: %s: %s", method, path, resp.Status, msg)}
	}
	code := exitFailure
	switch resp.StatusCode {
	case http.StatusNotFound:
		code = exitNotFound
	case http.StatusBadRequest:
		code = exitUsage
	case http.StatusUnauthorized:
		e.Error = "the server refused the operator token: " + e.Error
	}
	return &exitError{code, fmt.Errorf("%s %s: %s", method, path, e.Error)}
}

func (c *client) get(ctx context.Context, path string, q url.Values, out any) (json.RawMessage, error) {
	return c.call(ctx, http.MethodGet, path, q, nil, "", out)
}

func (c *client) postJSON(ctx context.Context, path string, q url.Values, in, out any) (json.RawMessage, error) {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return nil, &exitError{exitFailure, err}
		}
		body = bytes.NewReader(b)
	}
	return c.call(ctx, http.MethodPost, path, q, body, "application/json", out)
}

// outcomeText is the one-line summary of a FHIR OperationOutcome body: the
// Spine code and diagnostics of each error issue. It falls back to the raw
// body when the answer is not an OperationOutcome.
func outcomeText(body []byte) string {
	root, err := fhir.Parse(body, fhir.Sniff(body), fhir.DefaultLimits())
	if err != nil || root.ResourceType != "OperationOutcome" {
		s := strings.TrimSpace(string(body))
		if len(s) > 300 {
			s = s[:300] + "..."
		}
		return s
	}
	var parts []string
	for _, is := range root.ChildrenNamed("issue") {
		code := ""
		if cc := is.Get("details", "coding"); cc != nil {
			code = cc.Str("code")
		}
		text := is.Str("diagnostics")
		if text == "" {
			text = is.Str("details", "text")
		}
		p := strings.TrimSpace(code + " " + text)
		if ex := is.Str("expression"); ex != "" {
			p += " (at " + ex + ")"
		}
		parts = append(parts, p)
	}
	return strings.Join(parts, "; ")
}

func pathEscape(s string) string { return url.PathEscape(s) }
