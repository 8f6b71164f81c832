// Command apisurface counts the exported API of packages: exported
// top-level identifiers (types, funcs, vars, consts) and the exported
// methods of exported types, test files excluded. It reads source only,
// so it needs no build:
//
//	go run ./internal/cmd/apisurface reflector events spawner
package main

import (
	"flag"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"sort"
	"strings"
)

func main() {
	verbose := flag.Bool("v", false, "list the identifiers")
	flag.Parse()
	status := 0
	for _, dir := range flag.Args() {
		idents, methods, err := count(dir)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			status = 1
			continue
		}
		fmt.Printf("%-12s identifiers %3d  methods %3d  total %3d\n", dir, len(idents), len(methods), len(idents)+len(methods))
		if *verbose {
			fmt.Printf("  %s\n  %s\n", strings.Join(idents, " "), strings.Join(methods, " "))
		}
	}
	os.Exit(status)
}

func count(dir string) (idents, methods []string, err error) {
	fset := token.NewFileSet()
	pkgs, err := parser.ParseDir(fset, dir, func(fi os.FileInfo) bool { return !strings.HasSuffix(fi.Name(), "_test.go") }, 0)
	if err != nil {
		return nil, nil, err
	}
	for _, pkg := range pkgs {
		for _, f := range pkg.Files {
			for _, d := range f.Decls {
				switch d := d.(type) {
				case *ast.FuncDecl:
					if !d.Name.IsExported() {
						continue
					}
					if d.Recv == nil {
						idents = append(idents, d.Name.Name)
					} else if recv := recvType(d.Recv.List[0].Type); ast.IsExported(recv) {
						methods = append(methods, recv+"."+d.Name.Name)
					}
				case *ast.GenDecl:
					for _, s := range d.Specs {
						switch s := s.(type) {
						case *ast.TypeSpec:
							if s.Name.IsExported() {
								idents = append(idents, s.Name.Name)
								// Methods of exported interfaces are API too.
								if it, ok := s.Type.(*ast.InterfaceType); ok {
									for _, m := range it.Methods.List {
										for _, n := range m.Names {
											if n.IsExported() {
												methods = append(methods, s.Name.Name+"."+n.Name)
											}
										}
									}
								}
							}
						case *ast.ValueSpec:
							for _, n := range s.Names {
								if n.IsExported() {
									idents = append(idents, n.Name)
								}
							}
						}
					}
				}
			}
		}
	}
	sort.Strings(idents)
	sort.Strings(methods)
	return idents, methods, nil
}

func recvType(e ast.Expr) string {
	for {
		switch t := e.(type) {
		case *ast.StarExpr:
			e = t.X
		case *ast.IndexExpr:
			e = t.X
		case *ast.IndexListExpr:
			e = t.X
		case *ast.Ident:
			return t.Name
		default:
			return ""
		}
	}
}
