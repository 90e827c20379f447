package config

import (
	"bufio"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

var update = flag.Bool("update", false, "rewrite golden files in testdata/")

func TestDefaultIsValid(t *testing.T) {
	c := Default()
	if err := c.finish(func(string) string { return "" }); err != nil {
		t.Fatalf("defaults do not validate: %v", err)
	}
	checks := []struct {
		field     string
		got, want any
	}{
		{"data_dir", c.DataDir, "./ems-data"},
		{"listen", c.Listen, "127.0.0.1:8080"},
		{"admin_listen", c.AdminListen, "127.0.0.1:8081"},
		{"log.level", c.Log.Level, "info"},
		{"log.format", c.Log.Format, "json"},
		{"nats.url", c.NATS.URL, ""},
		{"nats external", c.NATS.External(), false},
		{"nats.embedded.client_listen", c.NATS.Embedded.ClientListen, ""},
		{"nats.embedded.store_dir", c.NATS.Embedded.StoreDir, filepath.Join("ems-data", "jetstream")},
		{"nats.embedded.sync", c.NATS.Embedded.Sync, "interval"},
		{"nats.embedded.sync_interval", c.NATS.Embedded.SyncInterval, 2 * time.Minute},
		{"nats.events_stream.name", c.NATS.EventsStream.Name, "EMS_EVENTS"},
		{"nats.events_stream.retention", c.NATS.EventsStream.Retention, 168 * time.Hour},
		{"nats.events_stream.duplicate_window", c.NATS.EventsStream.DuplicateWindow, time.Hour},
		{"nats.events_stream.replicas", c.NATS.EventsStream.Replicas, 1},
		{"nats.events_stream.max_bytes", c.NATS.EventsStream.MaxBytes, ByteSize(0)},
		{"bbolt.path", c.Bbolt.Path, filepath.Join("ems-data", "ems.db")},
		{"publish.max_body_bytes", c.Publish.MaxBodyBytes, ByteSize(3145728)},
		{"publish.allow_json", c.Publish.AllowJSON, true},
		{"publish.check_nhs_number", c.Publish.CheckNHSNumber, true},
		{"publish.max_issues", c.Publish.MaxIssues, 100},
		{"subscriptions.duplicates", c.Subscriptions.Duplicates, "reject"},
		{"subscriptions.expiry_sweep_interval", c.Subscriptions.ExpirySweepInterval, time.Minute},
		{"http.read_header_timeout", c.HTTP.ReadHeaderTimeout, 10 * time.Second},
		{"http.read_timeout", c.HTTP.ReadTimeout, 30 * time.Second},
		{"http.write_timeout", c.HTTP.WriteTimeout, 30 * time.Second},
		{"http.idle_timeout", c.HTTP.IdleTimeout, 120 * time.Second},
		{"http.shutdown_timeout", c.HTTP.ShutdownTimeout, 20 * time.Second},
		{"admin_token set", c.AdminToken.IsSet(), false},
	}
	for _, ch := range checks {
		if !reflect.DeepEqual(ch.got, ch.want) {
			t.Errorf("%s = %v, want %v", ch.field, ch.got, ch.want)
		}
	}
}

func TestLoadEmptyIsDefault(t *testing.T) {
	for _, doc := range []string{"", "\n", "# only a comment\n", "---\n", "null\n"} {
		got, err := Load([]byte(doc))
		if err != nil {
			t.Fatalf("Load(%q): %v", doc, err)
		}
		want := Default()
		if err := want.finish(os.Getenv); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("Load(%q) = %+v, want defaults", doc, got)
		}
	}
}

