// Package logging builds the service's slog.Logger: JSON or text, a level, the request id (or any other
// attribute put in the context with With) on every line logged with a context, and e-mail addresses and
// phone numbers masked in every line above debug.
package logging

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"regexp"
	"strings"
)

// New returns a logger writing to w. format is "json" or "text"; level is debug, info, warn or error.
func New(w io.Writer, format, level string) (*slog.Logger, error) {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("log level %q: want debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: lvl}
	var h slog.Handler
	switch strings.ToLower(format) {
	case "json":
		h = slog.NewJSONHandler(w, opts)
	case "text", "":
		h = slog.NewTextHandler(w, opts)
	default:
		return nil, fmt.Errorf("log format %q: want json or text", format)
	}
	return slog.New(&handler{next: h}), nil
}

type ctxKey struct{}

// With returns a context whose log lines carry attrs (for example the request id).
func With(ctx context.Context, attrs ...slog.Attr) context.Context {
	prev, _ := ctx.Value(ctxKey{}).([]slog.Attr)
	all := make([]slog.Attr, 0, len(prev)+len(attrs))
	all = append(append(all, prev...), attrs...)
	return context.WithValue(ctx, ctxKey{}, all)
}

type handler struct{ next slog.Handler }

func (h *handler) Enabled(ctx context.Context, l slog.Level) bool { return h.next.Enabled(ctx, l) }

func (h *handler) Handle(ctx context.Context, r slog.Record) error {
	attrs, _ := ctx.Value(ctxKey{}).([]slog.Attr)
	if r.Level > slog.LevelDebug {
		masked := slog.NewRecord(r.Time, r.Level, Redact(r.Message), r.PC)
		r.Attrs(func(a slog.Attr) bool {
			masked.AddAttrs(redactAttr(a))
			return true
		})
		r = masked
	}
	r.AddAttrs(attrs...)
	return h.next.Handle(ctx, r)
}

func (h *handler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return &handler{next: h.next.WithAttrs(attrs)}
}

func (h *handler) WithGroup(name string) slog.Handler { return &handler{next: h.next.WithGroup(name)} }

func redactAttr(a slog.Attr) slog.Attr {
	v := a.Value.Resolve()
	switch v.Kind() {
	case slog.KindString:
		return slog.String(a.Key, Redact(v.String()))
	case slog.KindGroup:
		group := v.Group()
		out := make([]any, len(group))
		for i, g := range group {
			out[i] = redactAttr(g)
		}
		return slog.Group(a.Key, out...)
	case slog.KindAny:
		if err, ok := v.Any().(error); ok {
			return slog.String(a.Key, Redact(err.Error()))
		}
		return slog.String(a.Key, Redact(fmt.Sprint(v.Any())))
	}
	return a
}

var (
	emailPattern = regexp.MustCompile(`[A-Za-z0-9._%+\-]+@[A-Za-z0-9.\-]+\.[A-Za-z]{2,}`)
	phonePattern = regexp.MustCompile(`\+[0-9][0-9 ()\-]{6,}[0-9]`)
)

// Redact masks e-mail addresses (keeping the domain) and international phone numbers (keeping the last two
// digits) in s.
func Redact(s string) string {
	if strings.IndexByte(s, '@') >= 0 {
		s = emailPattern.ReplaceAllStringFunc(s, func(m string) string {
			at := strings.LastIndexByte(m, '@')
			return "***" + m[at:]
		})
	}
	if strings.IndexByte(s, '+') >= 0 {
		s = phonePattern.ReplaceAllStringFunc(s, func(m string) string {
			return "+***" + m[len(m)-2:]
		})
	}
	return s
}
