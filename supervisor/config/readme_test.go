package config

import (
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/hashicorp/hcl/v2"
)

// The config example of the README is valid: it parses, and every attribute
// it shows exists. Only what depends on the machine (its users, env files
// it reads) may fail.
func TestReadmeConfigExample(t *testing.T) {
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	blocks := regexp.MustCompile("(?s)```hcl\n(.*?)```").FindAllStringSubmatch(string(b), -1)
	if len(blocks) == 0 {
		t.Fatal("no hcl block in the README")
	}
	for i, m := range blocks {
		_, diags := Parse([]byte(m[1]), "README.md", t.TempDir())
		for _, d := range diags {
			if d.Severity != hcl.DiagError || strings.Contains(strings.ToLower(d.Summary), "user") || d.Summary == "Cannot read an env file" {
				continue
			}
			t.Errorf("README hcl block %d: %s", i+1, FormatDiagnostic(d))
		}
	}
}