func TestLoadGoodFiles(t *testing.T) {
	t.Setenv("EMS_TEST_NATS_TOKEN", "nats-token-from-env")
	tests := []struct {
		file  string
		check func(t *testing.T, c Config)
	}{
		{"empty.yaml", func(t *testing.T, c Config) {
			if c.Listen != "127.0.0.1:8080" {
				t.Errorf("listen = %q", c.Listen)
			}
		}},
		{"overrides.yaml", func(t *testing.T, c Config) {
			if c.DataDir != "/var/lib/ems" || c.Listen != "0.0.0.0:8443" || c.AdminListen != "" {
				t.Errorf("top level not overridden: %+v", c)
			}
			// Derived paths follow the file's data_dir.
			if c.Bbolt.Path != "/var/lib/ems/ems.db" || c.NATS.Embedded.StoreDir != "/var/lib/ems/jetstream" {
				t.Errorf("derived paths: %q %q", c.Bbolt.Path, c.NATS.Embedded.StoreDir)
			}
			if c.Log.Level != "debug" || c.Log.Format != "json" {
				t.Errorf("log = %+v: level overridden, format kept", c.Log)
			}
			if c.NATS.Embedded.Sync != SyncAlways || c.NATS.Embedded.MaxStore != 10<<30 || c.NATS.Embedded.ClientListen != "127.0.0.1:4222" {
				t.Errorf("embedded = %+v", c.NATS.Embedded)
			}
			if c.NATS.EventsStream.Retention != 720*time.Hour || c.NATS.EventsStream.DuplicateWindow != time.Hour {
				t.Errorf("events_stream = %+v", c.NATS.EventsStream)
			}
			if c.Publish.MaxBodyBytes != 1<<20 || c.Publish.CheckNHSNumber || !c.Publish.AllowJSON {
				t.Errorf("publish = %+v", c.Publish)
			}
			want := []AutoActivate{{ODS: "RR8", Kind: "*"}, {ODS: "*", Kind: "generic"}}
			if !reflect.DeepEqual(c.Subscriptions.AutoActivate, want) || c.Subscriptions.Duplicates != DuplicatesAllow {
				t.Errorf("subscriptions = %+v", c.Subscriptions)
			}
			if c.HTTP.ShutdownTimeout != 5*time.Second || c.HTTP.IdleTimeout != 120*time.Second {
				t.Errorf("http = %+v", c.HTTP)
			}
		}},
		{"external-nats.yaml", func(t *testing.T, c Config) {
			if !c.NATS.External() {
				t.Error("not external")
			}
			want := []string{"nats://nats-0.example:4222", "tls://nats-1.example:4222", "tls://nats-2.example:4222"}
			if !reflect.DeepEqual(c.NATS.Servers(), want) {
				t.Errorf("servers = %q", c.NATS.Servers())
			}
			if c.NATS.EventsStream.Replicas != 3 || c.NATS.EventsStream.MaxBytes != 50<<30 {
				t.Errorf("events_stream = %+v", c.NATS.EventsStream)
			}
		}},
		{"secrets.yaml", func(t *testing.T, c Config) {
			if c.AdminToken.Value() != "s3cr3t-admin-token" || c.NATS.Token.Value() != "nats-token-from-env" {
				t.Errorf("secrets = %q %q", c.AdminToken.Value(), c.NATS.Token.Value())
			}
		}},
		{"anchors.yaml", func(t *testing.T, c Config) {
			a, b := c.Registry.ASIDs["200000000001"], c.Registry.ASIDs["200000000002"]
			if a.ODS != "A81001" || !reflect.DeepEqual(a, b) {
				t.Errorf("asids = %+v", c.Registry.ASIDs)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			c, err := LoadFile(filepath.Join("testdata", "good", tt.file))
			if err != nil {
				t.Fatal(err)
			}
			tt.check(t, c)
		})
	}
	// Every good file has a case above.
	files, _ := filepath.Glob("testdata/good/*.yaml")
	if len(files) != len(tests) {
		t.Errorf("%d files in testdata/good, %d cases", len(files), len(tests))
	}
}

// TestLoadBadFiles loads every file in testdata/bad; each starts with one or
// more "# want: <text>" lines, all of which must appear in the error.
func TestLoadBadFiles(t *testing.T) {
	files, err := filepath.Glob("testdata/bad/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no bad cases: %v", err)
	}
	for _, file := range files {
		t.Run(filepath.Base(file), func(t *testing.T) {
			wants := wantLines(t, file)
			_, err := LoadFile(file)
			if err == nil {
				t.Fatalf("loaded without error; want %q", wants)
			}
			for _, w := range wants {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error does not contain %q:\n%v", w, err)
				}
			}
			if !strings.Contains(err.Error(), file) {
				t.Errorf("error does not name the file %s: %v", file, err)
			}
		})
	}
}

