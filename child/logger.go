package child

import (
	"os"

	"github.com/hashicorp/go-hclog"
)

// NewLogger returns a logger to stderr named name. Under baton it writes
// JSON lines, which baton re-emits at their own level; on its own it
// writes text. BATON_LOG_LEVEL or LOG_LEVEL set the level (default info).
func NewLogger(name string) hclog.Logger {
	level := os.Getenv("BATON_LOG_LEVEL")
	if level == "" {
		level = os.Getenv("LOG_LEVEL")
	}
	return hclog.New(&hclog.LoggerOptions{
		Name:       name,
		Level:      hclog.LevelFromString(level),
		Output:     os.Stderr,
		JSONFormat: Supervised(),
	})
}
