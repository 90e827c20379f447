package config

import (
	"os"
	"path/filepath"
	"testing"
)

// FuzzLoad checks that no input panics, and that whatever loads prints (with
// Redacted) to a document that loads back to the same configuration.
func FuzzLoad(f *testing.F) {
	for _, dir := range []string{"testdata/good", "testdata/bad"} {
		files, _ := filepath.Glob(filepath.Join(dir, "*.yaml"))
		for _, file := range files {
			data, err := os.ReadFile(file)
			if err != nil {
				f.Fatal(err)
			}
			f.Add(data)
		}
	}
	if data, err := os.ReadFile("example.yaml"); err == nil {
		f.Add(data)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Load(data)
		if err != nil {
			return
		}
		if c.AdminToken.IsSet() || c.NATS.Token.IsSet() {
			return // inline secrets print as <redacted> by design
		}
		again, err := Load([]byte(c.Redacted()))
		if err != nil {
			t.Fatalf("Redacted output does not load: %v\n%s", err, c.Redacted())
		}
		// Compared in printed form: an empty list and no list print alike.
		if again.Redacted() != c.Redacted() {
			t.Fatalf("round trip differs:\n%s\n%s", again.Redacted(), c.Redacted())
		}
	})
}