func wantLines(t *testing.T, file string) []string {
	t.Helper()
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var wants []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		w, ok := strings.CutPrefix(sc.Text(), "# want: ")
		if !ok {
			break
		}
		wants = append(wants, w)
	}
	if len(wants) == 0 {
		t.Fatalf("%s has no '# want:' line", file)
	}
	return wants
}

func TestErrorTypes(t *testing.T) {
	_, err := Load([]byte("nats:\n  events_stream:\n    retention: -1h\n"))
	var fe *FieldError
	if !errors.As(err, &fe) || fe.Field != "nats.events_stream.retention" {
		t.Errorf("errors.As FieldError: %v (%#v)", err, fe)
	}
	_, err = Load([]byte("log:\n  levle: info\n"))
	var de *DecodeError
	if !errors.As(err, &de) || de.Line != 2 || de.Path != "log" {
		t.Errorf("errors.As DecodeError: %v (%#v)", err, de)
	}
}

func TestExampleLoadsAndDocumentsEveryKey(t *testing.T) {
	c, err := LoadFile("example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	// The example states the defaults; apart from the illustrative events,
	// registry, auto_activate and admin token entries it must equal them.
	want := Default()
	if err := want.finish(os.Getenv); err != nil {
		t.Fatal(err)
	}
	want.Events, want.Registry, want.Subscriptions.AutoActivate = c.Events, c.Registry, c.Subscriptions.AutoActivate
	want.Admin.Tokens = c.Admin.Tokens
	want.NATS.URLs = c.NATS.URLs // [] in the file, nil by default
	want.Delivery.Mesh.SharedKey, want.Delivery.Mesh.Mailboxes = c.Delivery.Mesh.SharedKey, c.Delivery.Mesh.Mailboxes
	want.Delivery.Webhook.SigningSecrets, want.Delivery.Webhook.AllowNetworks = c.Delivery.Webhook.SigningSecrets, c.Delivery.Webhook.AllowNetworks
	want.Delivery.Endpoints = c.Delivery.Endpoints
	want.Security.ServiceASIDs, want.Security.JWT.Keys, want.Security.TLS.CertASIDs, want.Security.SubscriptionKinds = c.Security.ServiceASIDs, c.Security.JWT.Keys, c.Security.TLS.CertASIDs, c.Security.SubscriptionKinds
	want.Security.JWT.Audiences = c.Security.JWT.Audiences // [] in the file, nil by default
	if !reflect.DeepEqual(c, want) {
		t.Errorf("example.yaml differs from the defaults:\n got %+v\nwant %+v", c, want)
	}

	data, err := os.ReadFile("example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		t.Fatal(err)
	}
	shown := map[string]bool{} // key path → has a comment on it or an ancestor
	collectKeys(doc.Content[0], reflect.TypeOf(Config{}), "", false, shown)
	var missing, uncommented []string
	for _, k := range allKeys(reflect.TypeOf(Config{}), "") {
		commented, ok := shown[k]
		switch {
		case !ok:
			missing = append(missing, k)
		case !commented:
			uncommented = append(uncommented, k)
		}
	}
	sort.Strings(missing)
	sort.Strings(uncommented)
	if len(missing) > 0 {
		t.Errorf("example.yaml does not show these keys: %s", strings.Join(missing, ", "))
	}
	if len(uncommented) > 0 {
		t.Errorf("example.yaml has no comment on these keys (or on a section above them): %s", strings.Join(uncommented, ", "))
	}
}

// allKeys lists every key path of t, with "*" for map keys and "[]" for list
// items.
func allKeys(t reflect.Type, prefix string) []string {
	var out []string
	if t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch {
	case t == durationType || t == byteSizeType || t == dateType || t == secretType:
	case t.Kind() == reflect.Struct:
		for name, f := range yamlFields(t) {
			p := join(prefix, name)
			out = append(out, p)
			out = append(out, allKeys(f.Type, p)...)
		}
	case t.Kind() == reflect.Map:
		out = append(out, allKeys(t.Elem(), prefix+".*")...)
	case t.Kind() == reflect.Slice:
		out = append(out, allKeys(t.Elem(), prefix+"[]")...)
	}
	return out
}

func collectKeys(n *yaml.Node, t reflect.Type, prefix string, commented bool, seen map[string]bool) {
	if n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	if t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch {
	case t == durationType || t == byteSizeType || t == dateType || t == secretType:
	case t.Kind() == reflect.Struct && n.Kind == yaml.MappingNode:
		fields := yamlFields(t)
		for i := 0; i+1 < len(n.Content); i += 2 {
			k := n.Content[i]
			p := join(prefix, k.Value)
			c := commented || k.HeadComment != "" || k.LineComment != ""
			seen[p] = seen[p] || c
			if f, ok := fields[k.Value]; ok {
				collectKeys(n.Content[i+1], f.Type, p, c, seen)
			}
		}
	case t.Kind() == reflect.Map && n.Kind == yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			k := n.Content[i]
			c := commented || k.HeadComment != "" || k.LineComment != ""
			collectKeys(n.Content[i+1], t.Elem(), prefix+".*", c, seen)
		}
	case t.Kind() == reflect.Slice && n.Kind == yaml.SequenceNode:
		for _, item := range n.Content {
			collectKeys(item, t.Elem(), prefix+"[]", commented, seen)
		}
	}
}

