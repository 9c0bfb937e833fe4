package report

import (
	"context"
	"flag"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
	"github.com/stretchr/testify/require"
)

var updateScreenshot = flag.Bool("update-screenshot", false, "write the browser test's screenshot of report.html to docs/report.png")

// browser returns a chromedp context on a headless Chromium, or skips the
// test when no browser binary can be found.
func browser(t *testing.T) (context.Context, *[]string) {
	t.Helper()
	var bin string
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "headless-shell"} {
		if p, err := exec.LookPath(name); err == nil {
			bin = p
			break
		}
	}
	if bin == "" {
		t.Skip("no browser found (chromium, chromium-browser, google-chrome, headless-shell on PATH): .ci/run installs Debian's chromium")
	}
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(bin), chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU, chromedp.NoFirstRun,
		chromedp.Flag("disable-quic", true), chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true), chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(t.TempDir()), chromedp.WindowSize(1280, 900),
	}
	actx, cancelA := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelC := chromedp.NewContext(actx)
	ctx, cancelT := context.WithTimeout(ctx, 60*time.Second)
	t.Cleanup(func() { cancelT(); cancelC(); cancelA() })
	var mu sync.Mutex
	problems := &[]string{}
	require.NoError(t, chromedp.Listen(ctx, func(ev any) {
		mu.Lock()
		defer mu.Unlock()
		switch e := ev.(type) {
		case *runtime.EventConsoleAPICalled:
			if e.Type == runtime.ConsoleAPICalledTypeError || e.Type == runtime.ConsoleAPICalledTypeWarning || e.Type == runtime.ConsoleAPICalledTypeAssert {
				var args []string
				for _, a := range e.Args {
					args = append(args, string(a.Value))
				}
				*problems = append(*problems, fmt.Sprintf("console.%s: %s", e.Type, strings.Join(args, " ")))
			}
		case *runtime.EventExceptionThrown:
			*problems = append(*problems, fmt.Sprintf("exception: %s at %s:%d", e.ExceptionDetails.Text, e.ExceptionDetails.URL, e.ExceptionDetails.LineNumber))
		}
	}))
	return ctx, problems
}

// run runs a value action, failing the test on error.
func run[T any](t *testing.T, ctx context.Context, a chromedp.Action[T]) T {
	t.Helper()
	v, err := chromedp.Run(ctx, a)
	require.NoError(t, err)
	return v
}

func TestBrowserReport(t *testing.T) {
	ctx, problems := browser(t)
	b := New(Options{})
	scenario(b, "owner@shop-1.example")
	dir := t.TempDir()
	require.NoError(t, b.Report(time.Date(2026, 1, 8, 0, 0, 0, 0, time.UTC)).WriteDir(dir))

	require.NoError(t, chromedp.Do(ctx,
		chromedp.Navigate("file://"+filepath.Join(dir, "report.html")),
		chromedp.WaitVisible("#acct"),
	))
	tried := run(t, ctx, chromedp.Text("#s-tried"))
	logged := run(t, ctx, chromedp.Text("#s-logged"))
	rows := run(t, ctx, chromedp.Text("#s-rows"))
	takenOver := run(t, ctx, chromedp.Text("#acct tr.comp"))
	canvases := run(t, ctx, chromedp.Evaluate[string](`String(document.querySelectorAll('.chart canvas').length)`))
	png := run(t, ctx, chromedp.FullScreenshot(100))
	require.Equal(t, "33", tried)
	require.Equal(t, "2", logged)
	require.Equal(t, "5,000", rows)
	require.Contains(t, takenOver, "owner@shop-1.example")
	require.Contains(t, takenOver, "true")
	require.Equal(t, "2", canvases, "uPlot drew a timeline per incident")

	// The filter hides rows that do not match.
	run(t, ctx, chromedp.Evaluate[string](`(function(){var f=document.getElementById('filter');f.value='victim';f.dispatchEvent(new Event('input'));return ''})()`))
	shown := run(t, ctx, chromedp.Evaluate[string](`String(Array.from(document.querySelectorAll('#acct tbody tr')).filter(r => !r.hidden).length)`))
	require.Equal(t, "1", shown)
	require.Empty(t, *problems)

	if *updateScreenshot {
		require.NoError(t, os.WriteFile(filepath.Join("..", "..", "docs", "report.png"), png, 0o644))
	}
}

func TestBrowserLivePage(t *testing.T) {
	ctx, problems := browser(t)
	const hostile = `<img src=x onerror=alert(1)>`
	l := NewLive(LiveConfig{}, nil)
	scenario(&liveFeed{l}, hostile)
	mux := http.NewServeMux()
	l.Register(mux)
	srv := httptest.NewServer(mux)
	defer srv.Close()

	require.NoError(t, chromedp.Do(ctx, chromedp.Navigate(srv.URL+"/incidents"), chromedp.WaitVisible("#acct")))
	tried := run(t, ctx, chromedp.Text("#s-tried"))
	takenOver := run(t, ctx, chromedp.Text("#acct tr.comp"))
	// Follow the taken-over account's finding link.
	require.NoError(t, chromedp.Do(ctx, chromedp.Click(`#acct tr.comp a`), chromedp.WaitVisible("#account")))
	title := run(t, ctx, chromedp.Text("#account"))
	require.Equal(t, "33", tried)
	require.Contains(t, takenOver, hostile, "shown as text, not run")
	require.Contains(t, title, hostile)
	require.Empty(t, *problems)
}
