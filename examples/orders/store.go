package main

import (
	"context"
	"database/sql"
	"fmt"
	"net/url"

	_ "modernc.org/sqlite" // pure Go SQLite, no cgo
)

// order is one row of the orders table.
type order struct {
	ID   string `json:"id"`
	Item string `json:"item"`
	Qty  int    `json:"qty"`
}

// store keeps orders in SQLite. WAL mode and a busy timeout let two
// generations of the server use the file at once during a handover: the
// old one finishing its writes while the new one starts its own.
type store struct {
	db *sql.DB
}

func openStore(path string) (*store, error) {
	q := url.Values{}
	q.Add("_pragma", "journal_mode(WAL)")
	q.Add("_pragma", "busy_timeout(10000)")
	q.Add("_pragma", "synchronous(NORMAL)")
	db, err := sql.Open("sqlite", "file:"+path+"?"+q.Encode())
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	const schema = `CREATE TABLE IF NOT EXISTS orders (
		id         TEXT PRIMARY KEY,
		item       TEXT NOT NULL,
		qty        INTEGER NOT NULL,
		created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
	)`
	if _, err := db.Exec(schema); err != nil {
		db.Close()
		return nil, fmt.Errorf("create schema in %s: %w", path, err)
	}
	return &store{db: db}, nil
}

// insert writes a batch in one transaction. INSERT OR IGNORE makes it
// idempotent, so a retried batch and a repeated id give one row each.
func (s *store) insert(ctx context.Context, batch []order) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	stmt, err := tx.PrepareContext(ctx, `INSERT OR IGNORE INTO orders (id, item, qty) VALUES (?, ?, ?)`)
	if err != nil {
		return err
	}
	defer stmt.Close()
	for _, o := range batch {
		if _, err := stmt.ExecContext(ctx, o.ID, o.Item, o.Qty); err != nil {
			return err
		}
	}
	return tx.Commit()
}

func (s *store) count(ctx context.Context) (int, error) {
	var n int
	err := s.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM orders`).Scan(&n)
	return n, err
}

func (s *store) close() error { return s.db.Close() }

// lastSeq returns the highest sequence number (rowid) written so far.
func (s *store) lastSeq(ctx context.Context) (int64, error) {
	var n int64
	err := s.db.QueryRowContext(ctx, `SELECT COALESCE(MAX(rowid), 0) FROM orders`).Scan(&n)
	return n, err
}

// after returns up to limit orders written after sequence number seq, in
// order: a seek in the rowid b-tree, cheap however long the history.
func (s *store) after(ctx context.Context, seq int64, limit int) ([]event, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT rowid, id FROM orders WHERE rowid > ? ORDER BY rowid LIMIT ?`, seq, limit)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var evs []event
	for rows.Next() {
		var n int64
		var id string
		if err := rows.Scan(&n, &id); err != nil {
			return nil, err
		}
		evs = append(evs, newEvent(n, id))
	}
	return evs, rows.Err()
}
