package jsonnet

import (
	"bytes"
	"encoding/json"
	"fmt"
	"sort"

	"github.com/google/go-jsonnet/ast"
)

// jsonToNode turns a JSON document into the (desugared) Jsonnet AST the evaluator takes directly. Passing
// the identity this way instead of as Jsonnet source skips the Jsonnet parser, which was most of the cost
// of a mapping call.
func jsonToNode(doc []byte) (ast.Node, error) {
	dec := json.NewDecoder(bytes.NewReader(doc))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, fmt.Errorf("identity is not JSON: %w", err)
	}
	return valueToNode(v), nil
}

func valueToNode(v any) ast.Node {
	switch t := v.(type) {
	case nil:
		return &ast.LiteralNull{}
	case bool:
		return &ast.LiteralBoolean{Value: t}
	case json.Number:
		return &ast.LiteralNumber{OriginalString: t.String()}
	case string:
		return &ast.LiteralString{Value: t, Kind: ast.StringDouble}
	case []any:
		arr := &ast.Array{Elements: make([]ast.CommaSeparatedExpr, len(t))}
		for i, e := range t {
			arr.Elements[i] = ast.CommaSeparatedExpr{Expr: valueToNode(e)}
		}
		return arr
	case map[string]any:
		keys := make([]string, 0, len(t))
		for k := range t {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		obj := &ast.DesugaredObject{Fields: make([]ast.DesugaredObjectField, len(keys))}
		for i, k := range keys {
			obj.Fields[i] = ast.DesugaredObjectField{
				Hide: ast.ObjectFieldInherit,
				Name: &ast.LiteralString{Value: k, Kind: ast.StringDouble},
				Body: valueToNode(t[k]),
			}
		}
		return obj
	}
	panic(fmt.Sprintf("jsonToNode: unexpected %T", v))
}
