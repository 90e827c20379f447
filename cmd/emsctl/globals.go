package main

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"gopkg.in/yaml.v3"
)

// Defaults match emsd's own listen defaults.
const (
	defaultServer = "http://127.0.0.1:8081"
	defaultPublic = "http://127.0.0.1:8080"
)

// globals are the persistent flags and what they resolve to.
type globals struct {
	server, public, token string
	output                string
	noColor               bool
	configPath            string
	timeout               time.Duration

	stdin io.Reader
}

// fileConfig is the user's config file.
type fileConfig struct {
	Server string `yaml:"server"`
	Public string `yaml:"public"`
	Token  string `yaml:"token"`
}

func (g *globals) bind(root *cobra.Command) {
	f := root.PersistentFlags()
	f.StringVar(&g.server, "server", "", "admin API URL (env EMS_SERVER; default "+defaultServer+")")
	f.StringVar(&g.public, "public", "", "public FHIR API URL, for event publish (env EMS_PUBLIC; default "+defaultPublic+")")
	f.StringVar(&g.token, "token", "", "operator token (env EMS_TOKEN); prefer the env or config file: flags show in ps")
	f.StringVarP(&g.output, "output", "o", "table", "output format: table, json or yaml")
	f.BoolVar(&g.noColor, "no-color", false, "never colour the output (also env NO_COLOR)")
	f.StringVar(&g.configPath, "config", "", "config file (env EMSCTL_CONFIG; default <user config dir>/emsctl/config.yaml)")
	f.DurationVar(&g.timeout, "timeout", 60*time.Second, "time limit of each call to the server")
	_ = root.RegisterFlagCompletionFunc("output", func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
		return []string{"table", "json", "yaml"}, cobra.ShellCompDirectiveNoFileComp
	})
}

// resolve fills unset values from the environment and then the config file,
// and checks them. Flags win over the environment, which wins over the file.
func (g *globals) resolve(cmd *cobra.Command) error {
	switch g.output {
	case "table", "json", "yaml":
	default:
		return usageErr("--output %q: use table, json or yaml", g.output)
	}
	if os.Getenv("NO_COLOR") != "" {
		g.noColor = true
	}
	fromEnv := func(v *string, key string) {
		if *v == "" {
			*v = os.Getenv(key)
		}
	}
	fromEnv(&g.server, "EMS_SERVER")
	fromEnv(&g.public, "EMS_PUBLIC")
	fromEnv(&g.token, "EMS_TOKEN")
	fromEnv(&g.configPath, "EMSCTL_CONFIG")
	explicit := g.configPath != ""
	if !explicit {
		if dir, err := os.UserConfigDir(); err == nil {
			g.configPath = filepath.Join(dir, "emsctl", "config.yaml")
		}
	}
	if g.configPath != "" {
		fc, err := readConfig(g.configPath)
		switch {
		case errors.Is(err, fs.ErrNotExist) && !explicit:
		case err != nil:
			return usageErr("%w", err)
		default:
			fromEnv := func(v *string, file string) {
				if *v == "" {
					*v = file
				}
			}
			fromEnv(&g.server, fc.Server)
			fromEnv(&g.public, fc.Public)
			fromEnv(&g.token, fc.Token)
		}
	}
	if g.server == "" {
		g.server = defaultServer
	}
	if g.public == "" {
		g.public = defaultPublic
	}
	for name, v := range map[string]*string{"--server": &g.server, "--public": &g.public} {
		u, err := url.Parse(*v)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return usageErr("%s %q: want an http or https URL such as %s", name, *v, defaultServer)
		}
		*v = strings.TrimRight(*v, "/")
	}
	return nil
}

func readConfig(path string) (fileConfig, error) {
	var fc fileConfig
	b, err := os.ReadFile(path)
	if err != nil {
		return fc, fmt.Errorf("reading config %s: %w", path, err)
	}
	dec := yaml.NewDecoder(strings.NewReader(string(b)))
	dec.KnownFields(true)
	if err := dec.Decode(&fc); err != nil && !errors.Is(err, io.EOF) {
		return fc, fmt.Errorf("config %s: %w", path, err)
	}
	return fc, nil
}

// admin returns the admin API client; it needs a token.
func (g *globals) admin() (*client, error) {
	if g.token == "" {
		return nil, usageErr("no operator token: pass --token, set EMS_TOKEN or put token: in %s", g.configPath)
	}
	return newClient(g.server, g.token, g.timeout), nil
}
