package client_test

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os/exec"
	"strconv"
	"strings"
	"testing"
)

// TestExportsNothingInternal: what this package exports (its functions,
// methods, types and variables) is made of the standard library and
// package api alone, so a program outside this module can use all of it;
// and api itself links nothing of the module but api.
func TestExportsNothingInternal(t *testing.T) {
	fset := token.NewFileSet()
	pkgs, err := parser.ParseDir(fset, ".", func(fi fs.FileInfo) bool {
		return !strings.HasSuffix(fi.Name(), "_test.go")
	}, 0)
	if err != nil {
		t.Fatal(err)
	}
	checked := 0
	for _, p := range pkgs {
		for name, f := range p.Files {
			internal := map[string]string{} // local name → import path
			for _, imp := range f.Imports {
				path, _ := strconv.Unquote(imp.Path.Value)
				if strings.Contains(path, "/internal/") || strings.HasSuffix(path, "/internal") {
					local := path[strings.LastIndex(path, "/")+1:]
					if imp.Name != nil {
						local = imp.Name.Name
					}
					internal[local] = path
				}
			}
			for _, d := range f.Decls {
				var nodes []ast.Node
				switch d := d.(type) {
				case *ast.FuncDecl:
					if d.Name.IsExported() {
						nodes = append(nodes, d.Type)
					}
				case *ast.GenDecl:
					for _, s := range d.Specs {
						switch s := s.(type) {
						case *ast.TypeSpec:
							if s.Name.IsExported() {
								nodes = append(nodes, s.Type)
							}
						case *ast.ValueSpec:
							for _, n := range s.Names {
								if n.IsExported() && s.Type != nil {
									nodes = append(nodes, s.Type)
								}
							}
						}
					}
				}
				for _, n := range nodes {
					checked++
					ast.Inspect(n, func(x ast.Node) bool {
						if sel, ok := x.(*ast.SelectorExpr); ok {
							if id, ok := sel.X.(*ast.Ident); ok && internal[id.Name] != "" {
								t.Errorf("%s: an exported declaration uses %s.%s (%s)", name, id.Name, sel.Sel.Name, internal[id.Name])
							}
						}
						return true
					})
				}
			}
		}
	}
	if checked < 50 {
		t.Fatalf("checked only %d exported declarations", checked)
	}
	out, err := exec.Command("go", "list", "-deps", "github.com/bangerdev/banger/api").Output()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range strings.Fields(string(out)) {
		if strings.HasPrefix(p, "github.com/bangerdev/banger/") && p != "github.com/bangerdev/banger/api" {
			t.Errorf("package api links %s", p)
		}
	}
}
