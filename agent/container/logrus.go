package container

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"sort"

	"github.com/sirupsen/logrus"
)

// RouteLogrus sends what libcontainer logs through logrus's standard
// logger to log: its own warnings, and the lines a container's init writes
// to the log pipe, which libcontainer forwards there. Otherwise they reach
// stderr as logrus text (level=warning msg=...) in the middle of the
// agent's JSON log.
//
// Logrus's level is left as it is: it also sets what nsexec sends over the
// log pipe (see newLibcontainerProcess), and log's handler filters again.
func RouteLogrus(log *slog.Logger) {
	std := logrus.StandardLogger()
	std.SetOutput(io.Discard)
	std.SetFormatter(discardFormatter{})
	std.ReplaceHooks(logrus.LevelHooks{})
	std.AddHook(slogHook{log: log})
}

// discardFormatter spares logrus formatting lines that go nowhere.
type discardFormatter struct{}

func (discardFormatter) Format(*logrus.Entry) ([]byte, error) { return nil, nil }

// slogHook writes each logrus entry to a slog logger.
type slogHook struct{ log *slog.Logger }

func (slogHook) Levels() []logrus.Level { return logrus.AllLevels }

func (h slogHook) Fire(e *logrus.Entry) error {
	ctx := e.Context
	if ctx == nil {
		ctx = context.Background()
	}
	level := logrusLevel(e.Level)
	if !h.log.Enabled(ctx, level) {
		return nil
	}
	keys := make([]string, 0, len(e.Data))
	for k := range e.Data {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	attrs := make([]slog.Attr, 0, len(keys)+1)
	attrs = append(attrs, slog.String("source", "libcontainer"))
	for _, k := range keys {
		v := e.Data[k]
		if err, ok := v.(error); ok {
			v = err.Error()
		} else if s, ok := v.(fmt.Stringer); ok {
			v = s.String()
		}
		attrs = append(attrs, slog.Any(k, v))
	}
	h.log.LogAttrs(ctx, level, e.Message, attrs...)
	return nil
}

// logrusLevel maps logrus's levels onto slog's (trace below debug, fatal
// and panic above error, as agent/config reads Kata's level names).
func logrusLevel(l logrus.Level) slog.Level {
	switch l {
	case logrus.TraceLevel:
		return slog.LevelDebug - 4
	case logrus.DebugLevel:
		return slog.LevelDebug
	case logrus.InfoLevel:
		return slog.LevelInfo
	case logrus.WarnLevel:
		return slog.LevelWarn
	case logrus.ErrorLevel:
		return slog.LevelError
	}
	return slog.LevelError + 4
}
