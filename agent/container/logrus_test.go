package container

import (
	"bytes"
	"encoding/json"
	"errors"
	"log/slog"
	"os"
	"strings"
	"testing"

	"github.com/sirupsen/logrus"
)

// libcontainer's logrus lines come out of the agent's slog handler as
// JSON, with their fields, at the matching level, filtered by its level.
func TestRouteLogrus(t *testing.T) {
	std := logrus.StandardLogger()
	t.Cleanup(func() {
		std.SetOutput(os.Stderr)
		std.SetFormatter(&logrus.TextFormatter{})
		std.ReplaceHooks(logrus.LevelHooks{})
	})
	var buf bytes.Buffer
	RouteLogrus(slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelWarn})))

	logrus.Infof("below the agent's level")
	logrus.WithField("cap", "CAP_KILL").Warnf("can't raise ambient capability %s", "CAP_KILL")
	logrus.WithError(errors.New("EPERM")).Error("forwarded from init")

	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("want 2 JSON lines (info filtered), got:\n%s", buf.String())
	}
	var warn, errLine map[string]any
	if err := json.Unmarshal([]byte(lines[0]), &warn); err != nil {
		t.Fatalf("not JSON: %q: %v", lines[0], err)
	}
	if err := json.Unmarshal([]byte(lines[1]), &errLine); err != nil {
		t.Fatalf("not JSON: %q: %v", lines[1], err)
	}
	if warn["level"] != "WARN" || warn["msg"] != "can't raise ambient capability CAP_KILL" || warn["cap"] != "CAP_KILL" || warn["source"] != "libcontainer" {
		t.Errorf("warning: %v", warn)
	}
	if errLine["level"] != "ERROR" || errLine["error"] != "EPERM" {
		t.Errorf("error: %v", errLine)
	}
}
