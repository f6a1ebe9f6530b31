// Package e2e holds kmd's end-to-end tests: they build the real kmd and
// kmctl binaries (with the race detector), start kmd in a temporary
// directory and drive it with kmctl, parsing its -o json output, to check
// the contract of SPEC.md: outputs, field names, exit codes and files.
//
// Run them with:
//
//	go test -count=1 ./e2e/
//
// -short imports 20k entries instead of 100k into the large domain and
// skips nothing. Tests run 4 at a time unless -parallel says otherwise; set
// E2E_KEEP=1 to keep a failed test's kmd directory. Tests that leave files
// for people to look at (the web page's screenshot, ui.png) put them in
// $KMD_TEST_ARTIFACTS, default e2e/artifacts.
package e2e
