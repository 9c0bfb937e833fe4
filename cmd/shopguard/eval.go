package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"slices"

	"github.com/shopguard/shopguard"
	"github.com/shopguard/shopguard/ingest/generate"
)

const evalUsage = `usage: shopguard eval --labels LABELS FINDINGS.jsonl

Scores findings (what 'shopguard replay' wrote) against the ground truth
'shopguard generate --labels' wrote: per rule, how many findings match an
attack (precision) and how many attacks were found (recall).

flags:
`

func runEval(_ context.Context, e env, args []string) int {
	var labels string
	fs := flag.NewFlagSet("eval", flag.ContinueOnError)
	fs.Usage = func() { fmt.Fprint(e.stderr, evalUsage); fs.PrintDefaults() }
	fs.StringVar(&labels, "labels", "", "the generator's ground truth (JSONL `file`)")
	if code := parseFlags(fs, e, args); code >= 0 {
		return code
	}
	if labels == "" {
		return usageError(e, "eval", "--labels is required")
	}
	if fs.NArg() != 1 {
		return usageError(e, "eval", "name exactly one findings file (- for standard input)")
	}
	lf, err := os.Open(labels)
	if err != nil {
		return usageError(e, "eval", "--labels: %v", err)
	}
	defer lf.Close()
	ls, err := generate.ReadLabels(lf)
	if err != nil {
		return usageError(e, "eval", "--labels %s: %v", labels, err)
	}
	in := e.stdin
	if name := fs.Arg(0); name != "-" {
		f, err := os.Open(name)
		if err != nil {
			return usageError(e, "eval", "%v", err)
		}
		defer f.Close()
		in = f
	}
	findings, err := generate.ReadFindings(in)
	if err != nil {
		return usageError(e, "eval", "%s: %v", fs.Arg(0), err)
	}
	// A finding may be in the file more than once: run re-sends the
	// findings after its last commit or checkpoint when restarted, and the
	// file sink (and replay --out) appends. Ids are deterministic, so each
	// counts once; a re-sent finding is not a false positive.
	seen := make(map[string]bool, len(findings))
	findings = slices.DeleteFunc(findings, func(f shopguard.Finding) bool {
		dup := seen[f.ID]
		seen[f.ID] = true
		return dup
	})
	if err := generate.Evaluate(ls, findings).WriteTable(e.stdout); err != nil {
		fmt.Fprintln(e.stderr, "shopguard eval:", err)
		return exitRuntime
	}
	return exitOK
}
