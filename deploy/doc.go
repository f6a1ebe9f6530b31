// Package deploy holds what installing kmd takes — kmd.service (systemd),
// kmd.logrotate and prometheus/kmd-alerts.yml — and the tests that keep
// them true to kmd: the alert rules name only metrics and labels kmd
// exports, the unit passes systemd-analyze verify and passes only flags
// kmd has, and the logrotate snippet rotates the log file the unit names.
// See README.md in this folder.
package deploy
