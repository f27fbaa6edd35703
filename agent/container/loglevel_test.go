package container

import (
	"strconv"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/sirupsen/logrus"
)

// Unset, libcontainer's nsexec logs at debug, and every start and exec pays
// for lines that are decoded only to be dropped.
func TestInitLogsAtTheAgentsLevel(t *testing.T) {
	for _, init := range []bool{true, false} {
		lp, err := newLibcontainerProcess(&specs.Process{Args: []string{"/bin/true"}, Cwd: "/"}, init)
		if err != nil {
			t.Fatal(err)
		}
		if want := strconv.Itoa(int(logrus.GetLevel())); lp.LogLevel != want {
			t.Errorf("init=%v: LogLevel %q, want %q (logrus's level)", init, lp.LogLevel, want)
		}
	}
}