// TestRedactedGolden pins what `emsd config print` shows for the example.
func TestRedactedGolden(t *testing.T) {
	c, err := LoadFile("example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	got := c.Redacted()
	golden := filepath.Join("testdata", "example.redacted.golden")
	if *update {
		if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if got != string(want) {
		t.Errorf("Redacted() differs from %s (run go test -update and review the diff):\n%s", golden, got)
	}
	// What config print shows must load back to the same configuration.
	again, err := Load([]byte(got))
	if err != nil {
		t.Fatalf("Redacted output does not load: %v", err)
	}
	if again.Redacted() != got {
		t.Errorf("Redacted output loads differently:\n%s", again.Redacted())
	}
}

func TestByteSize(t *testing.T) {
	tests := []struct {
		in      string
		want    ByteSize
		wantErr bool
	}{
		{"0", 0, false},
		{"3145728", 3 << 20, false},
		{"3MiB", 3 << 20, false},
		{"3M", 3 << 20, false},
		{"3 MiB", 3 << 20, false},
		{"512KiB", 512 << 10, false},
		{"1GB", 1e9, false},
		{"2TiB", 2 << 40, false},
		{"10B", 10, false},
		{"-1", -1, false}, // decodes; Validate rejects it where sizes must be positive
		{"", 0, true},
		{"MiB", 0, true},
		{"1.5GiB", 0, true},
		{"3 megs", 0, true},
		{"9999999999TiB", 0, true},
	}
	for _, tt := range tests {
		got, err := ParseByteSize(tt.in)
		if (err != nil) != tt.wantErr || got != tt.want {
			t.Errorf("ParseByteSize(%q) = %d, %v; want %d, err %v", tt.in, got, err, tt.want, tt.wantErr)
		}
	}
	for _, b := range []ByteSize{0, 1, 1023, 1024, 3 << 20, 1e9, 5 << 40} {
		back, err := ParseByteSize(b.String())
		if err != nil || back != b {
			t.Errorf("%d → %q → %d, %v", int64(b), b.String(), back, err)
		}
	}
}

func TestFormatDuration(t *testing.T) {
	for d, want := range map[time.Duration]string{
		-time.Hour:              "-1h",
		168 * time.Hour:         "168h",
		time.Minute:             "1m",
		90 * time.Second:        "1m30s",
		0:                       "0s",
		1500 * time.Millisecond: "1.5s",
		time.Hour + time.Second: "1h0m1s",
	} {
		if got := formatDuration(d); got != want {
			t.Errorf("formatDuration(%v) = %q, want %q", d, got, want)
		}
	}
}
