package delivery

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/ems-broker/ems/fhir"
)

// Class is what an attempt's outcome means for the job.
type Class uint8

// Outcome classes.
const (
	Delivered Class = iota // 2xx
	Retry                  // 408, 429, 5xx, timeout, connection error
	Rejected               // other 4xx, 3xx left over, refused by the SSRF guard
	Gone                   // 410: the endpoint is gone for good
)

func (c Class) String() string {
	return [...]string{"delivered", "retry", "rejected", "gone"}[c]
}

// Result is one attempt's outcome.
type Result struct {
	Class      Class
	Status     int // 0 when no HTTP response
	Err        error
	RetryAfter time.Duration
	HasRetry   bool // a Retry-After was given
	Latency    time.Duration
}

// ErrBlockedAddress: the SSRF guard refused the destination.
var ErrBlockedAddress = errors.New("destination address not allowed")

// SenderOptions configure the webhook sender.
type SenderOptions struct {
	Timeout time.Duration
	// Secrets sign every request; all are used at once during rotation
	// ("whsec_<base64>" or raw). The first is the current one.
	Secrets []string
	// Allow lists networks the SSRF guard lets through although they are
	// loopback, private, link-local or otherwise internal.
	Allow []netip.Prefix
	// MaxRedirects followed (default 3); every hop is re-checked.
	MaxRedirects int
	Now          func() time.Time
}

// Sender posts jobs to webhooks.
type Sender struct {
	client  *http.Client
	secrets [][]byte
	now     func() time.Time
}

// NewSender returns a Sender.
func NewSender(o SenderOptions) (*Sender, error) {
	if o.Timeout <= 0 {
		o.Timeout = 10 * time.Second
	}
	if o.MaxRedirects <= 0 {
		o.MaxRedirects = 3
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	s := &Sender{now: o.Now}
	for i, sec := range o.Secrets {
		key := []byte(sec)
		if b64, ok := strings.CutPrefix(sec, "whsec_"); ok {
			var err error
			if key, err = base64.StdEncoding.DecodeString(b64); err != nil {
				return nil, fmt.Errorf("webhook secret %d: %w", i, err)
			}
		}
		s.secrets = append(s.secrets, key)
	}
	guard := &ssrfGuard{allow: o.Allow}
	dialer := &net.Dialer{Timeout: o.Timeout, Control: guard.control}
	tr := &http.Transport{
		Proxy:                 nil, // a proxy would dial on our behalf, past the guard
		DialContext:           dialer.DialContext,
		MaxIdleConnsPerHost:   8,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   o.Timeout,
		ResponseHeaderTimeout: o.Timeout,
	}
	s.client = &http.Client{Transport: tr, Timeout: o.Timeout,
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			if len(via) > o.MaxRedirects {
				return fmt.Errorf("more than %d redirects", o.MaxRedirects)
			}
			if req.URL.Scheme != "http" && req.URL.Scheme != "https" {
				return fmt.Errorf("%w: redirect to scheme %q", ErrBlockedAddress, req.URL.Scheme)
			}
			return nil
		}}
	return s, nil
}

// ssrfGuard refuses internal destinations at dial time, after DNS
// resolution, so neither a hostname resolving to 127.0.0.1 nor a redirect
// to an internal address gets through.
type ssrfGuard struct{ allow []netip.Prefix }

func (g *ssrfGuard) control(_, address string, _ syscall.RawConn) error {
	host, _, err := net.SplitHostPort(address)
	if err != nil {
		return fmt.Errorf("%w: %s", ErrBlockedAddress, address)
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return fmt.Errorf("%w: %s", ErrBlockedAddress, address)
	}
	if !g.permits(ip.Unmap()) {
		return fmt.Errorf("%w: %s", ErrBlockedAddress, ip)
	}
	return nil
}

var internalNets = []netip.Prefix{
	netip.MustParsePrefix("0.0.0.0/8"), netip.MustParsePrefix("100.64.0.0/10"),
	netip.MustParsePrefix("192.0.0.0/24"), netip.MustParsePrefix("198.18.0.0/15"),
	netip.MustParsePrefix("240.0.0.0/4"), netip.MustParsePrefix("64:ff9b::/96"),
}

