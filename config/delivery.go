package config

import (
	"fmt"
	"net/netip"
	"regexp"
	"sort"
	"time"
)

// Delivery configures how matched events reach subscribers: the built-in
// MESH mailboxes and signed webhooks, with their retry policy.
type Delivery struct {
	Mesh    DeliveryMesh    `yaml:"mesh"`
	Webhook DeliveryWebhook `yaml:"webhook"`
	Retry   Retry           `yaml:"retry"`
	// Concurrency is the in-flight webhook limit per endpoint.
	Concurrency int     `yaml:"concurrency"`
	Breaker     Breaker `yaml:"breaker"`
	// Endpoints overrides the retry policy and concurrency of one
	// endpoint, keyed by its channel.endpoint (URL).
	Endpoints map[string]EndpointOverride `yaml:"endpoints"`
	// FanoutWorkers match events in parallel (events of one patient stay
	// in order). Each event waits on disk (the demographics write, the
	// jobs' JetStream acks) far longer than on CPU, so there are many more
	// workers than cores: their writes share one fsync.
	FanoutWorkers int `yaml:"fanout_workers"`
	// Yield holds delivery back while publishing is busy, so that
	// publishers are answered first and deliveries catch up afterwards.
	Yield Yield `yaml:"yield"`
}

// Yield configures how delivery gives way to publishing (package pace).
type Yield struct {
	// Enabled turns yielding on (the default).
	Enabled bool `yaml:"enabled"`
	// PublishLatency is the publish latency delivery gives way to defend,
	// above the fastest publish of the last few seconds: while more than
	// one publish request in a hundred takes longer, delivery is held
	// back further.
	PublishLatency time.Duration `yaml:"publish_latency"`
	// MinShare is the least delivery is held to while publishing is busy:
	// the share of the time one unit of delivery work at a time may take,
	// in (0, 1]. It keeps deliveries moving under any publishing load.
	MinShare float64 `yaml:"min_share"`
	// Quiet is how long after the last publish request delivery runs
	// freely again.
	Quiet time.Duration `yaml:"quiet"`
}

// DeliveryMesh configures the built-in MESH mailboxes (mesh.md).
type DeliveryMesh struct {
	// SharedKey is the environment's NHSMESH HMAC key.
	SharedKey Secret `yaml:"shared_key"`
	// Mailboxes are the mailboxes clients may read, keyed by mailbox id.
	Mailboxes map[string]Mailbox `yaml:"mailboxes"`
	// ChunkSize splits larger messages into chunks on retrieve.
	ChunkSize ByteSize `yaml:"chunk_size"`
	// MaxClockSkew bounds an NHSMESH token's timestamp.
	MaxClockSkew time.Duration `yaml:"max_clock_skew"`
	// InboxRetention is how long a message may stay unacknowledged before
	// it is reported (never dropped).
	InboxRetention time.Duration `yaml:"inbox_retention"`
	// From is the Mex-From of delivered messages.
	From string `yaml:"from"`
}

// Mailbox is one built-in MESH mailbox.
type Mailbox struct {
	Password Secret `yaml:"password"`
	// ODS is the organisation owning the mailbox.
	ODS string `yaml:"ods"`
}

// DeliveryWebhook configures rest-hook deliveries.
type DeliveryWebhook struct {
	Timeout time.Duration `yaml:"timeout"`
	// SigningSecrets sign every request (Standard Webhooks, "whsec_…" or
	// raw); list the new one first and keep the old one during rotation.
	SigningSecrets []Secret `yaml:"signing_secrets"`
	// AllowNetworks are CIDRs the SSRF guard lets through although they
	// are loopback, private or link-local (e.g. 127.0.0.0/8 for tests).
	AllowNetworks []string `yaml:"allow_networks"`
	MaxRedirects  int      `yaml:"max_redirects"`
	// AllowHTTP accepts http:// rest-hook endpoints in subscriptions
	// (local development and tests); otherwise https is required.
	AllowHTTP bool `yaml:"allow_http"`
}

// Retry is a capped exponential backoff with full jitter.
type Retry struct {
	Initial    time.Duration `yaml:"initial"`
	Max        time.Duration `yaml:"max"`
	Multiplier int           `yaml:"multiplier"`
	// MaxAttempts and MaxAge end the retries, whichever comes first.
	MaxAttempts int           `yaml:"max_attempts"`
	MaxAge      time.Duration `yaml:"max_age"`
	// RetryAfterMax bounds an endpoint's Retry-After.
	RetryAfterMax time.Duration `yaml:"retry_after_max"`
}

// EndpointOverride changes one endpoint's policy; zero fields inherit.
type EndpointOverride struct {
	Retry       Retry `yaml:"retry"`
	Concurrency int   `yaml:"concurrency"`
}

// Breaker configures the per-endpoint circuit breakers.
type Breaker struct {
	Failures    int           `yaml:"failures"`
	Cooldown    time.Duration `yaml:"cooldown"`
	MaxCooldown time.Duration `yaml:"max_cooldown"`
	// Window and FailurePercent also open it when that share of the last
	// Window attempts failed.
	Window         int `yaml:"window"`
	FailurePercent int `yaml:"failure_percent"`
}

