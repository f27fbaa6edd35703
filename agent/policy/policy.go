// Package policy checks each agent request against a Rego policy, as Kata's
// agent does (src/agent/src/policy.rs, src/libs/kata-agent-policy): the
// request's message name is the entry point, data.agent_policy.<Name>, the
// request in Kata's JSON shape is the input (Input), and the answer is true,
// or an object {"allowed": bool, "ops": [JSON patch]} whose ops update the
// policy's state (data.pstate) when it allows. A request is refused with
// PermissionDenied "<Name> is blocked by policy: <prints>", and an entry
// point the policy leaves undefined, or an evaluation that fails, is an
// internal error, unless the policy sets AllowRequestsFailingPolicy.
//
// The policy language itself lives behind Engine, so that this package, and
// the default agent that never loads a policy, do not link a Rego
// implementation; agent/policy/opa is the one the policy build uses.
package policy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/wren-vm/wren/agent/errdefs"
	"github.com/wren-vm/wren/protocols/agentpb"
)

// Engine compiles policy text.
type Engine interface {
	// Compile parses and compiles a policy (package agent_policy). An
	// error means the text is no usable policy.
	Compile(ctx context.Context, text string) (Compiled, error)
}

// Compiled is one compiled policy with its state; safe for concurrent use.
type Compiled interface {
	// Eval evaluates data.agent_policy.<entry> with input (Input's tree).
	// defined is false when the policy gives the entry no value. With
	// withPrints, prints are the policy's print() output during this
	// evaluation; without, print() formats nothing, which saves most of
	// the cost of a chatty policy (genpolicy's rules print the whole
	// input).
	Eval(ctx context.Context, entry string, input any, withPrints bool) (value any, defined bool, prints []string, err error)
	// Patch applies JSON patch operations to the policy's data, as Kata
	// applies the ops an allowing answer carries.
	Patch(ctx context.Context, ops []any) error
}

// Limits bound what a policy may cost.
type Limits struct {
	// MaxBytes is the largest policy text accepted.
	MaxBytes int
	// EvalTimeout bounds one evaluation; Rego has no unbounded loops, but a
	// policy can iterate over huge ranges.
	EvalTimeout time.Duration
	// CompileTimeout bounds compiling a policy. It is separate from
	// EvalTimeout because compiling genpolicy's rules takes far longer
	// than answering one request, most of all in a guest under TCG.
	CompileTimeout time.Duration
}

// DefaultLimits: Kata's agent accepts policy files up to 16 MiB (its
// regorus limits); genpolicy's policies for whole pods are hundreds of KiB.
var DefaultLimits = Limits{MaxBytes: 16 << 20, EvalTimeout: 2 * time.Second, CompileTimeout: 60 * time.Second}

// DenyAllButSetPolicy is what an agent enforces when its default policy
// cannot be loaded: every request is refused except SetPolicy, through
// which a working policy can still arrive (Kata's closed-door baseline).
const DenyAllButSetPolicy = "package agent_policy\n\ndefault SetPolicyRequest := true\n"

// Policy is the policy in force and the way to replace it.
type Policy struct {
	engine Engine
	limits Limits
	log    *slog.Logger

	cur atomic.Pointer[loaded]
	// setMu makes check-then-replace in Set atomic, as Kata's lock does,
	// so two SetPolicy calls cannot both pass the same old policy. Checks
	// read cur without it.
	setMu sync.Mutex
}

// loaded is a compiled policy and whether it allows failing requests.
type loaded struct {
	c             Compiled
	allowFailures bool
}

// New makes a Policy with no policy in force; Load or Set one before
// Check, which refuses everything until then.
func New(engine Engine, limits Limits, log *slog.Logger) *Policy {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if limits.MaxBytes <= 0 {
		limits.MaxBytes = DefaultLimits.MaxBytes
	}
	if limits.EvalTimeout <= 0 {
		limits.EvalTimeout = DefaultLimits.EvalTimeout
	}
	if limits.CompileTimeout <= 0 {
		limits.CompileTimeout = DefaultLimits.CompileTimeout
	}
	return &Policy{engine: engine, limits: limits, log: log}
}

