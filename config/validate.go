package config

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
)

// FieldError is a value that decodes but makes no sense. Field is the
// dotted YAML key path, whatever layer (file, environment, flag) set it.
type FieldError struct {
	Field string
	Msg   string
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Msg }

// Validate reports every invalid field at once (joined; use errors.As with
// *FieldError to inspect them), in a stable order.
func (c Config) Validate() error {
	v := &validator{}

	v.nonEmpty("data_dir", c.DataDir)
	v.address("listen", c.Listen, false)
	v.address("admin_listen", c.AdminListen, true)
	// Port 0 asks the kernel for a free port, so two ":0" listeners never
	// collide.
	if c.AdminListen != "" && c.AdminListen == c.Listen && !strings.HasSuffix(c.Listen, ":0") {
		v.add("admin_listen", "must differ from listen (%q)", c.Listen)
	}
	names := map[string]bool{}
	if c.AdminToken.IsSet() {
		names["admin"] = true
	}
	for i, t := range c.Admin.Tokens {
		field := fmt.Sprintf("admin.tokens[%d]", i)
		switch {
		case t.Name == "":
			v.add(field+".name", "is required: the audit log records it")
		case names[t.Name]:
			v.add(field+".name", "%q is used twice (admin_token is named \"admin\")", t.Name)
		}
		names[t.Name] = true
		if !t.Token.IsSet() {
			v.add(field+".token", "is required")
		}
	}
	if c.Admin.AuditRetention < 0 {
		v.add("admin.audit_retention", "must not be negative")
	}
	v.oneOf("log.level", c.Log.Level, "debug", "info", "warn", "error")
	v.oneOf("log.format", c.Log.Format, "json", "text")
	c.Delivery.validate(v)
	c.Security.validate(v, c.Registry)

	c.validateNATS(v)
	c.validateCluster(v)

	if c.Bbolt.Path != "" && strings.HasSuffix(c.Bbolt.Path, "/") {
		v.add("bbolt.path", "must name a file, got directory %q", c.Bbolt.Path)
	}
	v.nonNegativeSize("bbolt.resident_limit", c.Bbolt.ResidentLimit)

	v.positiveSize("publish.max_body_bytes", c.Publish.MaxBodyBytes)
	if c.Publish.MaxIssues <= 0 {
		v.add("publish.max_issues", "must be a positive integer, got %d", c.Publish.MaxIssues)
	}
	if c.Publish.MaxInFlight <= 0 {
		v.add("publish.max_in_flight", "must be a positive integer, got %d", c.Publish.MaxInFlight)
	}
	v.positive("publish.queue_wait", c.Publish.QueueWait)

	for _, code := range sortedKeys(c.Events) {
		e := c.Events[code]
		field := "events." + code
		if !eventCodeRE.MatchString(code) {
			v.add(field, "not an event code (lower-case words joined by '-', ending in a version such as -1)")
		}
		if e.State != "" && !slices.Contains(eventStates, e.State) {
			v.add(field+".state", "must be one of %s, got %q", strings.Join(eventStates, ", "), e.State)
		}
		if e.InfoURL != "" {
			v.httpURL(field+".info_url", e.InfoURL)
		}
	}

	for _, asid := range sortedKeys(c.Registry.ASIDs) {
		a := c.Registry.ASIDs[asid]
		field := "registry.asids." + asid
		if !asidRE.MatchString(asid) {
			v.add(field, "an ASID is 1 to 12 digits")
		}
		switch {
		case a.ODS == "":
			v.add(field+".ods", "is required")
		case !odsRE.MatchString(a.ODS):
			v.add(field+".ods", "an ODS code is 3 to 10 letters or digits, got %q", a.ODS)
		}
		for i, code := range a.PublishEvents {
			if !eventCodeRE.MatchString(code) {
				v.add(fmt.Sprintf("%s.publish_events[%d]", field, i), "not an event code: %q", code)
			}
		}
		for i, code := range a.SubscribeEvents {
			if !eventCodeRE.MatchString(code) {
				v.add(fmt.Sprintf("%s.subscribe_events[%d]", field, i), "not an event code: %q", code)
			}
		}
		for i, mb := range a.Mailboxes {
			if !mailboxRE.MatchString(mb) {
				v.add(fmt.Sprintf("%s.mailboxes[%d]", field, i), "a MESH mailbox ID is 1 to 20 letters, digits, _ or -, got %q", mb)
			}
		}
	}

	for i, r := range c.Subscriptions.AutoActivate {
		field := fmt.Sprintf("subscriptions.auto_activate[%d]", i)
		if r.ODS != "*" && !odsRE.MatchString(r.ODS) {
			v.add(field+".ods", `must be "*" or an ODS code (3 to 10 letters or digits), got %q`, r.ODS)
		}
		v.oneOf(field+".kind", r.Kind, "explicit", "generic", "*")
	}
	v.oneOf("subscriptions.duplicates", c.Subscriptions.Duplicates, DuplicatesReject, DuplicatesAllow)
	v.positive("subscriptions.expiry_sweep_interval", c.Subscriptions.ExpirySweepInterval)

	// Zero timeouts would mean "no timeout" to net/http: a slow client
	// could then hold a connection for ever.
	v.positive("http.read_header_timeout", c.HTTP.ReadHeaderTimeout)
	v.positive("http.read_timeout", c.HTTP.ReadTimeout)
	v.positive("http.write_timeout", c.HTTP.WriteTimeout)
	v.positive("http.idle_timeout", c.HTTP.IdleTimeout)
	v.positive("http.shutdown_timeout", c.HTTP.ShutdownTimeout)

	return errors.Join(v.errs...)
}

