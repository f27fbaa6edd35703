// Package typespb holds the Go bindings of proto package "types" of the Kata
// Containers agent API: network interfaces, routes, ARP neighbours and the
// fs-group policy, generated from protocols/protos by `make proto`.
package typespb
