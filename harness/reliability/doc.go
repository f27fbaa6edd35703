// Package reliability holds the agent's reliability and security tests,
// run against the real wren-agent binary on a unix socket (package
// testagent): the bad-input matrix, faults, leak measurements and
// confinement checks. Tests log their figures as "RELIABILITY kind=...
// name=... value=..." lines, which scripts/reliability-report.sh collects
// into docs/reliability.md. The package has no non-test code.
package reliability
