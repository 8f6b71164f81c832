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
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
)

func main() {
	verbose := flag.Bool("v", false, "list the identifiers")
	since := flag.String("since", "", "also list the names added and removed since this git revision")
	flag.Parse()
	status := 0
	var old string
	if *since != "" {
		var err error
		if old, err = checkout(*since, flag.Args()); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		defer os.RemoveAll(old)
	}
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
		if old != "" {
			oi, om, err := count(filepath.Join(old, dir))
			if err != nil {
				fmt.Fprintln(os.Stderr, err)
				status = 1
				continue
			}
			was, now := append(oi, om...), append(idents, methods...)
			fmt.Printf("  at %s: %d; removed %d: %s\n  added %d: %s\n", *since, len(was),
				len(minus(was, now)), strings.Join(minus(was, now), " "), len(minus(now, was)), strings.Join(minus(now, was), " "))
		}
	}
	if old != "" {
		os.RemoveAll(old)
	}
	os.Exit(status)
}

// checkout writes the directories dirs as they were at rev into a new
// temporary directory.
func checkout(rev string, dirs []string) (string, error) {
	tmp, err := os.MkdirTemp("", "apisurface-")
	if err != nil {
		return "", err
	}
	cmd := exec.Command("sh", append([]string{"-c", `git archive "$0" -- "$@" | tar -x -C "$TMP"`, rev}, dirs...)...)
	cmd.Env = append(os.Environ(), "TMP="+tmp)
	if out, err := cmd.CombinedOutput(); err != nil {
		os.RemoveAll(tmp)
		return "", fmt.Errorf("git archive %s: %v: %s", rev, err, out)
	}
	return tmp, nil
}

// minus is the names of a not in b.
func minus(a, b []string) []string {
	var out []string
	for _, n := range a {
		if !slices.Contains(b, n) {
			out = append(out, n)
		}
	}
	return out
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
