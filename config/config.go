// Package config turns a YAML file, EMS_* environment variables and
// command-line flags into one typed Config, in that order of precedence
// (flags win). It owns the shape of the file, strict decoding (an unknown or
// misspelt key is an error naming the key and its line, never silently
// ignored), validation with errors that name the field, and secrets that
// redact themselves whenever they are printed or marshalled.
//
// It imports no other package of this module, opens no connection and starts
// nothing: the composition root (cmd/emsd) maps Config onto each package's
// Options.
package config

import (
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// Config is the whole service configuration. The YAML keys are the yaml tags;
// config/example.yaml documents every key.
type Config struct {
	// DataDir holds everything the service persists unless a path below
	// says otherwise.
	DataDir string `yaml:"data_dir"`
	// Listen is the address of the FHIR API (publish, Subscription).
	Listen string `yaml:"listen"`
	// AdminListen is the address of the operator API; empty disables it.
	AdminListen string `yaml:"admin_listen"`
	// AdminToken, when set, is a bearer token of the operator API, for an
	// operator named "admin"; Admin.Tokens names several.
	AdminToken Secret `yaml:"admin_token"`
	Admin      Admin  `yaml:"admin"`

	Log           Log              `yaml:"log"`
	NATS          NATS             `yaml:"nats"`
	Bbolt         Bbolt            `yaml:"bbolt"`
	Publish       Publish          `yaml:"publish"`
	Events        map[string]Event `yaml:"events"`
	Registry      Registry         `yaml:"registry"`
	Subscriptions Subscriptions    `yaml:"subscriptions"`
	HTTP          HTTP             `yaml:"http"`
	Delivery      Delivery         `yaml:"delivery"`
	Security      Security         `yaml:"security"`
	Cluster       Cluster          `yaml:"cluster"`
}

// Admin configures the operator API.
type Admin struct {
	// Tokens are the operators' bearer tokens, each with the name the
	// audit log records.
	Tokens []AdminToken `yaml:"tokens"`
	// AuditRetention is how long audit entries are kept; zero keeps them
	// all.
	AuditRetention time.Duration `yaml:"audit_retention"`
}

// AdminToken is one operator credential.
type AdminToken struct {
	Name  string `yaml:"name"`
	Token Secret `yaml:"token"`
}

// Log configures the structured logger.
type Log struct {
	Level  string `yaml:"level"`  // debug, info, warn, error
	Format string `yaml:"format"` // json, text
}

// NATS says which NATS server carries the event stream: an external one when
// URL or URLs is set, otherwise one embedded in the process.
type NATS struct {
	URL             string       `yaml:"url"`
	URLs            []string     `yaml:"urls"`
	CredentialsFile string       `yaml:"credentials_file"`
	Token           Secret       `yaml:"token"`
	Embedded        Embedded     `yaml:"embedded"`
	EventsStream    EventsStream `yaml:"events_stream"`
}

// External reports whether the service connects to a NATS server it does
// not run itself.
func (n NATS) External() bool { return n.URL != "" || len(n.URLs) > 0 }

// Servers is URL followed by URLs: every server an external connection may
// use.
func (n NATS) Servers() []string {
	var out []string
	if n.URL != "" {
		out = append(out, n.URL)
	}
	return append(out, n.URLs...)
}

// Embedded configures the in-process nats-server (used when NATS.External
// is false).
type Embedded struct {
	// ClientListen is a host:port for other processes to reach the embedded
	// server; empty means in-process connections only.
	ClientListen string `yaml:"client_listen"`
	// StoreDir is the JetStream directory; Parse and Load default it to
	// <data_dir>/jetstream.
	StoreDir string `yaml:"store_dir"`
	// Sync is "interval" (fsync every SyncInterval, the nats-server
	// default) or "always" (fsync every write).
	Sync         string        `yaml:"sync"`
	SyncInterval time.Duration `yaml:"sync_interval"`
	// MaxMemory and MaxStore cap JetStream; zero keeps the nats-server
	// defaults (a share of the machine's memory and disk).
	MaxMemory ByteSize `yaml:"max_memory"`
	MaxStore  ByteSize `yaml:"max_store"`
}

// Sync policies.
const (
	SyncInterval = "interval"
	SyncAlways   = "always"
)

// EventsStream configures the JetStream stream that holds published events.
type EventsStream struct {
	Name string `yaml:"name"`
	// Retention is how long an event is kept (the stream's MaxAge): the
	// window in which delivery can be retried or replayed.
	Retention time.Duration `yaml:"retention"`
	// DuplicateWindow is how long a message ID is remembered, so a
	// publisher's retry of an accepted event is not published twice.
	DuplicateWindow time.Duration `yaml:"duplicate_window"`
	Replicas        int           `yaml:"replicas"`
	// MaxBytes caps the stream; zero means unlimited.
	MaxBytes ByteSize `yaml:"max_bytes"`
}

// Bbolt configures the database of subscriptions and delivery state.
type Bbolt struct {
	// Path defaults to <data_dir>/ems.db.
	Path string `yaml:"path"`
	// ResidentLimit bounds the pages of the database file emsd keeps
	// mapped: past it (checked each second) the map's pages are released
	// with MADV_DONTNEED. They stay in the page cache, so a later read is
	// a minor fault without I/O. 0 keeps every page touched mapped.
	ResidentLimit ByteSize `yaml:"resident_limit"`
}

// Publish configures the publish ($process-message) endpoint.
type Publish struct {
	MaxBodyBytes ByteSize `yaml:"max_body_bytes"`
	AllowJSON    bool     `yaml:"allow_json"`
	// CheckNHSNumber enforces the Modulus 11 check digit of NHS numbers.
	// Test environments turn it off (--allow-invalid-nhs-number) because
	// test data often uses numbers that fail it; ten digits are still
	// required.
	CheckNHSNumber bool `yaml:"check_nhs_number"`
	// MaxIssues caps the issues of one OperationOutcome.
	MaxIssues int `yaml:"max_issues"`
	// ValidateProfiles checks every resource against the CareConnect and
	// EMS profiles its event requires, on top of the NEMS message rules.
	ValidateProfiles bool `yaml:"validate_profiles"`
	// MaxInFlight bounds the messages processed at once; a request that
	// waits QueueWait without a slot is answered 429 with Retry-After, so
	// that overload costs callers a retry, not the service its memory.
	MaxInFlight int           `yaml:"max_in_flight"`
	QueueWait   time.Duration `yaml:"queue_wait"`
}

// Event overrides one event type of the catalogue. It mirrors
// fhir/catalog.Override without importing it; zero fields keep the
// catalogue's value.
type Event struct {
	Enabled         *bool  `yaml:"enabled,omitempty"`
	State           string `yaml:"state,omitempty"` // active, deprecated, no-longer-supported, withdrawn
	DeprecationDate Date   `yaml:"deprecation_date,omitempty"`
	InfoURL         string `yaml:"info_url,omitempty"`
}

// Event lifecycle states (publish.md §5), as written in the file.
var eventStates = []string{"active", "deprecated", "no-longer-supported", "withdrawn"}

// Registry is the static table of known systems, keyed by ASID. Until
// authentication lands it is how a publisher's fromASID is tied to the ODS
// code it may publish for.
type Registry struct {
	ASIDs map[string]ASID `yaml:"asids"`
}

// ASID is one registered system.
type ASID struct {
	ODS             string   `yaml:"ods"`
	PublishEvents   []string `yaml:"publish_events"`
	SubscribeEvents []string `yaml:"subscribe_events"`
	Mailboxes       []string `yaml:"mailboxes"`
}

// Subscriptions configures the Subscription resource.
type Subscriptions struct {
	// AutoActivate lists who gets new subscriptions activated at once;
	// everyone else's wait in "requested" for an operator. Empty: all are
	// activated at creation, as NEMS does.
	AutoActivate []AutoActivate `yaml:"auto_activate"`
	// Duplicates is "reject" (a second identical subscription is a 409,
	// as in NEMS) or "allow".
	Duplicates          string        `yaml:"duplicates"`
	ExpirySweepInterval time.Duration `yaml:"expiry_sweep_interval"`
}

// AutoActivate matches subscriptions by the subscriber's ODS code and kind;
// "*" matches any.
type AutoActivate struct {
	ODS  string `yaml:"ods"`
	Kind string `yaml:"kind"` // explicit, generic, *
}

// Duplicate-subscription policies.
const (
	DuplicatesReject = "reject"
	DuplicatesAllow  = "allow"
)

// HTTP configures both HTTP servers.
type HTTP struct {
	ReadHeaderTimeout time.Duration `yaml:"read_header_timeout"`
	ReadTimeout       time.Duration `yaml:"read_timeout"`
	WriteTimeout      time.Duration `yaml:"write_timeout"`
	IdleTimeout       time.Duration `yaml:"idle_timeout"`
	// ShutdownTimeout bounds the graceful drain of in-flight requests.
	ShutdownTimeout time.Duration `yaml:"shutdown_timeout"`
}

// Default returns the configuration used when nothing is given. Paths
// derived from DataDir (NATS.Embedded.StoreDir, Bbolt.Path) are left empty
// here and filled in by Load, LoadFile and Parse once DataDir is final.
func Default() Config {
	return Config{
		DataDir:     "./ems-data",
		Listen:      "127.0.0.1:8080",
		AdminListen: "127.0.0.1:8081",
		Admin:       Admin{AuditRetention: 90 * 24 * time.Hour},
		Log:         Log{Level: "info", Format: "json"},
		NATS: NATS{
			Embedded: Embedded{
				Sync:         SyncInterval,
				SyncInterval: 2 * time.Minute,
			},
			EventsStream: EventsStream{
				Name:            "EMS_EVENTS",
				Retention:       168 * time.Hour,
				DuplicateWindow: time.Hour,
				Replicas:        1,
			},
		},
		Bbolt: Bbolt{ResidentLimit: 96 << 20},
		Publish: Publish{
			MaxBodyBytes:     3 << 20,
			AllowJSON:        true,
			CheckNHSNumber:   true,
			MaxIssues:        100,
			ValidateProfiles: true,
			MaxInFlight:      64,
			QueueWait:        time.Second,
		},
		Subscriptions: Subscriptions{
			Duplicates:          DuplicatesReject,
			ExpirySweepInterval: time.Minute,
		},
		Delivery: DefaultDelivery(),
		Security: DefaultSecurity(),
		Cluster:  DefaultCluster(),
		HTTP: HTTP{
			ReadHeaderTimeout: 10 * time.Second,
			ReadTimeout:       30 * time.Second,
			WriteTimeout:      30 * time.Second,
			IdleTimeout:       120 * time.Second,
			ShutdownTimeout:   20 * time.Second,
		},
	}
}

// Load parses a YAML document over Default(), fills in derived paths,
// resolves secret references (from the process environment and files) and
// validates the result. It is the whole pipeline minus environment and
// flags, for tests, fuzzing and `config check`.
func Load(data []byte) (Config, error) {
	c := Default()
	if err := c.decode(data); err != nil {
		return Config{}, err
	}
	return c, c.finish(os.Getenv)
}

// LoadFile is Load of the named file.
func LoadFile(path string) (Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return Config{}, fmt.Errorf("reading config file: %w", err)
	}
	c, err := Load(data)
	if err != nil {
		return Config{}, fmt.Errorf("config file %s: %w", path, err)
	}
	return c, nil
}