// Load compiles text and puts it in force without asking the current
// policy: for the agent's default policy at start-up.
func (p *Policy) Load(ctx context.Context, text string) error {
	l, err := p.compile(ctx, text)
	if err != nil {
		return err
	}
	p.setMu.Lock()
	defer p.setMu.Unlock()
	p.cur.Store(l)
	return nil
}

// Set is SetPolicy: the current policy must allow the request
// (SetPolicyRequest), then the new text replaces it. Text that does not
// compile is InvalidArgument and leaves the current policy in force.
func (p *Policy) Set(ctx context.Context, req *agentpb.SetPolicyRequest) error {
	p.setMu.Lock()
	defer p.setMu.Unlock()
	if err := p.Check(ctx, req); err != nil {
		return err
	}
	l, err := p.compile(ctx, req.GetPolicy())
	if err != nil {
		return err
	}
	p.cur.Store(l)
	p.log.Info("policy replaced by SetPolicy", "bytes", len(req.GetPolicy()), "allow_failures", l.allowFailures)
	return nil
}

func (p *Policy) compile(ctx context.Context, text string) (l *loaded, err error) {
	if len(text) > p.limits.MaxBytes {
		return nil, errdefs.Errorf(errdefs.ErrInvalidArgument, "policy of %d bytes exceeds the limit of %d", len(text), p.limits.MaxBytes)
	}
	defer p.recoverEngine("compiling the policy", &err)
	cctx, cancel := context.WithTimeout(ctx, p.limits.CompileTimeout)
	defer cancel()
	c, err := p.engine.Compile(cctx, text)
	switch {
	case err != nil && cctx.Err() != nil:
		// Running out of time says nothing about the text: not InvalidArgument.
		return nil, errdefs.Errorf(errdefs.ErrDeadlineExceeded, "policy: compiling ran out of time (limit %v): %w", p.limits.CompileTimeout, err)
	case err != nil:
		return nil, errdefs.Errorf(errdefs.ErrInvalidArgument, "policy: %w", err)
	}
	ctx, cancel = context.WithTimeout(ctx, p.limits.EvalTimeout)
	defer cancel()
	l = &loaded{c: c}
	// As Kata: a policy may declare AllowRequestsFailingPolicy := true
	// (genpolicy's debugging switch); anything else, an error included,
	// leaves it off.
	v, defined, _, err := c.Eval(ctx, "AllowRequestsFailingPolicy", map[string]any{}, false)
	if err == nil && defined && v == true {
		l.allowFailures = true
		p.log.Warn("policy: AllowRequestsFailingPolicy is set: requests the policy refuses are allowed")
	}
	return l, nil
}

// Check asks the policy in force whether req may proceed. It returns nil,
// or a PermissionDenied error naming the request's message and carrying
// the policy's prints, or an error of no kind (Internal) when the policy
// cannot answer.
func (p *Policy) Check(ctx context.Context, req proto.Message) (err error) {
	entry := string(req.ProtoReflect().Descriptor().Name())
	l := p.cur.Load()
	if l == nil {
		return errdefs.Errorf(errdefs.ErrPermissionDenied, "%s is blocked by policy: no policy loaded", entry)
	}
	input, err := Input(req)
	if err != nil {
		return err
	}
	// Prints only matter for a refusal: evaluate without them first, and
	// again with them when the answer is not a plain yes.
	allowed, _, err := p.eval(ctx, l, entry, input, false)
	if err == nil && allowed {
		return nil
	}
	allowed, prints, err := p.eval(ctx, l, entry, input, true)
	if err != nil {
		if l.allowFailures {
			p.log.Warn("policy: ignoring a failed evaluation (AllowRequestsFailingPolicy)", "request", entry, "err", err)
			return nil
		}
		return err
	}
	if allowed {
		return nil
	}
	if l.allowFailures {
		p.log.Warn("policy: allowing a refused request (AllowRequestsFailingPolicy)", "request", entry)
		return nil
	}
	return errdefs.Errorf(errdefs.ErrPermissionDenied, "%s is blocked by policy: %s", entry, strings.Join(prints, " "))
}

