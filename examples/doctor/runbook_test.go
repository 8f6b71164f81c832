package main

import (
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// runbookSection is the runbook's section on the doctor.
func runbookSection(t *testing.T) string {
	t.Helper()
	text, err := os.ReadFile("../RUNBOOK.md")
	require.NoError(t, err)
	_, after, ok := strings.Cut(string(text), "\n## Before an incident: the doctor\n")
	require.True(t, ok, "the runbook has no doctor section")
	section, _, _ := strings.Cut(after, "\n## ")
	return section
}

// The runbook's doctor commands are valid, and the tests it names exist.
func TestRunbookSection(t *testing.T) {
	section := runbookSection(t)
	inCode, commands := false, 0
	for line := range strings.Lines(section) {
		line = strings.TrimSpace(line)
		switch {
		case strings.HasPrefix(line, "```"):
			inCode = !inCode
		case inCode && strings.HasPrefix(line, "doctor "):
			cmd, _, _ := strings.Cut(line, "#")
			_, err := parseFlags(strings.Fields(cmd)[1:], io.Discard)
			assert.NoError(t, err, "runbook command %q", line)
			commands++
		}
	}
	assert.Positive(t, commands, "the section shows how to run the doctor")

	files, err := filepath.Glob("*_test.go")
	require.NoError(t, err)
	var tests strings.Builder
	for _, f := range files {
		b, err := os.ReadFile(f)
		require.NoError(t, err)
		tests.Write(b)
	}
	for _, name := range regexp.MustCompile("`(Test[A-Za-z]+)`").FindAllStringSubmatch(section, -1) {
		assert.Contains(t, tests.String(), "func "+name[1]+"(", "the runbook names a test that does not exist")
	}
}
