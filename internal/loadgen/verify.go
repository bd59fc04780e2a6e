package loadgen

import (
	"database/sql"
	"fmt"
	"net/url"

	_ "modernc.org/sqlite"
)

// MissingOrders returns the ids of acked that have no row in the orders
// table of the SQLite database at path: acknowledged writes that were lost.
func MissingOrders(path string, acked []string) ([]string, error) {
	q := url.Values{}
	q.Add("_pragma", "busy_timeout(10000)")
	q.Add("mode", "ro")
	db, err := sql.Open("sqlite", "file:"+path+"?"+q.Encode())
	if err != nil {
		return nil, err
	}
	defer db.Close()
	rows, err := db.Query(`SELECT id FROM orders`)
	if err != nil {
		return nil, fmt.Errorf("read orders from %s: %w", path, err)
	}
	defer rows.Close()
	have := make(map[string]bool, len(acked))
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return nil, err
		}
		have[id] = true
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	var missing []string
	for _, id := range acked {
		if !have[id] {
			missing = append(missing, id)
		}
	}
	return missing, nil
}
