package config

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
)

// setting is one value that can be given as a flag and an environment
// variable. One table drives both, so they cannot drift apart.
type setting struct {
	flag, env, usage string
	isBool           bool
	get              func(c *Config) string
	set              func(c *Config, v string) error
}

func stringSetting(flag, env, usage string, field func(c *Config) *string) setting {
	return setting{
		flag: flag, env: env, usage: usage,
		get: func(c *Config) string { return *field(c) },
		set: func(c *Config, v string) error { *field(c) = v; return nil },
	}
}

var settings = []setting{
	stringSetting("data-dir", "EMS_DATA_DIR", "`directory` for everything the service persists",
		func(c *Config) *string { return &c.DataDir }),
	stringSetting("listen", "EMS_LISTEN", "FHIR API listen `address` (host:port)",
		func(c *Config) *string { return &c.Listen }),
	stringSetting("admin-listen", "EMS_ADMIN_LISTEN", "operator API listen `address` (host:port; empty disables it)",
		func(c *Config) *string { return &c.AdminListen }),
	stringSetting("log-level", "EMS_LOG_LEVEL", "log `level`: debug, info, warn, error",
		func(c *Config) *string { return &c.Log.Level }),
	stringSetting("log-format", "EMS_LOG_FORMAT", "log `format`: json, text",
		func(c *Config) *string { return &c.Log.Format }),
	stringSetting("nats-url", "EMS_NATS_URL", "external NATS server `URL` (default: run an embedded server)",
		func(c *Config) *string { return &c.NATS.URL }),
	{
		flag: "allow-invalid-nhs-number", env: "EMS_ALLOW_INVALID_NHS_NUMBER", isBool: true,
		usage: "accept NHS numbers failing the Modulus 11 check (test environments only)",
		get:   func(c *Config) string { return strconv.FormatBool(!c.Publish.CheckNHSNumber) },
		set: func(c *Config, v string) error {
			b, err := strconv.ParseBool(v)
			if err != nil {
				return fmt.Errorf("want true or false, got %q", v)
			}
			c.Publish.CheckNHSNumber = !b
			return nil
		},
	},
}

// EnvConfig names the environment variable that gives the config file when
// --config is not used.
const EnvConfig = "EMS_CONFIG"

// Flags holds the command-line flags registered by RegisterFlags. It
// records which flags were given itself (rather than relying on
// flag.FlagSet.Visit), so it also works when the flag set is wrapped by
// another flag library, e.g. pflag's AddGoFlagSet under cobra.
type Flags struct {
	configFile flagValue
	values     []*flagValue
}

type flagValue struct {
	s      *setting // nil for --config
	value  string
	given  bool
	isBool bool
	def    string
}

func (f *flagValue) String() string {
	if f == nil {
		return ""
	}
	if f.given {
		return f.value
	}
	return f.def
}

func (f *flagValue) Set(v string) error {
	if f.s != nil {
		// Check now, so the error names the flag.
		probe := Default()
		if err := f.s.set(&probe, v); err != nil {
			return err
		}
	}
	f.value, f.given = v, true
	return nil
}

func (f *flagValue) IsBoolFlag() bool { return f.isBool }

// RegisterFlags adds --config and the per-setting flags to fs. After fs is
// parsed, Flags.Load builds the Config.
func RegisterFlags(fs *flag.FlagSet) *Flags {
	f := &Flags{}
	fs.Var(&f.configFile, "config", "YAML configuration `file` (env "+EnvConfig+")")
	def := Default()
	for i := range settings {
		s := &settings[i]
		v := &flagValue{s: s, isBool: s.isBool, def: s.get(&def)}
		f.values = append(f.values, v)
		fs.Var(v, s.flag, fmt.Sprintf("%s (env %s)", s.usage, s.env))
	}
	return f
}

// Load builds the Config from, in increasing precedence: Default(), the
// config file (--config, else $EMS_CONFIG; none is fine), EMS_* environment
// variables, and the flags given. It then fills in derived paths, resolves
// secret references (env: through env, file: from disk) and validates.
func (f *Flags) Load(env func(string) string) (Config, error) {
	if env == nil {
		env = func(string) string { return "" }
	}
	c := Default()

	path := env(EnvConfig)
	if f.configFile.given {
		path = f.configFile.value
	}
	if path != "" {
		data, err := os.ReadFile(path)
		if err != nil {
			return Config{}, fmt.Errorf("reading config file: %w", err)
		}
		if err := c.decode(data); err != nil {
			return Config{}, fmt.Errorf("config file %s: %w", path, err)
		}
	}

	for i := range settings {
		s := &settings[i]
		v := env(s.env)
		if v == "" {
			continue
		}
		if err := s.set(&c, v); err != nil {
			return Config{}, fmt.Errorf("environment variable %s: %w", s.env, err)
		}
	}

	for _, v := range f.values {
		if !v.given {
			continue
		}
		if err := v.s.set(&c, v.value); err != nil {
			return Config{}, fmt.Errorf("flag --%s: %w", v.s.flag, err)
		}
	}

	if err := c.finish(env); err != nil {
		return Config{}, err
	}
	return c, nil
}

// Parse is RegisterFlags, flag parsing and Load in one call, for a program
// whose only flags are these. It returns flag.ErrHelp for -h; the usage text
// is not printed (see Usage).
func Parse(args []string, env func(string) string) (Config, error) {
	fs := flag.NewFlagSet("emsd", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	f := RegisterFlags(fs)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return Config{}, err
		}
		return Config{}, fmt.Errorf("parsing flags: %w", err)
	}
	if fs.NArg() > 0 {
		return Config{}, fmt.Errorf("unexpected arguments: %q", fs.Args())
	}
	return f.Load(env)
}

// Usage writes the flags, their environment variables and defaults.
func Usage(w io.Writer) {
	fs := flag.NewFlagSet("emsd", flag.ContinueOnError)
	RegisterFlags(fs)
	fs.SetOutput(w)
	fs.PrintDefaults()
}