// finish is the last step of every pipeline: derive paths from the final
// DataDir, resolve secret references, validate.
func (c *Config) finish(env func(string) string) error {
	if c.NATS.Embedded.StoreDir == "" {
		c.NATS.Embedded.StoreDir = filepath.Join(c.DataDir, "jetstream")
	}
	if c.Bbolt.Path == "" {
		c.Bbolt.Path = filepath.Join(c.DataDir, "ems.db")
	}
	if err := c.resolveSecrets(env, os.ReadFile); err != nil {
		return err
	}
	return c.Validate()
}

// resolveSecrets replaces every env:/file: reference by its value. It finds
// the Secrets by reflection, so a Secret field added later (MESH mailbox
// passwords, webhook secrets) cannot be forgotten here.
func (c *Config) resolveSecrets(env func(string) string, readFile func(string) ([]byte, error)) error {
	return eachSecret(reflect.ValueOf(c).Elem(), "", func(s *Secret, field string) error {
		if err := s.resolve(env, readFile); err != nil {
			return &FieldError{Field: field, Msg: err.Error()}
		}
		return nil
	})
}

// eachSecret calls fn for every Secret in v, which must be addressable,
// with its key path.
func eachSecret(v reflect.Value, path string, fn func(*Secret, string) error) error {
	if v.Type() == secretType {
		return fn(v.Addr().Interface().(*Secret), path)
	}
	switch v.Kind() {
	case reflect.Pointer:
		if v.IsNil() {
			return nil
		}
		return eachSecret(v.Elem(), path, fn)
	case reflect.Struct:
		t := v.Type()
		for i := 0; i < t.NumField(); i++ {
			name, _, _ := strings.Cut(t.Field(i).Tag.Get("yaml"), ",")
			if name == "" || name == "-" || !t.Field(i).IsExported() {
				continue
			}
			if err := eachSecret(v.Field(i), join(path, name), fn); err != nil {
				return err
			}
		}
	case reflect.Slice:
		for i := 0; i < v.Len(); i++ {
			if err := eachSecret(v.Index(i), fmt.Sprintf("%s[%d]", path, i), fn); err != nil {
				return err
			}
		}
	case reflect.Map:
		// Map values are not addressable: resolve a copy and store it back.
		// Sorted, so that the first error reported does not vary.
		keys := v.MapKeys()
		sort.Slice(keys, func(i, j int) bool { return fmt.Sprint(keys[i]) < fmt.Sprint(keys[j]) })
		for _, k := range keys {
			cp := reflect.New(v.Type().Elem()).Elem()
			cp.Set(v.MapIndex(k))
			if err := eachSecret(cp, join(path, fmt.Sprint(k)), fn); err != nil {
				return err
			}
			v.SetMapIndex(k, cp)
		}
	}
	return nil
}

