// Package opa is the policy engine of the agent's policy build: Open Policy
// Agent's Go packages compile a Rego policy once, prepare a query per entry
// point once, and evaluate the prepared query per request. It links OPA,
// which more than doubles the agent's size, so only the policy build
// imports it (agent/assemble, build tag "policy"; docs/policy.md).
package opa

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/storage"
	"github.com/open-policy-agent/opa/v1/storage/inmem"
	"github.com/open-policy-agent/opa/v1/topdown/print"

	"github.com/wren-vm/wren/agent/policy"
)

// Engine compiles policies with OPA.
type Engine struct{}

var _ policy.Engine = Engine{}

// Compile parses text as a Rego module (parse) and compiles it with
// print() kept. The policy's data starts as
// {"pstate": {}}, Kata's policy state.
func (Engine) Compile(ctx context.Context, text string) (policy.Compiled, error) {
	mod, err := parse(text)
	if err != nil {
		// regorus's leniency about `name (args)` calls; see joinCallParens.
		if joined := joinCallParens(text); joined != text {
			if m, errJoined := parse(joined); errJoined == nil {
				mod, err = m, nil
			}
		}
	}
	if err != nil {
		return nil, err
	}
	if mod == nil {
		return nil, errors.New("not Rego: no module")
	}
	if got := mod.Package.Path.String(); got != "data.agent_policy" {
		return nil, fmt.Errorf("package %s, want agent_policy", strings.TrimPrefix(got, "data."))
	}
	out := &compiled{store: inmem.NewFromObject(map[string]any{"pstate": map[string]any{}})}
	// Twice: print() kept, for the prints of a refusal, and erased, for
	// the common case. OPA evaluates print's arguments into sets, hashing
	// each (genpolicy's rules print the whole input), even with no hook
	// to print to: erased, an allowed CreateContainer costs about half.
	for i, prints := range []bool{false, true} {
		c := ast.NewCompiler().WithEnablePrintStatements(prints)
		c.Compile(map[string]*ast.Module{"policy.rego": mod.Copy()})
		if c.Failed() {
			return nil, fmt.Errorf("compile: %w", c.Errors)
		}
		out.variants[i].compiler = c
		if err := ctx.Err(); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// compiled is one compiled policy, without and with print(); the prepared
// queries of each are made on first use of an entry point and kept.
type compiled struct {
	store    storage.Store
	variants [2]variant // [0]: print() erased, [1]: kept
}

type variant struct {
	compiler *ast.Compiler

	mu       sync.Mutex
	prepared map[string]*rego.PreparedEvalQuery
}

func (c *variant) query(ctx context.Context, entry string, store storage.Store) (*rego.PreparedEvalQuery, error) {
	c.mu.Lock()
	pq, ok := c.prepared[entry]
	c.mu.Unlock()
	if ok {
		return pq, nil
	}
	if !ast.IsVarCompatibleString(entry) {
		return nil, fmt.Errorf("entry point %q is no Rego identifier", entry)
	}
	q, err := rego.New(
		rego.Query("data.agent_policy."+entry),
		rego.Compiler(c.compiler),
		rego.Store(store),
		rego.EnablePrintStatements(true),
	).PrepareForEval(ctx)
	if err != nil {
		return nil, fmt.Errorf("prepare %s: %w", entry, err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.prepared == nil {
		c.prepared = map[string]*rego.PreparedEvalQuery{}
	}
	if pq, ok := c.prepared[entry]; ok {
		return pq, nil // another request prepared it meanwhile
	}
	c.prepared[entry] = &q
	return &q, nil
}

// prints collects one evaluation's print() output.
type prints struct{ lines []string }

func (p *prints) Print(_ print.Context, s string) error {
	p.lines = append(p.lines, s)
	return nil
}

// Eval implements policy.Compiled.
func (c *compiled) Eval(ctx context.Context, entry string, input any, withPrints bool) (any, bool, []string, error) {
	v := &c.variants[0]
	if withPrints {
		v = &c.variants[1]
	}
	pq, err := v.query(ctx, entry, c.store)
	if err != nil {
		return nil, false, nil, err
	}
	in, err := ast.InterfaceToValue(input)
	if err != nil {
		return nil, false, nil, fmt.Errorf("input: %w", err)
	}
	var out prints
	opts := []rego.EvalOption{rego.EvalParsedInput(in)}
	if withPrints {
		opts = append(opts, rego.EvalPrintHook(&out))
	}
	rs, err := pq.Eval(ctx, opts...)
	if err != nil {
		return nil, false, out.lines, err
	}
	if len(rs) == 0 || len(rs[0].Expressions) == 0 {
		return nil, false, out.lines, nil
	}
	if len(rs) != 1 || len(rs[0].Expressions) != 1 {
		return nil, false, out.lines, fmt.Errorf("%d results, want one", len(rs))
	}
	return rs[0].Expressions[0].Value, true, out.lines, nil
}

// Patch implements policy.Compiled: JSON patch add, replace and remove on
// the policy's data, in one transaction.
func (c *compiled) Patch(ctx context.Context, ops []any) error {
	txn, err := c.store.NewTransaction(ctx, storage.WriteParams)
	if err != nil {
		return err
	}
	for _, o := range ops {
		op, ok := o.(map[string]any)
		if !ok {
			c.store.Abort(ctx, txn)
			return fmt.Errorf("op %v is not an object", o)
		}
		if err := c.apply(ctx, txn, op); err != nil {
			c.store.Abort(ctx, txn)
			return err
		}
	}
	return c.store.Commit(ctx, txn)
}

func (c *compiled) apply(ctx context.Context, txn storage.Transaction, op map[string]any) error {
	name, _ := op["op"].(string)
	p, _ := op["path"].(string)
	path, ok := storage.ParsePathEscaped(p)
	if !ok || len(path) == 0 {
		return fmt.Errorf("op %q: bad path %q", name, p)
	}
	var kind storage.PatchOp
	switch name {
	case "add":
		kind = storage.AddOp
	case "replace":
		kind = storage.ReplaceOp
	case "remove":
		kind = storage.RemoveOp
	default:
		return fmt.Errorf("op %q is not supported (add, replace, remove)", name)
	}
	if err := c.store.Write(ctx, txn, kind, path, op["value"]); err != nil {
		return fmt.Errorf("op %s %s: %w", name, p, err)
	}
	return nil
}

// parse reads text as Rego v1, else as Rego v0, in which Kata's policies
// (genpolicy's rules.rego) are written and which Kata's engine reads. v1
// goes first: a v1 policy can parse as v0 with another meaning (in v0,
// "x := 1 if { ... }" is an unconditional x and a rule named "if"),
// whereas a v0 rule body without "if" is an error in v1.
func parse(text string) (*ast.Module, error) {
	mod, errV1 := ast.ParseModuleWithOpts("policy.rego", text, ast.ParserOptions{RegoVersion: ast.RegoV1})
	if errV1 == nil {
		return mod, nil
	}
	mod, err := ast.ParseModuleWithOpts("policy.rego", text, ast.ParserOptions{RegoVersion: ast.RegoV0})
	if err == nil {
		return mod, nil
	}
	return nil, fmt.Errorf("not Rego (as v1: %v; as v0: %v)", errV1, err)
}
