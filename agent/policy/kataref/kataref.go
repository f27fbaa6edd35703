// Package kataref holds Kata Containers' published agent policy files,
// verbatim (each names its source, commit and licence in a header): the
// allow-all default policy that the image builder installs when given no
// policy, and genpolicy's rules, which the compatibility tests evaluate
// with a policy data section of their own. The agent does not import it.
package kataref

import _ "embed"

// AllowAll is Kata's src/kata-opa/allow-all.rego.
//
//go:embed allow-all.rego
var AllowAll string

// GenpolicyRules is genpolicy's src/tools/genpolicy/rules.rego, without
// the policy_data section genpolicy appends for a pod.
//
//go:embed rules.rego
var GenpolicyRules string
