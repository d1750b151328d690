package main

import (
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"github.com/mattn/go-isatty"

	"github.com/kratos-hooks/kratos-hooks/reconcile"
)

// isTerminal reports whether w is a terminal (and not a file, a pipe or a log collector).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && (isatty.IsTerminal(f.Fd()) || isatty.IsCygwinTerminal(f.Fd()))
}

// progressLine keeps one status line at the bottom of a terminal. Whatever else is written through it (log
// lines) is written above the status line, which is then drawn again.
type progressLine struct {
	w io.Writer

	mu    sync.Mutex
	shown string
	drawn time.Time
}

// update draws the pass's progress, at most ten times a second.
func (p *progressLine) update(pr reconcile.Progress) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if time.Since(p.drawn) < 100*time.Millisecond {
		return
	}
	p.drawn = time.Now()
	p.shown = progressText(pr)
	fmt.Fprintf(p.w, "\r\x1b[K%s", p.shown)
}

func progressText(pr reconcile.Progress) string {
	rate := 0.0
	if s := pr.Elapsed.Seconds(); s > 0 {
		rate = float64(pr.Identities) / s
	}
	return fmt.Sprintf("reconcile: %d pages, %d identities, %.0f identities/s, %s",
		pr.Pages, pr.Identities, rate, pr.Elapsed.Round(time.Second))
}

// Write writes p above the status line.
func (p *progressLine) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.shown == "" {
		return p.w.Write(b)
	}
	if _, err := io.WriteString(p.w, "\r\x1b[K"); err != nil {
		return 0, err
	}
	n, err := p.w.Write(b)
	if err == nil {
		_, err = io.WriteString(p.w, p.shown)
	}
	return n, err
}

// clear removes the status line. A nil progressLine does nothing.
func (p *progressLine) clear() {
	if p == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.shown != "" {
		_, _ = io.WriteString(p.w, "\r\x1b[K")
		p.shown = ""
	}
}
