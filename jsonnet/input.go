package jsonnet

import (
	"encoding/json"
	"fmt"

	gojsonnet "github.com/google/go-jsonnet"
	"github.com/google/go-jsonnet/ast"
)

// inputFunc is the native function through which an evaluation receives its identities. go-jsonnet turns
// the decoded JSON a native function returns straight into values, where an identity passed as Jsonnet
// syntax (a top-level argument) goes through the interpreter object by object and field by field.
const inputFunc = "kratos_hooks_input"

// inputSource is the expression that evaluates to the input of the evaluation under way.
const inputSource = "std.native('" + inputFunc + "')()"

// vm is a Jsonnet VM with the input its next evaluation reads through inputFunc. A vm is used by one
// evaluation at a time (Mapper keeps them in a pool).
type vm struct {
	*gojsonnet.VM
	input any
}

func newVM() *vm {
	v := &vm{VM: gojsonnet.MakeVM()}
	// No imports: a mapping is one self-contained file, as in Kratos.
	v.Importer(noImports{})
	v.NativeFunction(&gojsonnet.NativeFunction{Name: inputFunc, Func: func([]any) (any, error) { return v.input, nil }})
	return v
}

// evaluate evaluates node with input as what inputFunc returns, and forgets the input after.
func (v *vm) evaluate(node ast.Node, input any) (string, error) {
	v.input = input
	defer func() { v.input = nil }()
	return v.Evaluate(node)
}

// decodeIdentity decodes an identity for inputFunc. Numbers become float64, as Jsonnet's numbers are.
func decodeIdentity(doc []byte) (any, error) {
	var v any
	if err := json.Unmarshal(doc, &v); err != nil {
		return nil, fmt.Errorf("identity is not JSON: %w", err)
	}
	return v, nil
}

type noImports struct{}

func (noImports) Import(importedFrom, importedPath string) (gojsonnet.Contents, string, error) {
	return gojsonnet.Contents{}, "", fmt.Errorf("import %q: imports are not allowed in a mapping", importedPath)
}
