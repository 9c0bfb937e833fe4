// Command shopguard notices, within seconds, that someone other than a
// shop's owner is inside that shop's admin panel. It reads the platform's
// admin audit log from Kafka (run, demo) or from files (replay), and raises
// findings (SPEC §2) for impossible travel, brute force, credential
// stuffing, account takeover and bulk exports.
//
// This package only parses flags and configuration and wires ingest, detect
// and alert together; it holds no detection logic.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/debug"
	"sort"
	"strings"
	"syscall"
)

// Exit statuses (SPEC §4).
const (
	exitOK      = 0
	exitRuntime = 1
	exitUsage   = 2
)

// env is what a subcommand may touch of the process, so tests can run Main
// in-process.
type env struct {
	stdin          io.Reader
	stdout, stderr io.Writer
}

type command struct {
	summary string
	run     func(ctx context.Context, e env, args []string) int
}

func commands() map[string]command {
	return map[string]command{
		"replay":   {"read JSONL audit logs (files, stdin or a Kafka topic range) and write findings", runReplay},
		"run":      {"the always-on Kafka consumer: Kafka in, sinks out, /metrics", runRun},
		"demo":     {"everything on one machine: embedded broker, generator, detector, metrics", runDemo},
		"generate": {"write synthetic admin traffic with labelled attacks as JSONL", runGenerate},
		"eval":     {"precision and recall of findings against the generator's labels", runEval},
		"bench":    {"replay a generated 1,000,000-event file next to a naive decode loop and print the table", runBench},
		"version":  {"print the version", runVersion},
	}
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := Main(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// Main runs the shopguard command line and returns the exit status.
func Main(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	e := env{stdin: stdin, stdout: stdout, stderr: stderr}
	cmds := commands()
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		usage(stderr, cmds)
		if len(args) == 0 {
			return exitUsage
		}
		return exitOK
	}
	c, ok := cmds[args[0]]
	if !ok {
		fmt.Fprintf(stderr, "shopguard: unknown command %q\n\n", args[0])
		usage(stderr, cmds)
		return exitUsage
	}
	return c.run(ctx, e, args[1:])
}

func usage(w io.Writer, cmds map[string]command) {
	names := make([]string, 0, len(cmds))
	for n := range cmds {
		names = append(names, n)
	}
	sort.Strings(names)
	fmt.Fprintln(w, "usage: shopguard <command> [flags]\n\ncommands:")
	for _, n := range names {
		fmt.Fprintf(w, "  %-9s %s\n", n, cmds[n].summary)
	}
	fmt.Fprintln(w, "\nRun 'shopguard <command> --help' for a command's flags.")
}

// parseFlags parses args into fs. It returns the exit status to return
// right away (help: 0, a bad flag: 2), or -1 to go on.
func parseFlags(fs *flag.FlagSet, e env, args []string) int {
	fs.SetOutput(e.stderr)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		return exitUsage
	}
	return -1
}

// usageError prints a usage problem naming what was wrong and returns 2.
func usageError(e env, cmd string, format string, args ...any) int {
	fmt.Fprintf(e.stderr, "shopguard %s: %s\n", cmd, fmt.Sprintf(format, args...))
	return exitUsage
}

// version is set at build time with -ldflags "-X main.version=…"; otherwise
// the module version or VCS revision is used.
var version = ""

func buildVersion() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok {
		if bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			return bi.Main.Version
		}
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" {
				return strings.TrimSpace(s.Value)
			}
		}
	}
	return "devel"
}

func runVersion(_ context.Context, e env, _ []string) int {
	fmt.Fprintln(e.stdout, "shopguard", buildVersion())
	return exitOK
}
