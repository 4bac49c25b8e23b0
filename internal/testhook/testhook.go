// Package testhook holds switches that the project's test binaries set
// (in TestMain, from the environment) to run a whole suite with an option
// on. Nothing outside tests sets them.
package testhook

// IdlePoll turns hub.Options.IdlePoll on in every Hub, as the environment
// variable CLUSTERWS_TEST_IDLEPOLL=1 asks the hub and root test suites.
var IdlePoll bool
