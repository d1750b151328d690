package reconcile

import (
	"bytes"
	"context"
	"fmt"

	"github.com/google/uuid"

	"github.com/kratos-hooks/kratos-hooks/kratos"
)

// page is one page of Kratos's identity list, with the id range it covers: every identity Kratos has whose
// id is in (after, through] is on this page. The first page has no lower bound and the last no upper bound,
// so together the pages cover the whole id space.
type page struct {
	identities []kratos.Identity
	after      *uuid.UUID // nil on the first page
	through    *uuid.UUID // nil on the last page
	last       bool
}

// pager reads Kratos's identity list one page ahead of its reader, so that the next page is on its way
// while the current one is compared with the database. At most two pages are held at once.
type pager struct {
	pages <-chan pageResult
	stop  context.CancelFunc
}

type pageResult struct {
	page page
	err  error
}

func newPager(ctx context.Context, client *kratos.Client, pageSize int) *pager {
	ctx, cancel := context.WithCancel(ctx)
	ch := make(chan pageResult, 1)
	go func() {
		defer close(ch)
		var after *uuid.UUID
		token := ""
		for {
			res, err := client.ListIdentities(ctx, kratos.ListOpts{PageSize: pageSize, PageToken: token})
			if err == nil {
				err = checkOrder(res.Identities, after)
			}
			if err == nil && res.NextPageToken != "" && len(res.Identities) == 0 {
				err = fmt.Errorf("kratos returned an empty page with a next page (token %s)", res.NextPageToken)
			}
			if err != nil {
				select {
				case ch <- pageResult{err: fmt.Errorf("list identities: %w", err)}:
				case <-ctx.Done():
				}
				return
			}
			p := page{identities: res.Identities, after: after, last: res.NextPageToken == ""}
			if !p.last {
				through := res.Identities[len(res.Identities)-1].ID
				if res.NextPageToken != through.String() {
					// The token is the page's last id (keyset paging by id); anything else would make the
					// ranges below wrong, and with them the orphan search.
					err := fmt.Errorf("list identities: next page token %s is not the last id of the page (%s)", res.NextPageToken, through)
					select {
					case ch <- pageResult{err: err}:
					case <-ctx.Done():
					}
					return
				}
				p.through = &through
			}
			select {
			case ch <- pageResult{page: p}:
			case <-ctx.Done():
				return
			}
			if p.last {
				return
			}
			after, token = p.through, res.NextPageToken
		}
	}()
	return &pager{pages: ch, stop: cancel}
}

// next returns the next page; ok is false after the last one.
func (p *pager) next(ctx context.Context) (pg page, ok bool, err error) {
	select {
	case res, open := <-p.pages:
		if !open {
			return page{}, false, nil
		}
		return res.page, res.err == nil, res.err
	case <-ctx.Done():
		return page{}, false, ctx.Err()
	}
}

func (p *pager) close() { p.stop() }

// checkOrder makes sure the identities come in strictly ascending id order, after the previous page. The
// orphan search relies on it: it takes the gaps between Kratos's ids as id ranges in Postgres's uuid order
// (byte order, the order Kratos's own database sorts by), and a pass that got the order wrong would take
// live identities for deleted ones.
func checkOrder(idents []kratos.Identity, after *uuid.UUID) error {
	prev := after
	for i := range idents {
		id := idents[i].ID
		if prev != nil && bytes.Compare(id[:], prev[:]) <= 0 {
			return fmt.Errorf("kratos listed identity %s after %s, not in ascending id order: deleted identities "+
				"cannot be told from live ones", id, *prev)
		}
		prev = &idents[i].ID
	}
	return nil
}
