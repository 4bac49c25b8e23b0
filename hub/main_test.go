package hub_test

// testutil's init turns hub.Options.IdlePoll on in every Hub of this test
// binary when CLUSTERWS_TEST_IDLEPOLL=1, as in every binary that imports it.
import _ "github.com/clusterws/clusterws-go/testutil"