func (c Config) validateNATS(v *validator) {
	n := c.NATS
	if n.URL != "" {
		v.natsURL("nats.url", n.URL)
	}
	for i, u := range n.URLs {
		v.natsURL(fmt.Sprintf("nats.urls[%d]", i), u)
	}
	if !n.External() {
		if n.CredentialsFile != "" {
			v.add("nats.credentials_file", "only applies to an external server (set nats.url)")
		}
		if n.Token.IsSet() {
			v.add("nats.token", "only applies to an external server (set nats.url)")
		}
	}
	if n.CredentialsFile != "" && n.Token.IsSet() {
		v.add("nats.token", "give either nats.credentials_file or nats.token, not both")
	}

	e := n.Embedded
	v.address("nats.embedded.client_listen", e.ClientListen, true)
	v.oneOf("nats.embedded.sync", e.Sync, SyncInterval, SyncAlways)
	if e.Sync == SyncInterval {
		v.positive("nats.embedded.sync_interval", e.SyncInterval)
	}
	v.nonNegativeSize("nats.embedded.max_memory", e.MaxMemory)
	v.nonNegativeSize("nats.embedded.max_store", e.MaxStore)

	s := n.EventsStream
	if !streamNameRE.MatchString(s.Name) {
		v.add("nats.events_stream.name", "a stream name is letters, digits, '-' and '_', got %q", s.Name)
	}
	v.positive("nats.events_stream.retention", s.Retention)
	v.positive("nats.events_stream.duplicate_window", s.DuplicateWindow)
	// JetStream refuses a duplicate window longer than the stream's MaxAge.
	if s.Retention > 0 && s.DuplicateWindow > s.Retention {
		v.add("nats.events_stream.duplicate_window", "must not exceed nats.events_stream.retention (%s), got %q",
			formatDuration(s.Retention), formatDuration(s.DuplicateWindow))
	}
	switch {
	case s.Replicas < 1 || s.Replicas > 5:
		v.add("nats.events_stream.replicas", "must be between 1 and 5, got %d", s.Replicas)
	case s.Replicas > 1 && !n.External():
		v.add("nats.events_stream.replicas", "the embedded server is a single node: replicas must be 1, got %d", s.Replicas)
	}
	v.nonNegativeSize("nats.events_stream.max_bytes", s.MaxBytes)
}

var (
	eventCodeRE  = regexp.MustCompile(`^[a-z0-9]+(-[a-z0-9]+)*-[0-9]+$`)
	asidRE       = regexp.MustCompile(`^[0-9]{1,12}$`)
	odsRE        = regexp.MustCompile(`^[A-Za-z0-9]{3,10}$`)
	mailboxRE    = regexp.MustCompile(`^[A-Za-z0-9_-]{1,20}$`)
	streamNameRE = regexp.MustCompile(`^[A-Za-z0-9_-]{1,255}$`)
)

type validator struct{ errs []error }

func (v *validator) add(field, format string, args ...any) {
	v.errs = append(v.errs, &FieldError{Field: field, Msg: fmt.Sprintf(format, args...)})
}

func (v *validator) nonEmpty(field, s string) {
	if s == "" {
		v.add(field, "is required")
	}
}

func (v *validator) oneOf(field, s string, allowed ...string) {
	if !slices.Contains(allowed, s) {
		quoted := make([]string, len(allowed))
		for i, a := range allowed {
			quoted[i] = strconv.Quote(a)
		}
		v.add(field, "must be one of %s, got %q", strings.Join(quoted, ", "), s)
	}
}

func (v *validator) positive(field string, d time.Duration) {
	if d <= 0 {
		v.add(field, "must be a positive duration, got %q", formatDuration(d))
	}
}

func (v *validator) positiveSize(field string, b ByteSize) {
	if b <= 0 {
		v.add(field, "must be a positive size, got %d", int64(b))
	}
}

func (v *validator) nonNegativeSize(field string, b ByteSize) {
	if b < 0 {
		v.add(field, "must not be negative, got %d", int64(b))
	}
}

// address checks a host:port listen address; the port may be 0 (pick one).
func (v *validator) address(field, addr string, optional bool) {
	if addr == "" {
		if !optional {
			v.add(field, "is required")
		}
		return
	}
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		v.add(field, "must be host:port, got %q", addr)
		return
	}
	if _, err := strconv.ParseUint(port, 10, 16); err != nil {
		v.add(field, "port must be a number 0-65535, got %q", port)
	}
}

func (v *validator) natsURL(field, s string) {
	u, err := url.Parse(s)
	if err != nil || u.Host == "" {
		v.add(field, "must be a URL such as nats://host:4222, got %q", s)
		return
	}
	switch u.Scheme {
	case "nats", "tls", "ws", "wss":
	default:
		v.add(field, "scheme must be nats, tls, ws or wss, got %q", u.Scheme)
	}
}

func (v *validator) httpURL(field, s string) {
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		v.add(field, "must be an absolute http(s) URL, got %q", s)
	}
}

// formatDuration writes d as it would be typed: 168h rather than
// 168h0m0s.
func formatDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