func (g *ssrfGuard) permits(ip netip.Addr) bool {
	for _, p := range g.allow {
		if p.Contains(ip) {
			return true
		}
	}
	if ip.IsLoopback() || ip.IsPrivate() || ip.IsLinkLocalUnicast() || ip.IsLinkLocalMulticast() ||
		ip.IsMulticast() || ip.IsUnspecified() || ip.IsInterfaceLocalMulticast() {
		return false
	}
	for _, p := range internalNets {
		if p.Contains(ip) {
			return false
		}
	}
	return true
}

// Sign returns the Standard Webhooks signature header value for the given
// id, timestamp and body: one "v1,<base64>" per secret, space-separated.
func Sign(secrets [][]byte, id string, ts int64, body []byte) string {
	var sigs []string
	for _, key := range secrets {
		mac := hmac.New(sha256.New, key)
		mac.Write([]byte(id + "." + strconv.FormatInt(ts, 10) + "."))
		mac.Write(body)
		sigs = append(sigs, "v1,"+base64.StdEncoding.EncodeToString(mac.Sum(nil)))
	}
	return strings.Join(sigs, " ")
}

// body renders the job's payload choice.
func body(j *Job) ([]byte, string, error) {
	if j.Payload == "" {
		return nil, "", nil // id-only notification: the headers say which event
	}
	want, ok := fhir.FormatForContentType(j.Payload)
	if !ok {
		return nil, "", fmt.Errorf("unsupported channel.payload %q", j.Payload)
	}
	have, ok := fhir.FormatForContentType(j.ContentType)
	if !ok {
		have = fhir.Sniff(j.Body)
	}
	if have == want {
		return j.Body, want.ContentType(), nil
	}
	n, err := fhir.Parse(j.Body, have, fhir.DefaultLimits())
	if err != nil {
		return nil, "", fmt.Errorf("parsing event for conversion: %w", err)
	}
	out, err := fhir.Marshal(n, want, false)
	return out, want.ContentType(), err
}

// Send makes one attempt.
func (s *Sender) Send(ctx context.Context, j *Job) Result {
	start := s.now()
	res := s.send(ctx, j)
	res.Latency = s.now().Sub(start)
	return res
}

func (s *Sender) send(ctx context.Context, j *Job) Result {
	u, err := url.Parse(j.Endpoint)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return Result{Class: Rejected, Err: fmt.Errorf("endpoint %q is not an http(s) URL", j.Endpoint)}
	}
	b, ct, err := body(j)
	if err != nil {
		return Result{Class: Rejected, Err: err}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, j.Endpoint, bytes.NewReader(b))
	if err != nil {
		return Result{Class: Rejected, Err: err}
	}
	for _, hv := range j.Headers {
		k, v, ok := strings.Cut(hv, ":")
		if ok && strings.TrimSpace(k) != "" {
			req.Header.Add(strings.TrimSpace(k), strings.TrimSpace(v))
		}
	}
	if ct != "" {
		req.Header.Set("Content-Type", ct)
	}
	ts := s.now().Unix()
	req.Header.Set("webhook-id", j.ID)
	req.Header.Set("webhook-timestamp", strconv.FormatInt(ts, 10))
	if len(s.secrets) > 0 {
		req.Header.Set("webhook-signature", Sign(s.secrets, j.ID, ts, b))
	}
	req.Header.Set("X-Event-Message-Id", j.EventID)
	req.Header.Set("X-Event-Code", j.EventCode)
	req.Header.Set("User-Agent", "ems-delivery")
	resp, err := s.client.Do(req)
	if err != nil {
		if errors.Is(err, ErrBlockedAddress) {
			return Result{Class: Rejected, Err: err}
		}
		return Result{Class: Retry, Err: err}
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	res := Result{Status: resp.StatusCode}
	res.RetryAfter, res.HasRetry = RetryAfter(resp.Header.Get("Retry-After"), s.now())
	switch c := resp.StatusCode; {
	case c >= 200 && c < 300:
		res.Class = Delivered
	case c == http.StatusGone:
		res.Class = Gone
	case c == http.StatusRequestTimeout || c == http.StatusTooManyRequests || c >= 500:
		res.Class = Retry
	default:
		res.Class = Rejected
	}
	return res
}
