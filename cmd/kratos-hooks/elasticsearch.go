package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/kratos-hooks/kratos-hooks/search"
)

// ElasticsearchConfig is where the search projection writes. With ELASTICSEARCH_URL unset the projection is
// off: profiles are still kept in Postgres, and /admin/profiles answers 404.
type ElasticsearchConfig struct {
	ElasticsearchURLs     []string      `env:"ELASTICSEARCH_URL" envSeparator:","`
	ElasticsearchIndex    string        `env:"ELASTICSEARCH_INDEX" envDefault:"profiles"`
	ElasticsearchUsername string        `env:"ELASTICSEARCH_USERNAME"`
	ElasticsearchPassword string        `env:"ELASTICSEARCH_PASSWORD"`
	ElasticsearchAPIKey   string        `env:"ELASTICSEARCH_API_KEY"`
	ElasticsearchCACert   string        `env:"ELASTICSEARCH_CA_CERT"`
	ElasticsearchTimeout  time.Duration `env:"ELASTICSEARCH_TIMEOUT" envDefault:"30s"`
}

// IndexConfig tunes the index workers of `serve`.
type IndexConfig struct {
	// IndexWorkers caps the index jobs in flight, and so how many documents can share one bulk request. A
	// waiting job costs a goroutine, not a connection: it holds one only to read its row.
	IndexWorkers int `env:"INDEX_WORKERS" envDefault:"1000"`
	// IndexFlushInterval is how long a document waits for others before its bulk request leaves. Under load
	// requests leave sooner, when full (256 KiB, search.WriterOpts.FlushBytes); the interval sets the batch size when
	// changes trickle in: at 200 changes/s, 1 s makes bulk requests of 200 documents.
	IndexFlushInterval time.Duration `env:"INDEX_FLUSH_INTERVAL" envDefault:"1s"`
}

func (c *ElasticsearchConfig) enabled() bool { return len(c.ElasticsearchURLs) > 0 }

// validate checks the variables without contacting the cluster.
func (c *ElasticsearchConfig) validate() []error {
	var errs []error
	urls := c.ElasticsearchURLs[:0]
	for _, u := range c.ElasticsearchURLs {
		if u = strings.TrimSpace(u); u != "" {
			urls = append(urls, u)
		}
	}
	c.ElasticsearchURLs = urls
	if !c.enabled() {
		return nil
	}
	for i, raw := range c.ElasticsearchURLs {
		u, err := url.Parse(raw)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			// Not quoted: the address may carry a password.
			errs = append(errs, fmt.Errorf("ELASTICSEARCH_URL: address %d of %d is not an http(s)://host:port URL", i+1, len(c.ElasticsearchURLs)))
		}
	}
	if err := search.ValidateAlias(c.ElasticsearchIndex); err != nil {
		errs = append(errs, fmt.Errorf("ELASTICSEARCH_INDEX: %w", err))
	}
	if c.ElasticsearchAPIKey != "" && (c.ElasticsearchUsername != "" || c.ElasticsearchPassword != "") {
		errs = append(errs, errors.New("ELASTICSEARCH_API_KEY and ELASTICSEARCH_USERNAME/_PASSWORD are both set: use one"))
	}
	if (c.ElasticsearchUsername == "") != (c.ElasticsearchPassword == "") {
		errs = append(errs, errors.New("ELASTICSEARCH_USERNAME and ELASTICSEARCH_PASSWORD go together: set both or neither"))
	}
	if c.ElasticsearchTimeout <= 0 {
		errs = append(errs, fmt.Errorf("ELASTICSEARCH_TIMEOUT must be positive, got %s", c.ElasticsearchTimeout))
	}
	return errs
}

// open returns the profiles index, or nil when the projection is off. It does not contact the cluster.
func (c *ElasticsearchConfig) open() (*search.Index, error) {
	if errs := c.validate(); len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	if !c.enabled() {
		return nil, nil
	}
	cfg := search.Config{
		Addresses:      c.ElasticsearchURLs,
		Username:       c.ElasticsearchUsername,
		Password:       c.ElasticsearchPassword,
		APIKey:         c.ElasticsearchAPIKey,
		Alias:          c.ElasticsearchIndex,
		RequestTimeout: c.ElasticsearchTimeout,
	}
	if c.ElasticsearchCACert != "" {
		pem, err := os.ReadFile(c.ElasticsearchCACert)
		if err != nil {
			return nil, fmt.Errorf("ELASTICSEARCH_CA_CERT: %w", err)
		}
		cfg.CACert = pem
	}
	ix, err := search.New(cfg)
	if err != nil {
		return nil, fmt.Errorf("ELASTICSEARCH_URL: %w", err)
	}
	return ix, nil
}

// ensureIndex creates the index and its alias if they are missing, and says what it found. A mapping older
// than this code's is reported, not changed: replacing it is `kratos-hooks reindex`'s job.
func ensureIndex(ctx context.Context, ix *search.Index) (string, error) {
	res, err := ix.Ensure(ctx)
	if err != nil {
		return "", fmt.Errorf("search index %s: %w", ix.Alias(), err)
	}
	msg := fmt.Sprintf("search index %s is up to date (alias %s)", res.Index, ix.Alias())
	if res.Created {
		msg = fmt.Sprintf("created search index %s behind alias %s", res.Index, ix.Alias())
	}
	if res.MappingVersion < search.MappingVersion {
		msg += fmt.Sprintf("; its mapping is version %d, this release has %d: run `kratos-hooks reindex`", res.MappingVersion, search.MappingVersion)
	}
	return msg, nil
}

// ensureIndexAtStart is ensureIndex for `serve`: an unreachable cluster is logged, not fatal, since an index
// outage only delays indexing. The index workers make the index themselves once the cluster answers.
func ensureIndexAtStart(ctx context.Context, ix *search.Index, logger *slog.Logger) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	msg, err := ensureIndex(ctx, ix)
	if err != nil {
		logger.WarnContext(ctx, "elasticsearch not ready at start; index jobs will wait for it", "error", err)
		return
	}
	logger.InfoContext(ctx, msg)
}
