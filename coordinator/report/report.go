// Package report makes the steering group's meeting report: the dashboard's pages rendered
// one after the other by a headless Chromium from the coordinator's released results, saved
// as PDF or as one self-contained HTML file. The figures are the dashboard's own: the same
// page code draws them from the same API.
package report

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
)

// Options say what to render and where.
type Options struct {
	Coordinator string      // the coordinator's URL
	Token       string      // a bearer token that may read results (steering group, evaluator)
	TLS         *tls.Config // for an HTTPS coordinator with a private CA
	Period      string      // "project", a year ("2021") or FROM..TO
	Lang        string      // sv or en
	Out         string      // FILE.pdf or FILE.html
	Chromium    string      // the browser; found on PATH when empty
	Timeout     time.Duration
}

// ErrNoChromium is returned when no Chromium can be found.
var ErrNoChromium = errors.New("no Chromium found: install it (apt-get install chromium) or give --chromium PATH")

// FindChromium returns the path of a Chromium or Chrome binary.
func FindChromium() (string, error) {
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable"} {
		if p, err := exec.LookPath(name); err == nil {
			return p, nil
		}
	}
	return "", ErrNoChromium
}

// Render writes the report to o.Out.
func Render(ctx context.Context, o Options) error {
	ext := strings.ToLower(filepath.Ext(o.Out))
	if ext != ".pdf" && ext != ".html" {
		return fmt.Errorf("--out %q: expected a .pdf or .html file", o.Out)
	}
	if o.Lang != "sv" && o.Lang != "en" {
		return fmt.Errorf("--lang %q: expected sv or en", o.Lang)
	}
	if o.Timeout <= 0 {
		o.Timeout = 2 * time.Minute
	}
	if o.Chromium == "" {
		p, err := FindChromium()
		if err != nil {
			return err
		}
		o.Chromium = p
	}
	target, err := url.Parse(o.Coordinator)
	if err != nil || (target.Scheme != "http" && target.Scheme != "https") || target.Host == "" {
		return fmt.Errorf("coordinator %q: expected an http(s) URL", o.Coordinator)
	}
	// The browser talks to a loopback proxy that lives only for this report; the proxy talks
	// to the coordinator with this process's TLS settings, so a private CA needs no browser
	// configuration and the browser never learns to skip certificate checks.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	proxy := httputil.NewSingleHostReverseProxy(target)
	proxy.Transport = &http.Transport{TLSClientConfig: o.TLS, Proxy: nil}
	srv := &http.Server{Handler: proxy, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	defer srv.Close()

	dir, err := os.MkdirTemp("", "samsyn-report-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	flags := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(o.Chromium), chromedp.DisableGPU,
		chromedp.Flag("headless", true), chromedp.Flag("no-first-run", true), chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true), chromedp.Flag("disable-sync", true), chromedp.UserDataDir(dir),
		chromedp.WindowSize(1100, 1400))
	if os.Geteuid() == 0 {
		flags = append(flags, chromedp.NoSandbox) // Chromium refuses to run as root with its sandbox
	}
	ctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	actx, cancelAlloc := chromedp.NewExecAllocator(ctx, flags...)
	defer cancelAlloc()
	bctx, cancelBrowser := chromedp.NewContext(actx)
	defer cancelBrowser()

	period := o.Period
	if period == "" {
		period = "project"
	}
	u := fmt.Sprintf("http://%s/dashboard/report.html?period=%s&lang=%s#token=%s", ln.Addr(), url.QueryEscape(period), o.Lang, url.QueryEscape(o.Token))
	var problem string
	if err := chromedp.Run(bctx, chromedp.Navigate(u), chromedp.WaitVisible(`body[data-ready="1"]`, chromedp.ByQuery),
		chromedp.Evaluate(`(document.querySelector('[data-error]') || {}).textContent || ""`, &problem)); err != nil {
		return fmt.Errorf("render the report: %w", err)
	}
	if problem != "" {
		return fmt.Errorf("the report could not be made: %s", problem)
	}
	var out []byte
	switch ext {
	case ".pdf":
		err = chromedp.Run(bctx, chromedp.ActionFunc(func(ctx context.Context) error {
			var err error
			out, _, err = page.PrintToPDF().WithPrintBackground(true).WithPaperWidth(8.27).WithPaperHeight(11.69).
				WithMarginTop(0.5).WithMarginBottom(0.5).WithMarginLeft(0.45).WithMarginRight(0.45).
				WithDisplayHeaderFooter(true).WithHeaderTemplate(`<span></span>`).
				WithFooterTemplate(`<div style="font-size:8px;width:100%;text-align:center;color:#666"><span class="title"></span> · <span class="pageNumber"></span>/<span class="totalPages"></span></div>`).Do(ctx)
			return err
		}))
	case ".html":
		var html string
		err = chromedp.Run(bctx, chromedp.Evaluate(`samsynSnapshot()`, &html, func(p *runtime.EvaluateParams) *runtime.EvaluateParams { return p.WithAwaitPromise(true) }))
		out = []byte(html)
	}
	if err != nil {
		return fmt.Errorf("write the report: %w", err)
	}
	return os.WriteFile(o.Out, out, 0o644)
}