// eval evaluates one entry point within the time limit, applying the ops
// of an allowing object answer.
func (p *Policy) eval(ctx context.Context, l *loaded, entry string, input any, withPrints bool) (allowed bool, prints []string, err error) {
	defer p.recoverEngine("evaluating "+entry, &err)
	ctx, cancel := context.WithTimeout(ctx, p.limits.EvalTimeout)
	defer cancel()
	v, defined, prints, err := l.c.Eval(ctx, entry, input, withPrints)
	switch {
	case err != nil && ctx.Err() != nil:
		return false, prints, fmt.Errorf("policy check: %s: evaluation ran out of time (limit %v): %w", entry, p.limits.EvalTimeout, err)
	case err != nil:
		return false, prints, fmt.Errorf("policy check: %s: %w", entry, err)
	case !defined:
		return false, prints, fmt.Errorf("policy check: %s: the policy defines no value for data.agent_policy.%s", entry, entry)
	}
	switch v := v.(type) {
	case bool:
		return v, prints, nil
	case map[string]any:
		return p.metadata(ctx, l, entry, v, prints)
	}
	return false, prints, fmt.Errorf("policy check: %s: answer of type %T, want a boolean or {allowed, ops}", entry, v)
}

// metadata handles an object answer, Kata's MetadataResponse.
func (p *Policy) metadata(ctx context.Context, l *loaded, entry string, v map[string]any, prints []string) (bool, []string, error) {
	allowed, ok := v["allowed"].(bool)
	if !ok {
		return false, prints, fmt.Errorf("policy check: %s: object answer without a boolean \"allowed\"", entry)
	}
	if !allowed {
		return false, prints, nil
	}
	if ops, ok := v["ops"].([]any); ok && len(ops) > 0 {
		if err := l.c.Patch(ctx, ops); err != nil {
			return false, prints, fmt.Errorf("policy check: %s: applying the policy's state ops: %w", entry, err)
		}
	} else if v["ops"] != nil && !ok {
		return false, prints, fmt.Errorf("policy check: %s: \"ops\" is not an array", entry)
	}
	return true, prints, nil
}

// errEnginePanic marks a recovered panic of the policy engine.
var errEnginePanic = errors.New("policy engine panicked")

// recoverEngine turns a panic of the engine into an error (Internal), so a
// policy that trips the evaluator cannot take the agent down; the stack
// goes to the log, not to the caller.
func (p *Policy) recoverEngine(what string, err *error) {
	if r := recover(); r != nil {
		p.log.Error("policy engine panicked", "while", what, "panic", r, "stack", string(debug.Stack()))
		*err = fmt.Errorf("%w %s: %v", errEnginePanic, what, r)
	}
}

// FromFile makes a Policy whose policy is the file name's text. A file
// that cannot be read or does not compile is returned as the error, with a
// Policy that refuses every request but SetPolicy (DenyAllButSetPolicy):
// the agent serves on, as PID 1 must, without falling open, and a working
// policy can still arrive.
func FromFile(ctx context.Context, engine Engine, limits Limits, log *slog.Logger, name string) (*Policy, error) {
	p := New(engine, limits, log)
	err := p.loadFile(ctx, name)
	if err == nil {
		return p, nil
	}
	if errClosed := p.Load(ctx, DenyAllButSetPolicy); errClosed != nil {
		// Nothing is in force, and Check refuses everything.
		err = errors.Join(err, errClosed)
	}
	return p, err
}

func (p *Policy) loadFile(ctx context.Context, name string) error {
	text, err := os.ReadFile(name)
	if err != nil {
		return fmt.Errorf("policy file: %w", err)
	}
	if err := p.Load(ctx, string(text)); err != nil {
		return fmt.Errorf("policy file %s: %w", name, err)
	}
	return nil
}