// DefaultDelivery retries webhooks for 24 hours.
func DefaultDelivery() Delivery {
	return Delivery{
		Mesh:    DeliveryMesh{ChunkSize: 20 << 20, MaxClockSkew: 2 * time.Hour, InboxRetention: 5 * 24 * time.Hour, From: "EMS"},
		Webhook: DeliveryWebhook{Timeout: 10 * time.Second, MaxRedirects: 3},
		Retry: Retry{Initial: 10 * time.Second, Max: time.Hour, Multiplier: 2, MaxAttempts: 100,
			MaxAge: 24 * time.Hour, RetryAfterMax: time.Hour},
		Concurrency:   4,
		Breaker:       Breaker{Failures: 5, Cooldown: 30 * time.Second, MaxCooldown: 10 * time.Minute, Window: 20, FailurePercent: 50},
		FanoutWorkers: 32,
		Yield:         Yield{Enabled: true, PublishLatency: 10 * time.Millisecond, MinShare: 0.05, Quiet: 250 * time.Millisecond},
	}
}

// Merged is the endpoint's retry policy with the global one filling in.
func (r Retry) Merged(global Retry) Retry {
	if r.Initial == 0 {
		r.Initial = global.Initial
	}
	if r.Max == 0 {
		r.Max = global.Max
	}
	if r.Multiplier == 0 {
		r.Multiplier = global.Multiplier
	}
	if r.MaxAttempts == 0 {
		r.MaxAttempts = global.MaxAttempts
	}
	if r.MaxAge == 0 {
		r.MaxAge = global.MaxAge
	}
	if r.RetryAfterMax == 0 {
		r.RetryAfterMax = global.RetryAfterMax
	}
	return r
}

var mailboxID = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

func (d Delivery) validate(v *validator) {
	mbs := make([]string, 0, len(d.Mesh.Mailboxes))
	for mb := range d.Mesh.Mailboxes {
		mbs = append(mbs, mb)
	}
	sort.Strings(mbs)
	for _, mb := range mbs {
		field := "delivery.mesh.mailboxes." + mb
		if !mailboxID.MatchString(mb) {
			v.add(field, "mailbox id must be 1-64 letters, digits, _ or -")
		}
		if !d.Mesh.Mailboxes[mb].Password.IsSet() {
			v.add(field+".password", "is required")
		}
	}
	if len(mbs) > 0 && !d.Mesh.SharedKey.IsSet() {
		v.add("delivery.mesh.shared_key", "is required when mailboxes are configured")
	}
	v.positiveSize("delivery.mesh.chunk_size", d.Mesh.ChunkSize)
	v.positive("delivery.mesh.max_clock_skew", d.Mesh.MaxClockSkew)
	v.positive("delivery.mesh.inbox_retention", d.Mesh.InboxRetention)
	v.positive("delivery.webhook.timeout", d.Webhook.Timeout)
	for i, s := range d.Webhook.SigningSecrets {
		if !s.IsSet() {
			v.add(fmt.Sprintf("delivery.webhook.signing_secrets[%d]", i), "is empty")
		}
	}
	for i, n := range d.Webhook.AllowNetworks {
		if _, err := netip.ParsePrefix(n); err != nil {
			v.add(fmt.Sprintf("delivery.webhook.allow_networks[%d]", i), "%q is not a CIDR prefix", n)
		}
	}
	d.Retry.validate(v, "delivery.retry")
	if d.Concurrency < 1 {
		v.add("delivery.concurrency", "must be at least 1")
	}
	if d.FanoutWorkers < 1 {
		v.add("delivery.fanout_workers", "must be at least 1")
	}
	if !(d.Yield.MinShare > 0 && d.Yield.MinShare <= 1) {
		v.add("delivery.yield.min_share", "must be above 0 and at most 1")
	}
	v.positive("delivery.yield.publish_latency", d.Yield.PublishLatency)
	v.positive("delivery.yield.quiet", d.Yield.Quiet)
	if d.Breaker.Failures < 1 {
		v.add("delivery.breaker.failures", "must be at least 1")
	}
	v.positive("delivery.breaker.cooldown", d.Breaker.Cooldown)
	if d.Breaker.MaxCooldown < d.Breaker.Cooldown {
		v.add("delivery.breaker.max_cooldown", "must not be below cooldown")
	}
	if d.Breaker.Window < 1 {
		v.add("delivery.breaker.window", "must be at least 1")
	}
	if d.Breaker.FailurePercent < 1 || d.Breaker.FailurePercent > 100 {
		v.add("delivery.breaker.failure_percent", "must be from 1 to 100")
	}
	eps := make([]string, 0, len(d.Endpoints))
	for ep := range d.Endpoints {
		eps = append(eps, ep)
	}
	sort.Strings(eps)
	for _, ep := range eps {
		o := d.Endpoints[ep]
		o.Retry.Merged(d.Retry).validate(v, "delivery.endpoints."+ep+".retry")
		if o.Concurrency < 0 {
			v.add("delivery.endpoints."+ep+".concurrency", "must not be negative")
		}
	}
}

func (r Retry) validate(v *validator, field string) {
	v.positive(field+".initial", r.Initial)
	if r.Max < r.Initial {
		v.add(field+".max", "must not be below initial")
	}
	if r.Multiplier < 1 {
		v.add(field+".multiplier", "must be at least 1")
	}
	if r.MaxAttempts < 1 {
		v.add(field+".max_attempts", "must be at least 1")
	}
	v.positive(field+".max_age", r.MaxAge)
	v.positive(field+".retry_after_max", r.RetryAfterMax)
}
