// Package version holds the build's version string, set by the Makefile with
// -ldflags "-X github.com/petrel-net/petrel/agent/internal/version.Version=...".
package version

// Version is the output of git describe at build time, or "dev".
var Version = "dev"
