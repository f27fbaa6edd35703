// Package compat holds only tests: they pin the generated agent API
// (protocols/agentpb, protocols/typespb) to the Kata Containers agent wire
// protocol, by descriptor and by a real ttrpc round trip.
package compat
