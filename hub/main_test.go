package hub_test

import (
	"os"
	"testing"

	"github.com/clusterws/clusterws-go/internal/testhook"
)

// TestMain runs the suite with Options.IdlePoll on in every Hub when
// CLUSTERWS_TEST_IDLEPOLL=1: the idle poller must pass the same tests.
func TestMain(m *testing.M) {
	testhook.IdlePoll = os.Getenv("CLUSTERWS_TEST_IDLEPOLL") == "1"
	os.Exit(m.Run())
}