// Redacted is the configuration as YAML with every secret masked: what
// `emsd config print` shows.
func (c Config) Redacted() string {
	var doc yaml.Node
	if err := doc.Encode(c); err != nil {
		// Every field type marshals; this would be a bug in this package.
		return fmt.Sprintf("# cannot marshal config: %v\n", err)
	}
	shortenDurations(&doc, reflect.TypeOf(c))
	out, err := yaml.Marshal(&doc)
	if err != nil {
		return fmt.Sprintf("# cannot marshal config: %v\n", err)
	}
	return string(out)
}

// shortenDurations rewrites durations as they would be typed (168h, not
// yaml.v3's 168h0m0s).
func shortenDurations(n *yaml.Node, t reflect.Type) {
	if t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch {
	case t == durationType:
		if d, err := time.ParseDuration(n.Value); err == nil {
			n.Value = formatDuration(d)
		}
	case t.Kind() == reflect.Struct && n.Kind == yaml.MappingNode:
		fields := yamlFields(t)
		for i := 0; i+1 < len(n.Content); i += 2 {
			if f, ok := fields[n.Content[i].Value]; ok {
				shortenDurations(n.Content[i+1], f.Type)
			}
		}
	case t.Kind() == reflect.Map && n.Kind == yaml.MappingNode:
		for i := 1; i < len(n.Content); i += 2 {
			shortenDurations(n.Content[i], t.Elem())
		}
	case t.Kind() == reflect.Slice && n.Kind == yaml.SequenceNode:
		for _, item := range n.Content {
			shortenDurations(item, t.Elem())
		}
	}
}

// String is Redacted, so that printing a Config with %v never shows a
// secret.
func (c Config) String() string { return c.Redacted() }
