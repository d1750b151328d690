package jsonnet

import (
	"encoding/json"
	"fmt"
	"slices"

	gojsonnet "github.com/google/go-jsonnet"
	"github.com/google/go-jsonnet/ast"
)

// batchSource applies a mapping to every identity of a list in one evaluation. batchProgram puts the
// mapping's own program in place of the null: it is called with identity as a named argument, as Map passes
// it, or taken as it is when it is not a function (Jsonnet ignores top-level arguments then, and so does Map).
const batchSource = `local mapping = null;
[if std.isFunction(mapping) then mapping(identity=identity) else mapping for identity in ` + inputSource + `]`

// batchProgram is batchSource around the mapping's program, built once by NewMapper (evaluations only read
// it, as they read the mapping's own). It is parsed under the mapping's name, so that
// the mapping sees the std.thisFile it sees in Map, and its AST is the mapping's own (no second parse).
// A user's mapping cannot refer to the variable mapping: NewMapper's static analysis refuses unknown
// variables.
func (m *Mapper) batchProgram() (ast.Node, error) {
	node, err := gojsonnet.SnippetToAST(m.name, batchSource)
	if err != nil {
		return nil, err
	}
	local, ok := node.(*ast.Local)
	if !ok || len(local.Binds) != 1 || local.Binds[0].Variable != "mapping" {
		return nil, fmt.Errorf("batch program: unexpected AST %T", node)
	}
	local.Binds[0].Body = m.node
	// The interpreter evaluates a local's binds in an environment of the local's free variables only, which
	// the analysis of batchSource computed without the mapping: add the mapping's (std, $std: the only ones
	// a mapping can have).
	free := slices.Clone(local.FreeVariables())
	for _, v := range m.node.FreeVariables() {
		if !slices.Contains(free, v) {
			free = append(free, v)
		}
	}
	local.SetFreeVariables(free)
	return local, nil
}

// MapBatch maps many identities, as Map maps each of them: fields[i] and errs[i] are what Map returns for
// identitiesJSON[i]. It evaluates the mapping for all of them in one Jsonnet evaluation, which saves what an
// evaluation costs beyond the mapping itself (setting up the interpreter and its standard library, encoding
// and decoding the result). When that evaluation fails (an identity the mapping cannot take fails it for
// all), it maps them one by one, so that only the identities the mapping fails on get an error, the one Map
// gives. Like Map, it is safe for concurrent use.
func (m *Mapper) MapBatch(identitiesJSON [][]byte) (fields []Fields, errs []error) {
	fields = make([]Fields, len(identitiesJSON))
	errs = make([]error, len(identitiesJSON))
	if len(identitiesJSON) == 0 || !m.mapBatch(identitiesJSON, fields, errs) {
		for i, ident := range identitiesJSON {
			fields[i], errs[i] = m.Map(ident)
		}
	}
	return fields, errs
}

// mapBatch is the one evaluation. It returns false when that failed as a whole: fields and errs are then
// to be filled one by one.
func (m *Mapper) mapBatch(identitiesJSON [][]byte, fields []Fields, errs []error) bool {
	identities := make([]any, len(identitiesJSON))
	for i, ident := range identitiesJSON {
		var err error
		if identities[i], err = decodeIdentity(ident); err != nil {
			return false
		}
	}
	vm := m.vms.Get().(*vm)
	defer m.vms.Put(vm)
	// The VMs are shared with Map, which leaves its argument identity set: the batch program takes none.
	vm.TLAReset()
	out, err := vm.evaluate(m.batch, identities)
	if err != nil {
		return false
	}
	var results []json.RawMessage
	if err := json.Unmarshal([]byte(out), &results); err != nil || len(results) != len(identitiesJSON) {
		return false
	}
	for i, res := range results {
		fields[i], errs[i] = m.fields(res)
	}
	return true
}
