// Package apifuzz fuzzes the agent API: every grpc.AgentService request
// type, decoded from fuzzer bytes as ttrpc would decode it, goes through
// the real handler (package rpc on a real sandbox, storage, device and
// network stack) with the state root in a temporary directory. The test
// process first re-executes itself in private mount and network
// namespaces, so mounts and links the handlers make stay confined; the
// handlers whose effects no namespace confines are excluded (see
// excluded in fuzz_test.go). The package has no non-test code.
package apifuzz
