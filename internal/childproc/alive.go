package childproc

import (
	"os"
	"strconv"
	"strings"
)

// Alive reports whether process pid exists and is not a zombie (Linux:
// the state field of /proc/pid/stat). Tests use it to prove that a stop
// left no process behind.
func Alive(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	// The command name, in parentheses, may hold spaces: the state is the
	// first field after its closing parenthesis.
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
	return len(f) > 0 && f[0] != "Z"
}
