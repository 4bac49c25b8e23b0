// Package testhook holds switches that the project's test binaries set
// (testutil's init, from the environment) to run whole suites with an
// option on. Nothing outside tests sets them.
package testhook

// IdlePoll turns hub.Options.IdlePoll on in every Hub where the poller is
// supported, as CLUSTERWS_TEST_IDLEPOLL=1 asks every test binary that
// imports testutil.
var IdlePoll bool
